"""Training at the feature level: precomputed frame embeddings instead of videos.

Two uses, one format:

- `tspo-edge train --features FILE.npz`: every row's `video` names an entry of the file (no video is
  read or indexed); with the lite answerer the rollouts are answered from the stored embeddings.
- event rows spliced from a bank of per-segment embeddings (photos and haystack), built per row
  from a seed: thousands of distinct rows seen about once each, with the span of the answer known
  (`Row.span`), so R_T rewards the frames inside it even on general rows.

The feature file (`save_features` / `load_features`): NumPy .npz with `names` (str[V]),
`offsets` (int64[V+1]), `times` (float64[N]), `x` (float16 or float32 [N, D]) and `encoder` (the
id of the encoder that made them; training refuses another).

The "right after A" row: haystack with photo A followed at once by photo B, and photo C elsewhere;
the question names A's scene, the answer is B's, A's and C's answers are among the options and
R_T is the share of chosen frames inside B's span. Per-frame similarity finds A; only an agent whose
event features carry what came before a frame can point at B.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tspo_edge.errors import DataError
from tspo_edge.questions import option_letters

from tspo_edge.train.data import Row
from tspo_edge.train.features import MemoryFeatures

FEATURES_FORMAT = "tspo-edge-features-1"


# ---- the feature file ------------------------------------------------------------------

def save_features(path: str | Path, table: dict[str, tuple[np.ndarray, np.ndarray]], *, encoder_id: str,
                  dtype=np.float16) -> Path:
    """Write {name: (times[T], x[T, D])} as one .npz (float16 by default: half the size)."""
    names = list(table)
    if not names:
        raise DataError(f"{path}: no features to write")
    lens = [len(table[n][0]) for n in names]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    times = np.concatenate([np.asarray(table[n][0], np.float64) for n in names])
    x = np.concatenate([np.asarray(table[n][1], np.float32) for n in names]).astype(dtype)
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, names=np.array(names), offsets=offsets, times=times, x=x,
                 encoder=np.array(encoder_id), format=np.array(FEATURES_FORMAT))
    return path


def load_features(path: str | Path, *, encoder_id: str | None = None) -> tuple[MemoryFeatures, str]:
    """Read a feature file; returns (features, encoder id). Errors name the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such feature file")
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z.get("format", "")) != FEATURES_FORMAT:
                raise DataError(f"{path}: not a tspo-edge feature file (expected format {FEATURES_FORMAT})")
            names, offsets, times, x = z["names"], z["offsets"], z["times"], z["x"]
            enc = str(z["encoder"])
    except DataError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path}: cannot read the feature file ({e})") from None
    if encoder_id is not None and enc != encoder_id:
        raise DataError(f"{path}: features were made by encoder {enc}, this run uses {encoder_id}")
    if x.ndim != 2 or len(offsets) != len(names) + 1 or offsets[-1] != len(x) or len(times) != len(x) \
            or np.any(np.diff(offsets) < 1):
        raise DataError(f"{path}: inconsistent arrays (names {len(names)}, offsets {len(offsets)}, "
                        f"times {len(times)}, x {x.shape})")
    x = x.astype(np.float32)
    table = {str(n): (times[a:b], x[a:b]) for n, a, b in zip(names, offsets[:-1], offsets[1:])}
    return MemoryFeatures(table), enc


# ---- rollouts answered from embeddings ---------------------------------------------------

class FeatureFrames:
    """A FrameSource whose "frames" are the stored embeddings at the asked times."""

    def __init__(self, features):
        self.features = features

    def read(self, video: str, times: np.ndarray) -> np.ndarray:
        t, x = self.features.features(video)
        idx = np.clip(np.searchsorted(t, np.asarray(times, np.float64) - 1e-6), 0, len(t) - 1)
        return x[idx]


