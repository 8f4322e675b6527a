"""The exported event encoder against torch: goldens, a long random video, no T x T tensor, manifest checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDENS
from tspo_edge.export.agent_export import export_agent
from tspo_edge.models.agent import load_agent
from tspo_edge.models.agent_onnx import OnnxAgent
from tspo_edge.errors import ManifestError
from tspo_edge.export.manifest import file_entry, write_manifest
from tspo_edge.models.onnx_session import available_providers, provider_options
from tspo_edge.scoring import score_frames
from tspo_edge.selection import select_frames

CASES = {1: "case02_d64_T1_w12.npz", 13: "case04_d64_T13_w12.npz", 700: "case09_d384_T700_w12.npz"}


def _golden(name: str) -> dict:
    return dict(np.load(GOLDENS / name))  # tests/data: in every clone


def _export(agent, out: Path, *, fp16: bool = False) -> Path:
    section = export_agent(agent, out, fp16=fp16)
    write_manifest(out, models={"agent": file_entry(out, "agent.onnx")}, agent=section, encoder=None,
                   opset=17, precision="fp16" if fp16 else "fp32")
    return out


def _golden_agent(g: dict):
    tensors = {k[2:]: g[k] for k in g if k.startswith("w.")}
    return load_agent(tensors, heads=int(g["heads"]), window=int(g["window"]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(torch agent, OnnxAgent) per golden case, exported once for the module."""
    out = {}
    for T, name in CASES.items():
        g = _golden(name)
        agent = _golden_agent(g)
        d = _export(agent, tmp_path_factory.mktemp(f"agent{T}"))
        out[T] = (g, agent, OnnxAgent(d, agent_id=agent.id, quiet=True))
    return out


@pytest.mark.parametrize("T", sorted(CASES))
def test_goldens(exported, T):
    g, agent, onnx_agent = exported[T]
    z = onnx_agent.events(g["image_features"])
    assert z.shape == (T, int(g["dim"]))
    scale = np.abs(g["event_features"]).max()
    assert np.abs(z - g["event_features"]).max() <= 1e-4 * scale
    s = score_frames(z, g["image_features"], g["text_features"], float(g["tau"]))
    assert np.abs(s - g["score"]).max() <= 1e-4 * np.abs(g["score"]).max()
    n = int(g["n_select"])
    for method, key in (("topk", "select_topk"), ("bin-max", "select_bin_max"), ("aks", "select_aks")):
        assert select_frames(s, n, method).tolist() == g[key].tolist(), method


def test_long_random_video_matches_torch(exported):
    """T = 10 800 (3 h at 1 fps) with the d=384 golden weights: same scores and picks as torch."""
    g, agent, onnx_agent = exported[700]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((10_800, 384)).astype(np.float32)
    q = rng.standard_normal((1, 384)).astype(np.float32)
    z_onnx, z_torch = onnx_agent.events(x), agent.events(x)
    assert np.abs(z_onnx - z_torch).max() <= 1e-4 * np.abs(z_torch).max()
    s_onnx, s_torch = score_frames(z_onnx, x, q), score_frames(z_torch, x, q)
    assert np.abs(s_onnx - s_torch).max() <= 1e-4 * np.abs(s_torch).max()
    for method in ("topk", "bin-max", "aks"):
        assert select_frames(s_onnx, 64, method).tolist() == select_frames(s_torch, 64, method).tolist()


@pytest.mark.parametrize("window", [1, 7, 24])
def test_any_window_and_length(tmp_path, window):
    """Traced once, the graph is right at every T (shorter and longer than the window)."""
    import torch

    torch.manual_seed(window)
    agent = load_agent({"temporal.Self_q.weight": torch.randn(32, 32) * 0.2, **_random_rest(32)},
                       heads=4, window=window)
    onnx_agent = OnnxAgent(_export(agent, tmp_path), quiet=True)
    for T in (1, 2, window, window + 1, 257):
        x = np.random.default_rng(T).standard_normal((T, 32)).astype(np.float32)
        np.testing.assert_allclose(onnx_agent.events(x), agent.events(x), rtol=1e-4, atol=1e-5)


