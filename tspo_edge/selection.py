"""Keyframe selection rules over per-frame scores.

Inference: `select_frames(scores, n, method)` with
  topk     the n highest scores;
  bin-max  the arg-max of each of n contiguous bins (bins: nearest of n uniformly spaced
           anchors, ties to the lower anchor), TSPO's rule for Video-MME;
  aks      Adaptive Keyframe Sampling (t1 = 0.2, t2 = -100, depth 3) on min-max
           normalised scores;
  uniform  n evenly spaced frames (ignores the scores).
All return sorted int64 frame indices, every frame when n >= T.

NumPy only. Training's stochastic policy (Gumbel top-k) lives in train/policy.py.

Non-finite scores are defined, never an error: NaN counts as lower than every finite
score, +inf higher and -inf lower (order kept, ties by frame order); when no score
carries information (all equal, or none finite) every method falls back to uniform.
"""

from __future__ import annotations

import numpy as np

from tspo_edge.selection_methods import METHODS


def finite_ranks(scores) -> np.ndarray:
    """Scores as finite float64 with the same order: inf/NaN mapped just outside the finite range."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    finite = np.isfinite(s)
    if finite.all():
        return s
    lo, hi = (s[finite].min(), s[finite].max()) if finite.any() else (0.0, 0.0)
    span = max(hi - lo, 1.0)
    out = s.copy()
    out[np.isposinf(s)] = hi + span
    out[np.isneginf(s)] = lo - span
    out[np.isnan(s)] = lo - 2 * span
    return out


def uniform_indices(T: int, n: int) -> np.ndarray:
    """n evenly spaced frame indices in [0, T) (centres of n equal spans)."""
    if n >= T:
        return np.arange(T, dtype=np.int64)
    return np.unique(((np.arange(n) + 0.5) * T / n).astype(np.int64))


def _topk(s: np.ndarray, n: int) -> np.ndarray:
    order = np.argsort(-s, kind="stable")  # ties: earlier frame first
    return np.sort(order[:n])


def _anchors(T: int, n: int) -> np.ndarray:
    """n anchors spread over [0, T-1], rounded half to even (Python's round)."""
    if n == 1:
        return np.array([T - 1])
    step = (T - 1) / (n - 1)
    return np.array([round(i * step) for i in range(n)])


def _bin_max(s: np.ndarray, n: int) -> np.ndarray:
    T = len(s)
    anchors = _anchors(T, n)
    # nearest anchor of each frame; argmin picks the lower anchor on ties
    bins = np.abs(np.arange(T)[:, None] - anchors[None, :]).argmin(axis=1)
    picks = [np.flatnonzero(bins == b)[np.argmax(s[bins == b])] for b in np.unique(bins)]
    return np.sort(np.asarray(picks, dtype=np.int64))


def _nlargest(s: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-s, kind="stable")[:k]


def _aks(s: np.ndarray, n: int, t1: float = 0.2, t2: float = -100.0, max_depth: int = 3) -> np.ndarray:
    """Split a segment in halves while its top-n mean does not stand out from its mean
    (by more than t1, with std > t2) and depth < max_depth; each final segment of depth d
    contributes its int(n / 2**d) best frames."""
    norm = (s - s.min()) / (s.max() - s.min())
    leaves: list[tuple[np.ndarray, int]] = []
    level = [(np.arange(len(s)), 0)]
    while level:
        nxt = []
        for idx, depth in level:
            seg = norm[idx]
            top_mean = seg[_nlargest(seg, n)].mean()
            if top_mean - seg.mean() > t1 and seg.std() > t2:
                leaves.append((idx, depth))
            elif depth < max_depth:
                half = len(idx) // 2
                nxt += [(idx[:half], depth + 1), (idx[half:], depth + 1)]
            else:
                leaves.append((idx, depth))
        level = nxt
    out = [idx[_nlargest(norm[idx], int(n / 2 ** depth))] for idx, depth in leaves]
    return np.sort(np.concatenate(out).astype(np.int64))


def select_frames(scores, n: int, method: str = "topk") -> np.ndarray:
    """Sorted frame indices chosen from `scores` [T] by `method`; all frames when n >= T."""
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose from {', '.join(METHODS)}")
    if n < 1:
        raise ValueError(f"number of frames must be >= 1, got {n}")
    s = finite_ranks(scores)
    T = len(s)
    if T == 0:
        return np.zeros(0, dtype=np.int64)
    if n >= T:  # (the reference's AKS still runs when n == T; every frame is the useful answer)
        return np.arange(T, dtype=np.int64)
    if method == "uniform" or s.max() == s.min():
        return uniform_indices(T, n)
    if method == "topk":
        return _topk(s, n)
    if method == "bin-max":
        return _bin_max(s, n)
    return _aks(s, n)