class EmbeddedImages:
    """An encoder whose images are already embeddings: `encode_images` returns them; texts go to
    the real encoder (memoised). The lite answerer over it answers from stored features exactly as
    it would from the frames those features were computed from."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.id = encoder.id
        self.image_size = None
        self._texts: dict[str, np.ndarray] = {}

    def encode_images(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def encode_texts(self, texts) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if todo:
            for t, e in zip(todo, np.asarray(self.encoder.encode_texts(todo), dtype=np.float32)):
                self._texts[t] = e
        return np.stack([self._texts[t] for t in texts])


# ---- event rows spliced from a segment bank ----------------------------------------------

@dataclass(frozen=True)
class Scene:
    """What the rows say about a photo: its stem, its answer and distractors, and a noun phrase
    for "right after ..." questions."""

    name: str
    question: str
    scene: str
    answer: str
    distractors: tuple[str, ...]


@dataclass
class Bank:
    """Per-frame embeddings (1 frame a second) of rendered segments: `photos[name]` a list of
    renderings [n, D] of that photo, `haystack` a list of generated segments [n, D]."""

    photos: dict[str, list[np.ndarray]]
    haystack: list[np.ndarray]


@dataclass
class EventRow:
    row: Row
    times: np.ndarray
    x: np.ndarray
    spans: dict[str, tuple[float, float]]  # role (A, B, C, needle, other) -> [start, end) seconds
    sources: dict[str, str]                # role -> photo name
    kind: str                              # after | needle


def _slice(seg: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(seg) <= n:
        return seg[np.minimum(np.arange(n), len(seg) - 1)]
    a = int(rng.integers(0, len(seg) - n + 1))
    return seg[a:a + n]


def _haystack(bank: Bank, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    out, left = [], n
    while left > 0:
        d = min(left, int(rng.integers(10, 31)))
        if 0 < left - d < 5:
            d = left
        out.append(_slice(bank.haystack[int(rng.integers(len(bank.haystack)))], d, rng))
        left -= d
    return out


def _options(answer: str, distractors: list[str], rng: np.random.Generator) -> tuple[tuple[str, ...], str]:
    opts = [answer, *distractors]
    order = rng.permutation(len(opts))
    return tuple(opts[i] for i in order), option_letters(len(opts))[int(np.flatnonzero(order == 0)[0])]


def splice(bank: Bank, blocks: list[list[tuple[str, str, int]]], seconds: int,
           rng: np.random.Generator) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """Haystack of `seconds` frames with `blocks` (each a run of (role, photo, frames) played back
    to back) at random places, at least 5 s apart and from the ends. Returns x[T, D] and the spans."""
    lengths = [sum(d for _, _, d in b) for b in blocks]
    free = seconds - sum(lengths) - 5 * (len(blocks) + 1)
    if free < 0:
        raise ValueError(f"{seconds} s is too short for blocks of {lengths} s")
    gaps = np.diff(np.concatenate([[0], np.sort(rng.integers(0, free + 1, size=len(blocks))), [free]]))
    order = rng.permutation(len(blocks))
    parts: list[np.ndarray] = []
    spans: dict[str, tuple[float, float]] = {}
    t = 0
    for gap, bi in zip(gaps[:-1], order):
        parts += _haystack(bank, 5 + int(gap), rng)
        t += 5 + int(gap)
        for role, name, d in blocks[bi]:
            segs = bank.photos[name]
            parts.append(_slice(segs[int(rng.integers(len(segs)))], d, rng))
            spans[role] = (float(t), float(t + d))
            t += d
    parts += _haystack(bank, seconds - t, rng)
    x = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    return x, spans


def after_row(key: str, bank: Bank, scenes: dict[str, Scene], rng: np.random.Generator, *,
              seconds: int = 90, block: tuple[int, int] = (8, 14), needle: tuple[int, int] = (8, 20)) -> EventRow:
    """"What is shown right after A?": A then B at once, C elsewhere; answer B; R_T over B's span."""
    names = sorted(scenes)
    a, b, c = (names[j] for j in rng.choice(len(names), 3, replace=False))
    la, lb = (int(rng.integers(block[0], block[1] + 1)) for _ in range(2))
    lc = int(rng.integers(needle[0], needle[1] + 1))
    x, spans = splice(bank, [[("A", a, la), ("B", b, lb)], [("C", c, lc)]], seconds, rng)
    A, B, C = scenes[a], scenes[b], scenes[c]
    opts, letter = _options(B.answer, [A.answer, C.answer, B.distractors[int(rng.integers(len(B.distractors)))]], rng)
    row = Row(line=0, video=key, question=f"What is shown right after {A.scene}?", options=opts, answer=letter,
              kind="general", span=spans["B"])
    return EventRow(row, np.arange(len(x), dtype=np.float64), x, spans, {"A": a, "B": b, "C": c}, "after")


def needle_row(key: str, bank: Bank, scenes: dict[str, Scene], rng: np.random.Generator, *,
               seconds: int = 90, needle: tuple[int, int] = (8, 20)) -> EventRow:
    """A scene needle: two photos among haystack, the stem of one; R_T over its span."""
    names = sorted(scenes)
    p, o = (names[j] for j in rng.choice(len(names), 2, replace=False))
    lp, lo = (int(rng.integers(needle[0], needle[1] + 1)) for _ in range(2))
    x, spans = splice(bank, [[("needle", p, lp)], [("other", o, lo)]], seconds, rng)
    P = scenes[p]
    opts, letter = _options(P.answer, list(P.distractors), rng)
    row = Row(line=0, video=key, question=P.question, options=opts, answer=letter, kind="general",
              span=spans["needle"])
    return EventRow(row, np.arange(len(x), dtype=np.float64), x, spans, {"needle": p, "other": o}, "needle")


class EventRows:
    """`n` rows (a share `after` of them "right after A", the rest scene needles) drawn from the
    bank by (seed, row number): the row list for an Env and its FeatureSource in one.

    Features are built when first asked for and kept (a row is about 90 x D floats)."""

    def __init__(self, bank: Bank, scenes: dict[str, Scene], n: int, *, seed: int = 0, after: float = 2 / 3,
                 prefix: str = "event"):
        self.bank, self.scenes, self.seed = bank, scenes, seed
        self.items: list[EventRow] = []
        for i in range(n):
            rng = np.random.default_rng([seed, i, 0xE7])
            key = f"{prefix}/{seed}/{i:06d}"
            make = after_row if rng.random() < after else needle_row
            self.items.append(make(key, bank, scenes, rng))
        self.table = {e.row.video: (e.times, e.x) for e in self.items}

    @property
    def rows(self) -> list[Row]:
        return [e.row for e in self.items]

    def features(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        return self.table[video]
