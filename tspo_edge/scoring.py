"""Ask-time scores, NumPy only (no torch: an ONNX ask never imports it).

    s_t = (cos(z_t, q) + cos(x_t, q)) / tau          TSPO's logit (the agent's score)
    c_t = cos(x_t, q)                                 the clip score (similarity top-k)

z: event features, x: raw frame embeddings, both [T, D]; q: question embedding [M, D]
(M > 1: the event term is averaged over the rows, the clip term uses their mean).
"""

from __future__ import annotations

import numpy as np

TAU = 0.025
EPS = 1e-6  # added to the product of norms, as the reference does


def _cos(a: np.ndarray, v: np.ndarray, a_norm: np.ndarray | None) -> np.ndarray:
    # One matrix-vector product through einsum: single-threaded and memory-bound, it beats a
    # threaded BLAS call whose barrier stalls on a busy core.
    if a_norm is None:
        a_norm = np.linalg.norm(a, axis=-1)
    return np.einsum("td,d->t", a, v) / (a_norm * np.linalg.norm(v) + EPS)


def clip_scores(x: np.ndarray, q: np.ndarray, x_norm: np.ndarray | None = None) -> np.ndarray:
    """cos(x_t, mean q) for every frame t, float32 [T]."""
    q = np.asarray(q, dtype=np.float32).reshape(-1, x.shape[-1])
    return _cos(x, q.mean(0), x_norm).astype(np.float32)


def score_frames(z: np.ndarray, x: np.ndarray, q: np.ndarray, tau: float = TAU,
                 z_norm: np.ndarray | None = None, x_norm: np.ndarray | None = None) -> np.ndarray:
    """TSPO's logits s[T] from stored features; pass the stored norms to skip a pass."""
    q = np.asarray(q, dtype=np.float32).reshape(-1, z.shape[-1])
    if z_norm is None:
        z_norm = np.linalg.norm(z, axis=-1)
    event = sum(_cos(z, qm, z_norm) for qm in q) / len(q)
    return ((event + clip_scores(x, q, x_norm)) / tau).astype(np.float32)
