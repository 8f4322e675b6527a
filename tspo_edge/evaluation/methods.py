"""Selection methods compared by the evaluation, over one video's stored features.

| method     | scores                                   | rule    |
| ---        | ---                                      | ---     |
| uniform    | none                                     | uniform |
| similarity | cos(x, q) (agent-free, CLIP-score top-k) | topk    |
| agent      | the agent's s = (cos(z,q) + cos(x,q))/tau | topk    |
| bin-max    | the agent's s                            | bin-max |
| aks        | the agent's s                            | aks     |
"""

from __future__ import annotations

import numpy as np

from tspo_edge.scoring import clip_scores, score_frames
from tspo_edge.selection import select_frames
from tspo_edge.storage.store import VideoFeatures

METHODS: dict[str, tuple[str | None, str]] = {
    "uniform": (None, "uniform"),
    "similarity": ("clip", "topk"),
    "agent": ("agent", "topk"),
    "bin-max": ("agent", "bin-max"),
    "aks": ("agent", "aks"),
}
DEFAULT_METHODS = ("uniform", "similarity", "bin-max", "aks", "agent", "oracle")  # oracle: see runner


def scores_for(feats: VideoFeatures, q: np.ndarray) -> dict[str, np.ndarray]:
    """Both kinds of per-frame scores for question embedding q [D] or [M, D]."""
    return {"clip": clip_scores(feats.x, q, feats.x_norm),
            "agent": score_frames(feats.z, feats.x, q, z_norm=feats.z_norm, x_norm=feats.x_norm)}


def choose(scores: dict[str, np.ndarray], T: int, method: str, n: int) -> np.ndarray:
    """Sorted frame indices (into the stored frames) chosen by `method` (see METHODS)."""
    kind, rule = METHODS[method]
    s = np.zeros(T, np.float32) if kind is None else scores[kind]
    return select_frames(s, n, rule)
