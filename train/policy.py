"""TSPO's keyframe policy: n distinct frames drawn by Gumbel top-k from softmax(scores)."""

from __future__ import annotations

import torch

from tspo_edge.selection import finite_ranks


def sample_frames(scores: torch.Tensor, n: int, generator: torch.Generator | None = None):
    """Gumbel top-k: n distinct frames drawn from softmax(scores), and log_softmax(scores).

    Returns (indices LongTensor[min(n, T)] sorted, log_probs Tensor[T]); gradients flow
    through `log_probs`. Non-finite scores are replaced as in `select_frames`.
    """
    scores = torch.as_tensor(scores)
    if not torch.isfinite(scores).all():
        safe = torch.as_tensor(finite_ranks(scores.detach().cpu().numpy()), dtype=scores.dtype, device=scores.device)
        scores = torch.where(torch.isfinite(scores), scores, safe)
    log_probs = torch.log_softmax(scores.float(), dim=-1)
    u = torch.rand(scores.shape, generator=generator, device=scores.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    keys = log_probs.detach().double() + gumbel
    k = min(n, scores.shape[-1])
    idx = torch.topk(keys, k).indices
    return torch.sort(idx).values, log_probs
