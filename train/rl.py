"""TSPO's learning signal: rewards, group-relative advantages, the surrogate loss.

For one sample, G rollouts each choose n frames (Gumbel top-k on the agent's logits s):

    R_A[g] = 1 if the MLLM's answer letter matches the solution's
    R_T[g] = fraction of the chosen frames inside the ground-truth mask (specific rows)
    r[g]   = R_A[g] + R_T[g]            (general rows: R_A[g] only)
    A[g]   = (r[g] - mean(r)) / (std(r) + 1e-4)          std unbiased, as torch.std
    loss   = -mean_g[ mean_i exp(lp[g,i] - sg(lp[g,i])) * A[g] ],  lp = log_softmax(s)[chosen]

exp(lp - sg(lp)) is 1 in value; its gradient is that of lp: a REINFORCE step on the
per-frame log-probabilities, as the paper's code does. So the loss's value is -mean(A) = 0 at
every step (up to rounding): the log shows the gradient norm and the policy entropy instead, and
the gradient is 0 exactly when every rollout of a group got the same reward.
"""

from __future__ import annotations

import numpy as np
import torch

ADV_EPS = 1e-4


def accuracy_rewards(letters: list[str | None], answer: str) -> np.ndarray:
    """R_A per rollout: 1.0 where the predicted letter equals the solution's (case-insensitive)."""
    want = answer.strip().lower()
    return np.array([1.0 if (l or "").strip().lower() == want else 0.0 for l in letters])


def temporal_rewards(chosen: torch.Tensor | np.ndarray, mask: np.ndarray) -> np.ndarray:
    """R_T per rollout: fraction of each row of `chosen` [G, n] that falls inside `mask` [T]."""
    idx = np.asarray(chosen.cpu() if isinstance(chosen, torch.Tensor) else chosen, dtype=np.int64)
    return np.asarray(mask, dtype=bool)[idx].mean(axis=1).astype(np.float64)


def advantages(rewards: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Group-relative advantages (r - mean) / (std + 1e-4) over the last axis (a group)."""
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.shape[-1] < 2:  # std of one rollout is undefined: no signal
        return torch.zeros_like(r)
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + ADV_EPS)


def tspo_loss(log_probs: torch.Tensor, chosen: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """The TSPO surrogate loss for one group.

    log_probs: [T] log_softmax of the agent's logits (with grad); chosen: [G, n] frame
    indices of each rollout; adv: [G] advantages.
    """
    lp = log_probs[chosen]                                   # [G, n]
    ratio = torch.exp(lp - lp.detach()).mean(dim=-1)         # [G], value 1
    return -(ratio * adv.to(ratio.device, ratio.dtype)).mean()


def policy_entropy(log_probs: torch.Tensor) -> float:
    """Entropy (nats) of softmax(s): how much the Gumbel draws can still explore."""
    lp = log_probs.detach().float()
    return float(-(lp.exp() * lp).sum())


def tau_at(step: int, total_steps: int, tau0: float = 0.025, tau1: float = 0.01) -> float:
    """Linear annealing of the logit temperature from tau0 (step 0) towards tau1 (end)."""
    if total_steps <= 0:
        return tau0
    return tau0 - (tau0 - tau1) * min(step, total_steps) / total_steps
