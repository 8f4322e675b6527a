"""Needle metrics over chosen frame times.

- hit fraction: the share of chosen frames inside the question's needle (TSPO's temporal reward R_T)
- needle recall: 1 if at least one chosen frame is inside, else 0
- accuracy: 1 if the answerer's letter is the correct one
Each is averaged over questions per (method, frames).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np


def inside(times: Sequence[float], segments: Iterable[tuple[float, float]]) -> np.ndarray:
    """bool[N]: time t is inside some [start, end) segment."""
    t = np.asarray(times, dtype=np.float64)
    hit = np.zeros(t.shape, dtype=bool)
    for start, end in segments:
        hit |= (t >= start) & (t < end)
    return hit


def hit_fraction(times: Sequence[float], segments: Iterable[tuple[float, float]]) -> float:
    """Fraction of chosen times inside the segments (0 when nothing was chosen)."""
    h = inside(times, segments)
    return float(h.mean()) if h.size else 0.0


def needle_recall(times: Sequence[float], segments: Iterable[tuple[float, float]]) -> float:
    """1.0 if any chosen time is inside the segments, else 0.0."""
    return float(inside(times, segments).any())


def summarize(records: Iterable[dict]) -> list[dict]:
    """Mean hit/recall/accuracy per (method, frames) over per-question records.

    A record has keys method, frames, hit, recall and correct (bool, or None when no answerer
    ran). Rows come back in first-seen method order, then by frames; accuracy is None when no
    record of the group was answered.
    """
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], int(r["frames"]))].append(r)
    methods = list(dict.fromkeys(m for m, _ in groups))
    rows = []
    for m in methods:
        for n in sorted(k for mm, k in groups if mm == m):
            g = groups[(m, n)]
            answered = [r["correct"] for r in g if r.get("correct") is not None]
            rows.append({
                "method": m, "frames": n, "questions": len(g),
                "hit": float(np.mean([r["hit"] for r in g])),
                "recall": float(np.mean([r["recall"] for r in g])),
                "accuracy": float(np.mean(answered)) if answered else None,
            })
    return rows
