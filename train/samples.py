"""Training samples assembled from stored features (the paper's dual-style data).

general   the row's video: its frames at the index rate (1 fps), at most 128, uniformly spread;
          a row with a `span` gets the mask of its frames inside it (R_T as on specific rows).
specific  1-4 clips of 50 frames of the row's video (each a sorted random subset of its
          frames) spliced among 12 clips of 50 frames from other videos (each uniformly
          spread over that video), clip order shuffled; the mask marks the row's frames.

A sample keeps, for each position, the source video and time, so the MLLM is shown the
chosen frames decoded from where they came from; nothing else is ever decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tspo_edge.train.data import Row
from tspo_edge.train.features import FeatureSource


@dataclass
class SampleSpec:
    """Sizes of the dual-style samples (the paper's values by default)."""

    max_frames: int = 128        # general rows: at most this many frames of the video
    clip_len: int = 50           # frames per clip (specific rows)
    own_clips: tuple[int, int] = (1, 4)   # inclusive range of the row's own clips
    other_clips: int = 12        # clips from other videos
    n_specific: int = 16         # frames each rollout chooses
    n_general: int = 8
    fixed_layout: bool = False   # toy: fixed distractors, own clip(s) in the middle


@dataclass
class Sample:
    row: Row
    x: np.ndarray          # float32[T, D]
    videos: list[str]      # distinct source videos
    src: np.ndarray        # int64[T]: index into `videos`
    times: np.ndarray      # float64[T]: time of the frame in its source video (s)
    timeline: np.ndarray   # float64[T]: time of the position in the sample as the MLLM is told it
    mask: np.ndarray | None  # bool[T] ground truth (specific rows)
    n: int                 # frames per rollout

    @property
    def T(self) -> int:
        return len(self.x)


def uniform_spread(T: int, k: int) -> np.ndarray:
    """k indices spread uniformly over [0, T-1] (endpoints included, repeats when k > T)."""
    return np.linspace(0, T - 1, k).round().astype(np.int64)


def general_frames(T: int, max_frames: int) -> np.ndarray:
    """The frames a general row uses: all of them, or max_frames uniformly spread."""
    return np.arange(T) if T <= max_frames else uniform_spread(T, max_frames)


def general_sample(row: Row, feats: FeatureSource, spec: SampleSpec) -> Sample:
    times, x = feats.features(row.video)
    keep = general_frames(len(x), spec.max_frames)
    t = times[keep]
    mask = None if row.span is None else (t >= row.span[0]) & (t < row.span[1])  # R_T over the known span
    return Sample(row=row, x=np.ascontiguousarray(x[keep], dtype=np.float32), videos=[row.video],
                  src=np.zeros(len(keep), dtype=np.int64), times=t, timeline=t,
                  mask=mask, n=spec.n_general)


def _own_clip(T: int, clip_len: int, rng: np.random.Generator) -> np.ndarray:
    if T <= clip_len:
        return np.arange(T)
    return np.sort(rng.choice(T, size=clip_len, replace=False))


def specific_sample(row: Row, feats: FeatureSource, pool: list[str], spec: SampleSpec,
                    rng: np.random.Generator) -> Sample:
    """Splice the row's clips among clips of other videos from `pool`, shuffled."""
    others = [v for v in pool if v != row.video]
    if not others:
        raise ValueError(f"{row.video}: a specific sample needs other videos to draw clips from")
    times0, x0 = feats.features(row.video)
    base = general_frames(len(x0), spec.max_frames)       # the video as a general row sees it
    lo, hi = spec.own_clips
    n_own = 1 if spec.fixed_layout else int(rng.integers(lo, hi + 1))
    clips: list[tuple[str, np.ndarray, bool]] = [
        (row.video, base[_own_clip(len(base), spec.clip_len, rng)], True) for _ in range(n_own)]
    if spec.fixed_layout:
        picks = [others[i % len(others)] for i in range(spec.other_clips)]
    else:
        picks = [others[i] for i in rng.integers(0, len(others), size=spec.other_clips)]
    for v in picks:
        T = len(feats.features(v)[1])
        clips.append((v, uniform_spread(T, spec.clip_len), False))
    if spec.fixed_layout:  # the paper's toy: half of the distractors, the needle, the rest
        half = spec.other_clips // 2
        order = list(range(n_own, n_own + half)) + list(range(n_own)) + list(range(n_own + half, len(clips)))
    else:
        order = rng.permutation(len(clips)).tolist()
    videos: list[str] = []
    xs, src, times, mask = [], [], [], []
    for ci in order:
        v, idx, own = clips[ci]
        t, x = feats.features(v)
        if v not in videos:
            videos.append(v)
        xs.append(x[idx])
        src.append(np.full(len(idx), videos.index(v), dtype=np.int64))
        times.append(t[idx])
        mask.append(np.full(len(idx), own))
    x = np.ascontiguousarray(np.concatenate(xs), dtype=np.float32)
    return Sample(row=row, x=x, videos=videos, src=np.concatenate(src), times=np.concatenate(times),
                  timeline=np.arange(len(x), dtype=np.float64), mask=np.concatenate(mask),
                  n=spec.n_specific)


def build_sample(row: Row, feats: FeatureSource, pool: list[str], spec: SampleSpec,
                 rng: np.random.Generator) -> Sample:
    if row.kind == "specific":
        return specific_sample(row, feats, pool, spec, rng)
    return general_sample(row, feats, spec)
