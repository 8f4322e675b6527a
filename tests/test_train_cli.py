"""`tspo-edge train` end to end on tiny generated videos (lite encoder and answerer), and
the official TSPO-0.4B layout written from a tiny random CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tspo_edge.cli import app
from tspo_edge.models.agent import load_agent

from tiny_models import tiny_clip_folder


def _rows(names, kinds):
    q = "<image>\nWhat colour dominates the video?\nA. red\nB. green\nC. blue"
    return "".join(json.dumps({"video": n, "original_question": q, "problem": "<image>\nWhat colour dominates the video?",
                               "solution": "<answer>c</answer>", "type": k}) + "\n" for n, k in zip(names, kinds))


def test_train_cli_end_to_end_and_resume(tmp_path, make_video, cli_lite_encoder):
    for i in range(3):
        make_video(f"v{i}.mp4", seconds=4, fps=4, size=(64, 48), seed=i)
    data = tmp_path / "data.jsonl"
    data.write_text(_rows(["v0.mp4", "v1.mp4", "gone.mp4", "v2.mp4"], ["specific", "general", "general", "specific"]))
    out, db = tmp_path / "run", tmp_path / "index.db"
    base = ["train", str(data), "--videos", str(tmp_path), "--db", str(db), "--out", str(out),
            "--group", "2", "--save-every", "1", "--seed", "3", "--device", "cpu", "--json"]
    r = CliRunner().invoke(app, base + ["--steps", "1"])
    assert r.exit_code == 1, r.output  # rows of the missing video skipped: partial
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["steps"] == 1 and summary["rows"] == 3 and summary["missing_videos"][0].endswith("gone.mp4")
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1]
    for key in ("R_A", "R_T", "reward_mean", "reward_std", "loss", "tau", "entropy", "samples_per_s", "lr"):
        assert key in log[0]
    assert (out / "train.png").stat().st_size > 5000
    assert (out / "checkpoints" / "step-000001" / "trainer.pt").is_file()
    agent = load_agent(out / "agent")
    assert agent.dim == cli_lite_encoder.dim
    # the data's videos were indexed once; a second run does not decode them for features again
    from tspo_edge.storage.store import Store

    with Store(db, readonly=True) as s:
        stamps = {v.path: v.indexed_at for v in s.videos()}
    assert len(stamps) == 3
    r = CliRunner().invoke(app, base + ["--steps", "2", "--resume"])
    assert r.exit_code == 1, r.output
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1, 2]
    assert (out / "checkpoints" / "step-000002" / "agent.safetensors").is_file()
    with Store(db, readonly=True) as s:
        assert {v.path: v.indexed_at for v in s.videos()} == stamps
    # strict: the missing video is an error naming file and line
    r = CliRunner().invoke(app, base + ["--steps", "1", "--strict"])
    assert r.exit_code == 2 and f"{data}:3: video not found" in r.output.replace("\n", "")


def test_train_cli_needs_data_or_toy(tmp_path):
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--toy" in r.output


def test_official_layout_from_tiny_clip(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tspo_edge.train.official import is_clip_vit_l14, save_official

    clip = transformers.CLIPModel.from_pretrained(tiny_clip_folder(tmp_path / "clip", projection_dim=16, selector=False))
    assert not is_clip_vit_l14(tmp_path / "clip")
    big = json.loads((tmp_path / "clip" / "config.json").read_text())
    big["vision_config"].update(hidden_size=1024, patch_size=14, num_hidden_layers=24)
    big["projection_dim"] = 768
    (tmp_path / "l14").mkdir()
    (tmp_path / "l14" / "config.json").write_text(json.dumps(big))
    assert is_clip_vit_l14(tmp_path / "l14")

    agent = load_agent("similarity:16")
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    out = save_official(agent, tmp_path / "clip", tmp_path / "official")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("selector.temporal.Self_q") for k in keys)
    assert any(k.startswith("vision_model.") for k in keys) and any(k.startswith("text_model.") for k in keys)
    again = load_agent(out)  # our loader reads the official layout (selector.*)
    for a, b in zip(agent.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    reloaded = transformers.CLIPModel.from_pretrained(str(out))  # the CLIP part is intact
    for (k, a), b in zip(clip.state_dict().items(), reloaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    x = np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32)
    np.testing.assert_allclose(again.events(x), agent.events(x), rtol=1e-6, atol=1e-6)


def test_train_cli_from_precomputed_features(tmp_path, cli_lite_encoder):
    from tspo_edge.train.events import save_features

    rng = np.random.default_rng(0)
    table = {f"clip{i}": (np.arange(12, dtype=np.float64), rng.normal(size=(12, cli_lite_encoder.dim)).astype(np.float32))
             for i in range(3)}
    feats = save_features(tmp_path / "feats.npz", table, encoder_id=cli_lite_encoder.id)
    data = tmp_path / "data.jsonl"
    rows = [json.loads(l) for l in _rows(["clip0", "clip1", "clip9"], ["general", "specific", "general"]).splitlines()]
    rows[0]["span"] = [3, 7]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    base = ["train", str(data), "--features", str(feats), "--out", str(out), "--group", "2", "--seed", "1",
            "--device", "cpu", "--steps", "2", "--json"]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 1, r.output          # clip9 is not in the file: its row skipped, partial
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["steps"] == 2 and summary["rows"] == 2 and summary["missing_videos"] == ["clip9"]
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(x["R_T"] is not None for x in log)          # span row and specific row both get R_T
    assert load_agent(out / "agent").dim == cli_lite_encoder.dim
    r = CliRunner().invoke(app, base[:-1] + ["--mllm", "none"])
    assert r.exit_code == 2 and "only --mllm lite" in r.output.replace("\n", "")
    r = CliRunner().invoke(app, ["train", str(data), "--features", str(tmp_path / "gone.npz"), "--out", str(out)])
    assert r.exit_code == 2 and "gone.npz: no such feature file" in r.output.replace("\n", "")
