"""Training's keyframe policy: Gumbel top-k draws and their log-probabilities."""

from __future__ import annotations

import numpy as np
import torch

from tspo_edge.train.policy import sample_frames


def test_gumbel_top_k_samples_without_replacement():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(30, requires_grad=True)
    idx, lp = sample_frames(s, 8, g)
    assert len(idx) == 8 and len(set(idx.tolist())) == 8 and torch.all(idx[1:] > idx[:-1])
    assert torch.allclose(lp.exp().sum(), torch.tensor(1.0))
    lp[idx].sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_gumbel_top_1_follows_softmax():
    s = torch.tensor([2.0, 1.0, 0.0, -1.0])
    g = torch.Generator().manual_seed(1)
    counts = np.zeros(4)
    for _ in range(4000):
        counts[sample_frames(s, 1, g)[0].item()] += 1
    np.testing.assert_allclose(counts / 4000, torch.softmax(s, 0).numpy(), atol=0.03)


def test_sampling_is_reproducible_and_handles_non_finite():
    s = torch.randn(50)
    a = sample_frames(s, 10, torch.Generator().manual_seed(7))[0]
    b = sample_frames(s, 10, torch.Generator().manual_seed(7))[0]
    assert torch.equal(a, b)
    s[[0, 1]] = float("nan")
    s[2] = float("inf")
    idx, lp = sample_frames(s, 5, torch.Generator().manual_seed(0))
    assert torch.isfinite(lp).all() and 2 in idx.tolist() and 0 not in idx.tolist()
    assert len(sample_frames(torch.randn(3), 10)[0]) == 3