def _random_rest(d: int) -> dict:
    import torch

    names = ["temporal.Self_q.bias", "temporal.Self_k.weight", "temporal.Self_k.bias", "temporal.Self_v.weight",
             "temporal.Self_v.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    return {n: torch.randn(d, d) * 0.2 if n.endswith("weight") else torch.randn(d) * 0.1 for n in names}


def _intermediate_shapes(path: Path, T: int, D: int) -> list[tuple]:
    """Shapes of every value the graph computes for x[T, D] (all node outputs exposed)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    names = [o for node in model.graph.node for o in node.output if o]
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in {"z", "y"})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.shape(v) for v in sess.run(None, {"x": np.ones((T, D), np.float32)})]


def _has_quadratic(shapes: list[tuple], T: int) -> bool:
    return any(int(np.prod(s)) >= T * T or list(s).count(T) >= 2 for s in shapes)


def test_no_quadratic_tensor_in_graph(tmp_path):
    """Run the graph with every intermediate value exposed: none holds T x T (or more) elements."""
    import onnx
    import torch

    from tspo_edge.export.onnx_utils import to_onnx

    agent = load_agent("similarity:32", heads=4, window=12)
    _export(agent, tmp_path)
    T = 401  # a prime far from D, w and H, so a T x T shape cannot hide among them
    shapes = _intermediate_shapes(tmp_path / "agent.onnx", T, 32)
    assert len(shapes) > 50  # the exposed intermediates really came back
    assert not _has_quadratic(shapes, T), max(shapes, key=lambda s: int(np.prod(s)))
    assert not {n.op_type for n in onnx.load(str(tmp_path / "agent.onnx")).graph.node} & {"Loop", "Scan"}

    class Dense(torch.nn.Module):  # the reference's dense T x T attention: the check must see it
        def forward(self, x):
            return torch.softmax(x @ x.T, -1) @ x

    to_onnx(Dense(), (torch.randn(20, 32),), tmp_path / "dense.onnx", input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "T"}, "y": {0: "T"}}, opset=17)
    assert _has_quadratic(_intermediate_shapes(tmp_path / "dense.onnx", T, 32), T)


def test_fp16_export_close(tmp_path):
    g = _golden(CASES[13])
    agent = _golden_agent(g)
    onnx_agent = OnnxAgent(_export(agent, tmp_path, fp16=True), quiet=True)
    z = onnx_agent.events(g["image_features"])
    assert z.dtype == np.float32
    assert np.abs(z - g["event_features"]).max() <= 1e-2 * np.abs(g["event_features"]).max()


def test_manifest_refusals(tmp_path):
    agent = load_agent("similarity:32", heads=4)
    d = _export(agent, tmp_path)
    OnnxAgent(d, agent_id=agent.id, quiet=True)  # the right id loads
    with pytest.raises(ManifestError, match="does not match the requested"):
        OnnxAgent(d, agent_id="tspo-agent:d32:w12:000000000000", quiet=True)
    onnx_file = d / "agent.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="sha256 differs"):
        OnnxAgent(d, quiet=True)
    onnx_file.unlink()
    with pytest.raises(ManifestError, match="missing"):
        OnnxAgent(d, quiet=True)
    (d / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ManifestError, match="not a tspo-edge-export"):
        OnnxAgent(d, quiet=True)
    with pytest.raises(ManifestError, match="no manifest"):
        OnnxAgent(tmp_path / "nowhere", quiet=True)


def test_provider_order_and_tensorrt_options(tmp_path, monkeypatch):
    """TensorRT -> CUDA -> CPU among the providers onnxruntime has; TensorRT caches inside DIR."""
    import onnxruntime as ort


    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"])
    assert available_providers() == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert available_providers() == ["CPUExecutionProvider"]
    opts = provider_options("TensorrtExecutionProvider", tmp_path, fp16=True,
                            profile={"x": [[1, 768], [3600, 768], [50000, 768]]})
    assert Path(opts["trt_engine_cache_path"]) == tmp_path / "trt-cache" and opts["trt_engine_cache_enable"]
    assert (opts["trt_profile_min_shapes"], opts["trt_profile_max_shapes"]) == ("x:1x768", "x:50000x768")
    assert opts["trt_fp16_enable"] and provider_options("CPUExecutionProvider", tmp_path, fp16=True, profile=None) == {}


def test_cli_export_takes_heads_and_window_from_agent_json_beside_a_foreign_checkpoint(tmp_path):
    """A checkpoint that records no heads/window (TSPO's own `selector.*` layout) is read as TSPO's
    8 heads and window 12, or with what an agent.json beside it says — for every command."""
    import torch
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from tspo_edge.models.agent import TemporalAgent
    from tspo_edge.cli import app

    folder = tmp_path / "foreign"
    folder.mkdir()
    torch.manual_seed(0)
    agent = TemporalAgent(64, 4, 16)
    save_file({f"selector.{k}": v.contiguous() for k, v in agent.state_dict().items()},
              str(folder / "model.safetensors"))
    runner = CliRunner()
    r = runner.invoke(app, ["export", str(folder), "--encoder", "none", "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())["agent"]
    assert (plain["heads"], plain["window"]) == (8, 12)
    (folder / "agent.json").write_text(json.dumps({"heads": 4, "window": 16}))
    r = runner.invoke(app, ["export", str(folder), "--encoder", "none", "--out", str(tmp_path / "told")])
    assert r.exit_code == 0, r.output
    told = json.loads((tmp_path / "told" / "manifest.json").read_text())["agent"]
    assert (told["heads"], told["window"], told["id"]) == (4, 16, agent.id)
    x = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
    with torch.inference_mode():
        want = agent.events(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(OnnxAgent(tmp_path / "told", quiet=True).events(x), want, atol=1e-4)
    (folder / "agent.json").write_text(json.dumps({"heads": 4, "window": 0}))
    r = runner.invoke(app, ["export", str(folder), "--encoder", "none", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "'window' is 0, expected a positive whole number" in r.output, r.output
