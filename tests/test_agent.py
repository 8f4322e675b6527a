"""The temporal agent: parity with the published agent, banded == dense, checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tspo_edge.models.agent import (TemporalAgent, load_agent, positional_encoding, save_agent,
                             score_frames)
from tspo_edge.errors import CheckpointError

from conftest import GOLDENS
from tiny_models import tiny_clip_folder

CASES = json.loads((GOLDENS / "index.json").read_text())


def golden(case):
    d = np.load(GOLDENS / case["file"])
    weights = {k[2:]: d[k] for k in d.files if k.startswith("w.")}
    return d, weights


def rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"][:-4])
def test_reproduces_published_agent(case):
    d, weights = golden(case)
    agent = load_agent(weights, heads=int(d["heads"]), window=int(d["window"]))
    x, q = d["image_features"], d["text_features"]
    z = agent.events(x)
    s = agent.scores(z, x, q, tau=float(d["tau"]))
    assert z.shape == d["event_features"].shape and z.dtype == np.float32
    assert rel(z, d["event_features"]) < 1e-4
    assert rel(s, d["score"]) < 1e-4
    lp = torch.log_softmax(torch.as_tensor(s), 0).numpy()
    assert rel(lp, d["log_probs"]) < 1e-4
    # the torch path (training) gives the same numbers as the NumPy path (ask)
    zt = agent.events(torch.as_tensor(x))
    st = agent.scores(zt, torch.as_tensor(x), torch.as_tensor(q), tau=float(d["tau"]))
    assert rel(st.detach().numpy(), d["score"]) < 1e-4


def dense_events(agent: TemporalAgent, x: torch.Tensor) -> torch.Tensor:
    """The reference algorithm from the formulas: a dense T x T window mask."""
    T, D = x.shape
    H, w = agent.heads, agent.window
    e = x + positional_encoding(T, D)
    att = agent.temporal
    q, k, v = (lin(e).view(T, H, D // H).transpose(0, 1) for lin in (att.Self_q, att.Self_k, att.Self_v))
    mask = torch.zeros(T, T)
    for j in range(T):
        for i in range(w):
            mask[j, min(max(j - w // 2 + i, 0), T - 1)] = 1
    logits = (q @ k.transpose(1, 2)) / math.sqrt(D // H)
    a = torch.softmax(logits.masked_fill(mask == 0, -1e6), -1) @ v
    return agent.mlp(a.transpose(0, 1).reshape(T, D)) + x


@pytest.mark.parametrize("T,w", [(1, 12), (2, 1), (5, 12), (7, 7), (13, 12), (40, 8), (33, 5), (64, 64), (50, 80), (97, 24)])
def test_banded_attention_equals_dense(T, w):
    torch.manual_seed(T * 100 + w)
    agent = TemporalAgent(dim=32, heads=4, window=w).eval()
    x = torch.randn(T, 32)
    with torch.no_grad():
        assert torch.allclose(agent(x), dense_events(agent, x), rtol=1e-5, atol=1e-5)


def test_similarity_init_ranks_by_clip_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 64)).astype(np.float32)
    q = rng.normal(size=(1, 64)).astype(np.float32)
    agent = load_agent("similarity:64")
    z = agent.events(x)
    np.testing.assert_array_equal(z, x)
    cos = (x @ q[0]) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q[0]))
    s = agent.scores(z, x, q)
    np.testing.assert_allclose(s, 2 * cos / 0.025, rtol=1e-4)
    assert list(np.argsort(-s)) == list(np.argsort(-cos))


def test_score_frames_with_stored_norms_matches():
    rng = np.random.default_rng(1)
    z, x = rng.normal(size=(2, 30, 16)).astype(np.float32)
    q = rng.normal(size=(3, 16)).astype(np.float32)
    a = score_frames(z, x, q)
    b = score_frames(z, x, q, z_norm=np.linalg.norm(z, axis=1), x_norm=np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_gradients_reach_every_agent_weight():
    agent = TemporalAgent(dim=16, heads=2, window=4)
    x, q = torch.randn(20, 16), torch.randn(1, 16)
    s = agent.scores(agent.events(x), x, q)
    torch.log_softmax(s, 0)[3].backward()
    for name, p in agent.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_agent_id_is_stable_and_tracks_weights():
    a, b = load_agent("similarity:32"), load_agent("similarity:32")
    assert a.id == b.id and a.id.startswith("tspo-agent:d32:w12:")
    with torch.no_grad():
        b.mlp[0].bias.add_(1)
    assert a.id != b.id


# ---------------------------------------------------------------- checkpoints

def random_selector(dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    sd = TemporalAgent(dim).state_dict()
    sd["temporal.ffn_o.weight"] = torch.randn(dim, dim)  # in every real checkpoint, never used
    sd["temporal.ffn_o.bias"] = torch.randn(dim)
    return sd


def same_agent(a: TemporalAgent, b: TemporalAgent) -> bool:
    x = torch.randn(9, a.dim)
    return a.dim == b.dim and torch.allclose(a.events(x), b.events(x))


def test_own_format_round_trip(tmp_path):
    agent = load_agent(random_selector(48), heads=4, window=6)
    save_agent(agent, tmp_path / "ckpt", encoder_id="lite:test")
    cfg = json.loads((tmp_path / "ckpt" / "agent.json").read_text())
    assert cfg["dim"] == 48 and cfg["heads"] == 4 and cfg["window"] == 6 and cfg["encoder_id"] == "lite:test"
    for src in (tmp_path / "ckpt", tmp_path / "ckpt" / "agent.safetensors"):
        back = load_agent(src)
        assert (back.heads, back.window) == (4, 6) and same_agent(agent, back) and back.id == agent.id
    (tmp_path / "ckpt" / "agent.json").unlink()  # a lone file still knows its config
    assert load_agent(tmp_path / "ckpt" / "agent.safetensors").window == 6


def test_training_checkpoint_prefix(tmp_path):
    sd = {"multiModal_align." + k: v for k, v in random_selector(32).items()}
    sd["optimizer_step"] = torch.tensor(3)
    torch.save(sd, tmp_path / "ckpt.pt")
    agent = load_agent(tmp_path / "ckpt.pt")
    assert agent.dim == 32 and same_agent(agent, load_agent(random_selector(32)))


def tspo_04b_folder(path, *, bin_format: bool = False):
    """A TSPO-0.4B-style folder: a (tiny) CLIP checkpoint plus 768-wide `selector.*` tensors."""
    tiny_clip_folder(path, projection_dim=768, selector=False)
    sd = load_file(str(path / "model.safetensors"))
    sd.update({"selector." + k: v for k, v in random_selector(768, seed=5).items()})
    if bin_format:  # the older release layout: pytorch_model.bin, read with weights_only=True
        (path / "model.safetensors").unlink()
        torch.save(sd, path / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("bin_format", [False, True], ids=["safetensors", "bin"])
def test_official_tspo_04b_folder(tmp_path, bin_format):
    folder = tspo_04b_folder(tmp_path / "TSPO-0.4B", bin_format=bin_format)
    agent = load_agent(folder)
    assert agent.dim == 768 and agent.source.startswith("tspo-0.4b")
    assert same_agent(agent, load_agent(random_selector(768, seed=5)))
    # and back out in the official layout, which loads again
    out = save_agent(agent, tmp_path / "export", official_layout=True)
    assert same_agent(agent, load_agent(out))


def test_wrong_shape_is_refused_with_both_shapes():
    sd = random_selector(32)
    sd["mlp.2.weight"] = torch.zeros(32, 16)
    with pytest.raises(CheckpointError, match=r"'mlp\.2\.weight' has shape \(32, 16\), expected \(32, 32\)"):
        load_agent(sd)


def test_missing_key_and_foreign_checkpoints_are_refused(tmp_path):
    sd = random_selector(32)
    del sd["temporal.Self_v.bias"]
    with pytest.raises(CheckpointError, match="missing key 'temporal.Self_v.bias'"):
        load_agent(sd)
    with pytest.raises(CheckpointError, match="no agent tensors"):
        load_agent({"vision_model.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="no such agent checkpoint"):
        load_agent(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        load_agent(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint file type"):
        load_agent(tmp_path / "x.txt")
