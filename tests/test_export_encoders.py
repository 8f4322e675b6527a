"""Exported encoder towers against the torch encoders: tiny CLIP / SigLIP built here, and the lite encoder.

Also: the manifest (versions, shapes, hashes), refusals of mismatched exports, the CLI, and
TensorRT (skipped with the reason where tensorrt or a GPU is missing).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tspo_edge.models.agent import TemporalAgent, load_agent
from tspo_edge.models.agent_onnx import OnnxAgent
from tspo_edge.models.encoders import Encoder, load_encoder
from tspo_edge.models.encoders.onnx import OnnxEncoder
from tspo_edge.errors import ManifestError
from tspo_edge.export import export_model
from tspo_edge.index import index_paths
from tspo_edge.models.manifest import read_manifest, sha256_file
from tspo_edge.models import ModelSpec, load_models
from tspo_edge.scoring import score_frames
from tspo_edge.selection import select_frames
from tspo_edge.storage.store import Store
from tspo_edge.media.video import iter_frames

from conftest import agent_checkpoint
from tiny_models import tiny_clip_folder

TEXTS = ["a dog", "what happens at the very start of the video?", "x"]


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP byte-level alphabet: every byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _tiny_folder(kind: str, folder: Path) -> Path:
    """A random CLIP (tests/tiny_models) or SigLIP checkpoint of the real classes (width 32, 2 layers,
    32 px), with a fast byte-level tokenizer and the image processor the encoder reads."""
    if kind == "clip":
        return tiny_clip_folder(folder, projection_dim=24, selector=False)
    import torch
    import transformers as tf

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in _bytes_to_unicode():
            vocab[c + suffix] = len(vocab)
    tok = tf.CLIPTokenizer(vocab=vocab, merges=[])
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=24, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision))
    model.save_pretrained(folder)
    tf.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _close(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> None:
    assert a.shape == b.shape and a.dtype == np.float32
    assert np.abs(a - b).max() <= rel * np.abs(b).max(), np.abs(a - b).max()


@pytest.fixture(scope="module", params=["clip", "siglip"])
def tiny(request, tmp_path_factory):
    """(torch encoder, export folder, onnx encoder) for a tiny CLIP or SigLIP."""
    folder = _tiny_folder(request.param, tmp_path_factory.mktemp(f"tiny-{request.param}"))
    enc = load_encoder(str(folder), device="cpu")
    out = tmp_path_factory.mktemp(f"export-{request.param}")
    export_model(load_models(device="cpu", encoder=str(folder), agent=f"similarity:{enc.dim}"), out)
    return enc, out, OnnxEncoder(out, quiet=True)


def test_tiny_towers_match_torch(tiny):
    enc, out, onnx_enc = tiny
    assert isinstance(onnx_enc, Encoder)
    assert (onnx_enc.id, onnx_enc.dim, onnx_enc.image_size) == (enc.id, enc.dim, enc.image_size)
    rng = np.random.default_rng(0)
    at_size = rng.integers(0, 256, (5, 32, 57, 3), dtype=np.uint8)   # as decoded: short side = image_size
    other = rng.integers(0, 256, (3, 45, 40, 3), dtype=np.uint8)     # needs a resize first
    _close(onnx_enc.encode_images(at_size), enc.encode_images(at_size))
    _close(onnx_enc.encode_images(other), enc.encode_images(other))
    _close(onnx_enc.encode_texts(TEXTS), enc.encode_texts(TEXTS))
    assert onnx_enc.encode_texts([]).shape == (0, enc.dim)
    assert onnx_enc.encode_images(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, enc.dim)


def test_manifest_records_versions_shapes_ids_hashes(tiny):
    enc, out, _ = tiny
    m = read_manifest(out)
    assert m["opset"] >= 17 and m["precision"] == "fp32"
    assert set(m["versions"]) >= {"tspo_edge", "onnx", "onnxruntime", "torch"}
    assert m["encoder"]["id"] == enc.id and m["agent"]["id"].startswith(f"tspo-agent:d{enc.dim}:")
    assert m["models"]["agent"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["T", enc.dim]}]
    assert m["models"]["image"]["inputs"][0]["shape"] == ["N", 3, 32, 32]
    assert m["models"]["image"]["outputs"][0]["shape"][-1] == enc.dim
    assert [i["name"] for i in m["models"]["text"]["inputs"]][0] == "input_ids"
    for entry in [*m["models"].values(), *m["files"].values()]:
        assert sha256_file(out / entry["file"]) == entry["sha256"]
    assert any(f.startswith("tokenizer/") for f in m["files"])


def test_mismatches_refused(tiny, tmp_path):
    import shutil

    enc, out, _ = tiny
    with pytest.raises(ManifestError, match="does not match the requested"):
        OnnxEncoder(out, encoder_id="lite:effnet-lite0+minilm-l6:v2")
    with pytest.raises(ManifestError, match="does not match the requested 'lite:"):
        load_models(runtime="onnx", model_dir=str(out), encoder="lite").encoder  # an export of another encoder
    with pytest.raises(ManifestError, match="exported from encoder"):
        load_models(runtime="onnx", model_dir=str(out), encoder="openai/clip-vit-base-patch32").encoder
    other = agent_checkpoint(TemporalAgent(enc.dim).eval(), tmp_path / "other-agent")  # random: not the exported one
    with pytest.raises(ManifestError, match="agent id .* does not match"):
        load_models(runtime="onnx", model_dir=str(out), agent=other).agent
    copy = shutil.copytree(out, tmp_path / "copy")
    tok = next(p for p in sorted((copy / "tokenizer").iterdir()) if p.suffix == ".json")
    tok.write_text(tok.read_text() + " ")
    with pytest.raises(ManifestError, match="sha256 differs"):
        OnnxEncoder(copy)
    (copy / "image.onnx").unlink()
    with pytest.raises(ManifestError, match="image.onnx: listed in manifest.json but missing"):
        OnnxEncoder(copy)


def test_fp16_export(tmp_path):
    folder = _tiny_folder("clip", tmp_path / "clip")
    enc = load_encoder(str(folder), device="cpu")
    m = export_model(load_models(device="cpu", encoder=str(folder), agent=f"similarity:{enc.dim}"), tmp_path / "out", fp16=True)
    assert m["precision"] == "fp16" and m["encoder"]["fp16_converter"]
    import onnx

    weights = onnx.load(str(tmp_path / "out" / "image.onnx")).graph.initializer
    assert any(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    onnx_enc = OnnxEncoder(tmp_path / "out", quiet=True)
    frames = np.random.default_rng(1).integers(0, 256, (4, 32, 40, 3), dtype=np.uint8)
    _close(onnx_enc.encode_images(frames), enc.encode_images(frames), rel=2e-2)
    _close(onnx_enc.encode_texts(TEXTS), enc.encode_texts(TEXTS), rel=2e-2)


@pytest.fixture(scope="module")
def lite(lite_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("export-lite")
    export_model(load_models(ModelSpec(encoder="lite", agent="similarity:384"), loaded_encoder=lite_encoder), out)
    return lite_encoder, out


def test_lite_towers_match_torch(lite, real_clips):
    enc, out = lite
    m = load_models(runtime="onnx", model_dir=str(out), encoder="lite", agent="similarity:384")
    onnx_enc, onnx_agent = m.encoder, m.agent
    assert onnx_enc.id == enc.id and onnx_agent.dim == 384
    for name in ("bikes", "bigbuckbunny"):  # 16:9 and 4:3 frames, decoded at the encoder's short side
        frames = next(iter(iter_frames(real_clips[name], fps=1.0, size=enc.image_size))).frames[:3]
        x = enc.encode_images(frames)
        _close(onnx_enc.encode_images(frames), x)
        _close(onnx_agent.events(x), load_agent("similarity:384").events(x))
    _close(onnx_enc.encode_texts(TEXTS), enc.encode_texts(TEXTS))


def test_cli_export_agent_only(tmp_path):
    from typer.testing import CliRunner

    from tspo_edge.cli import app

    r = CliRunner().invoke(app, ["export", "similarity:32", "--out", str(tmp_path), "--encoder", "none", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout[r.stdout.index("{"):])
    assert set(m["models"]) == {"agent"} and m["encoder"] is None
    assert (tmp_path / "manifest.json").is_file()
    r = CliRunner().invoke(app, ["export", "similarity:32", "--out", str(tmp_path / "x"), "--opset", "16"])
    assert r.exit_code == 2 and "opset" in r.output


def _tensorrt_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU"


def test_tensorrt_refused_without_it(tmp_path):
    if _tensorrt_missing() is None:
        pytest.skip("tensorrt and a GPU are present: the refusal cannot happen here")
    from typer.testing import CliRunner

    from tspo_edge.cli import app

    r = CliRunner().invoke(app, ["export", "similarity:32", "--out", str(tmp_path), "--encoder", "none", "--tensorrt"])
    assert r.exit_code == 2
    message = " ".join(r.output.split())
    assert message.startswith("error: TensorRT engines: ") and ("not installed" in message or "no CUDA GPU" in message)
    from tspo_edge.export.tensorrt_build import TensorRTUnavailable, require_tensorrt

    with pytest.raises(TensorRTUnavailable) as e:
        require_tensorrt()
    assert "\n" not in str(e.value)  # one line (the console may still wrap it)
    assert not (tmp_path / "agent.onnx").exists()  # refused before any work


@pytest.mark.gpu
def test_tensorrt_engines(tmp_path):
    reason = _tensorrt_missing()
    if reason:
        pytest.skip(f"TensorRT engine build needs tensorrt and an NVIDIA GPU: {reason}")
    import tensorrt as trt

    folder = _tiny_folder("clip", tmp_path / "clip")
    m = export_model(load_models(device="cpu", encoder=str(folder), agent="similarity:24"), tmp_path / "out", tensorrt=True)
    engines = m["tensorrt"]["engines"]
    assert set(engines) == {"agent", "image", "text"}
    assert engines["agent"]["profile"]["x"][2][0] == 50_000
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    for e in engines.values():
        engine = runtime.deserialize_cuda_engine((tmp_path / "out" / e["file"]).read_bytes())
        assert engine is not None and engine.num_io_tensors >= 2


def test_index_torch_read_onnx_and_index_onnx(lite, make_video, tmp_path):
    """An index built with torch features is read with ONNX text features of the same encoder id
    (same picks), and indexing through the ONNX runtime stores the same features as torch."""
    enc, out = lite
    onnx_models = load_models(runtime="onnx", model_dir=str(out))
    onnx_enc, onnx_agent = onnx_models.encoder, onnx_models.agent
    video = make_video("v.mp4", seconds=8, fps=4, size=(320, 180))
    torch_models = load_models(ModelSpec(encoder="lite", agent="similarity:384"), loaded_encoder=enc)
    index_paths([video], db=tmp_path / "torch.db", models=torch_models)
    index_paths([video], db=tmp_path / "onnx.db", models=onnx_models)
    feats = {}
    for name in ("torch", "onnx"):
        with Store(tmp_path / f"{name}.db") as store:
            store.check_encoder(onnx_enc.id)  # one encoder id for both runtimes
            row = store.find_video(video)
            assert row.agent_id == onnx_agent.id
            feats[name] = store.load_features(row.id)
    t, o = feats["torch"], feats["onnx"]
    assert len(t.x) == 8
    np.testing.assert_allclose(o.x, t.x, atol=2e-3)  # stored as float16
    np.testing.assert_allclose(o.z, t.z, atol=2e-3)
    question = ["what is the scene at the beginning of the video?"]
    s_torch = score_frames(t.z, t.x, enc.encode_texts(question))
    s_onnx = score_frames(t.z, t.x, onnx_enc.encode_texts(question))
    np.testing.assert_allclose(s_onnx, s_torch, rtol=1e-4, atol=1e-3)
    assert select_frames(s_onnx, 3).tolist() == select_frames(s_torch, 3).tolist()
