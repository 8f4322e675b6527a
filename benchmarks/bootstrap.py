"""Statistics for paired per-question comparisons of keyframe selectors.

- `two_level`: the mean paired difference with a percentile interval from a two-level bootstrap:
  resample the training seeds, then the source clusters (e.g. the photo a question is about),
  with replacement; questions stay with their cluster. It respects that questions about one
  photo are not independent, and that a trained agent is one draw of a training seed.
- `mcnemar`: the exact two-sided McNemar test on paired correct / wrong answers.

    from benchmarks.bootstrap import two_level
    est, lo, hi = two_level({seed: diffs}, clusters, reps=10000, seed=0)
"""

from __future__ import annotations

from math import comb

import numpy as np


def two_level(diffs: dict[int, np.ndarray], clusters: np.ndarray, *, reps: int = 10000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the mean of `diffs` (per training seed, one value per question, the
    questions in the same order for every seed) and its bootstrap interval, resampling seeds then
    clusters (`clusters[q]`: the cluster of question q)."""
    seeds = sorted(diffs)
    D = np.stack([np.asarray(diffs[s], dtype=np.float64) for s in seeds])      # [S, Q]
    clusters = np.asarray(clusters)
    if D.shape[1] != len(clusters):
        raise ValueError(f"{D.shape[1]} questions per seed but {len(clusters)} cluster labels")
    names, cl = np.unique(clusters, return_inverse=True)
    # per seed and cluster: the sum and count of the differences (a resample is a weighted sum)
    sums = np.stack([np.bincount(cl, weights=D[i], minlength=len(names)) for i in range(len(seeds))])  # [S, C]
    counts = np.bincount(cl, minlength=len(names)).astype(np.float64)                                   # [C]
    rng = np.random.default_rng(seed)
    S, C = len(seeds), len(names)
    si = rng.integers(0, S, size=(reps, S))
    ci = rng.integers(0, C, size=(reps, C))
    seed_w = np.zeros((reps, S))
    np.add.at(seed_w, (np.arange(reps)[:, None], si), 1.0)                      # how often each seed
    clu_w = np.zeros((reps, C))
    np.add.at(clu_w, (np.arange(reps)[:, None], ci), 1.0)                       # how often each cluster
    num = np.einsum("rs,sc,rc->r", seed_w, sums, clu_w)
    den = seed_w.sum(1) * (clu_w @ counts)
    stats = num / den
    a = (1 - level) / 2
    return float(D.mean()), float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def mcnemar(a_correct, b_correct) -> tuple[int, int, float]:
    """(b, c, p): questions only A got right, only B got right, and the exact two-sided p-value."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return only_a, only_b, 1.0
    p = 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return only_a, only_b, float(min(1.0, p))
