"""The official agent reaches every command, through the command line (issue 10, item 7).

A TSPO-0.4B-shaped folder (a tiny CLIP with 768-wide projections plus `selector.*` tensors) is
given as `--encoder` and nothing else: index, ask (on an indexed and on a fresh index), eval
frames, train and export must all run its selector, and the event features they store must be
that selector's events of the stored embeddings. Then the same through the ONNX export
(`--model-dir`). Each command runs through typer's CliRunner on the installed app, as a user
runs it (models load from the folder; nothing is patched).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_test_video
from tiny_models import tiny_clip_folder
from tspo_edge.models.agent import load_agent
from tspo_edge.cli import app
from tspo_edge.models.encoders import load_encoder
from tspo_edge.storage.store import Store

QUESTION = "What colour dominates the start?"
# Features are stored as float16: 11 significant bits, so a stored value is within 2**-11 of
# its float32 original, relative. Comparisons against stored features allow a few such steps.
F16_REL = 2.0 ** -9


def run(*args, code: int = 0) -> str:
    """The CLI's stdout for `args`; fails with its whole output when the exit status is not `code`."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == code, f"exit {r.exit_code} for {args}:\n{r.output}\n{r.exception!r}"
    return r.stdout


def run_json(*args, code: int = 0) -> dict:
    out = run(*args, "--json", code=code)
    return json.loads(out[out.index("{"):])


def features(db, video):
    with Store(db, readonly=True) as s:
        return s.load_features(s.find_video(video).id)


def assert_events_of(agent, f) -> None:
    """Stored z equals agent.events(stored x), to float16 storage precision."""
    want = agent.events(f.x)
    tol = F16_REL * np.abs(want).max()
    assert np.abs(f.z - want).max() <= tol, (np.abs(f.z - want).max(), tol)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-models")
    videos = root / "videos"
    videos.mkdir()
    write_test_video(videos / "clip.mp4", seconds=4, fps=4, size=(64, 48), seed=1)
    write_test_video(videos / "other.mp4", seconds=3, fps=4, size=(64, 48), seed=2)
    return root


@pytest.fixture(scope="module")
def tspo(work):
    """(folder, official agent) of a TSPO-0.4B-shaped folder."""
    folder = tiny_clip_folder(work / "TSPO-0.4B", projection_dim=768, selector=True, seed=0)
    return folder, load_agent(folder)


@pytest.fixture(scope="module")
def indexed(work, tspo):
    """`index --encoder FOLDER` of the videos folder: (db, the --json summary). On the CPU in fp32,
    so that the ONNX runtime's features (CPU, fp32) can be compared with them on any machine."""
    folder, _ = tspo
    db = work / "index.db"
    return db, run_json("index", work / "videos", "--encoder", folder, "--db", db, "--device", "cpu")


@pytest.fixture(scope="module")
def exported(work, tspo):
    """`export --encoder FOLDER --out DIR` (no AGENT: the folder's selector): (DIR, manifest)."""
    folder, _ = tspo
    out = work / "edge"
    return out, run_json("export", "--encoder", folder, "--out", out)


def test_the_folder_is_tspo_shaped(tspo):
    folder, official = tspo
    assert official.dim == 768 and official.source.startswith("tspo-0.4b")
    assert load_encoder(str(folder)).dim == 768
    # a selector that is not the similarity agent, so the checks below can tell them apart
    assert official.id != load_agent("similarity:768").id


def test_index_runs_the_official_selector(work, tspo, indexed):
    folder, official = tspo
    db, summary = indexed
    assert summary["ok"] and summary["indexed"] == 2
    assert summary["agent_id"] == official.id
    assert summary["agent_source"].startswith("TSPO-0.4B")
    f = features(db, work / "videos" / "clip.mp4")
    assert f.video.agent_id == official.id and f.x.shape == (4, 768)
    assert_events_of(official, f)
    # ... and not the similarity agent's (z == x), which the old CLI stored
    gap, tol = float(np.abs(f.z - f.x).max()), F16_REL * float(np.abs(f.x).max())
    assert gap > 20 * tol, (gap, tol)


def test_ask_reports_the_official_agent(work, tspo, indexed):
    folder, official = tspo
    db, _ = indexed
    r = run_json("ask", work / "videos" / "clip.mp4", QUESTION, "--encoder", folder, "--mllm", "none", "--db", db)
    assert r["models"]["agent"] == official.id and not r["indexed_now"]
    assert 1 <= len(r["frames"]) <= 4


def test_ask_on_a_fresh_index_indexes_with_the_official_selector(work, tspo):
    folder, official = tspo
    db = work / "fresh.db"
    r = run_json("ask", work / "videos" / "other.mp4", QUESTION, "--encoder", folder, "--mllm", "none", "--db", db)
    assert r["indexed_now"] and r["models"]["agent"] == official.id
    f = features(db, work / "videos" / "other.mp4")
    assert f.video.agent_id == official.id
    assert_events_of(official, f)


def test_eval_frames_uses_the_official_selector(work, tspo):
    folder, official = tspo
    ann = work / "lvb_val.json"  # LongVideoBench's format, two questions on one video
    ann.write_text(json.dumps([
        {"video_id": "clip", "id": "clip_0", "video_path": "clip.mp4", "question": QUESTION,
         "question_wo_referring_query": QUESTION, "candidates": ["red", "green", "blue"], "correct_choice": 2,
         "duration": 4.0},
        {"video_id": "clip", "id": "clip_1", "video_path": "clip.mp4", "question": "What happens last?",
         "question_wo_referring_query": "What happens last?", "candidates": ["a", "b"], "correct_choice": 0,
         "duration": 4.0}]))
    db, out = work / "eval.db", work / "frame_idx.json"
    r = run_json("eval", "frames", ann, "--benchmark", "lvb", "--video-root", work / "videos", "--out", out,
                 "--frames", 2, "--encoder", folder, "--db", db)
    assert r["ok"] and r["written"] == 2
    assert r["agent_id"] == official.id and r["agent"].startswith("TSPO-0.4B")
    f = features(db, work / "videos" / "clip.mp4")
    assert f.video.agent_id == official.id
    assert_events_of(official, f)
    written = json.loads(out.read_text())
    assert [len(q["frame_idx"]) for q in written] == [2, 2]


def test_train_starts_from_the_official_selector(work, tspo):
    folder, official = tspo
    q = "<image>\nWhat colour dominates the video?\nA. red\nB. green\nC. blue"
    row = {"video": "clip.mp4", "original_question": q, "problem": "<image>\nWhat colour dominates the video?",
           "solution": "<answer>c</answer>", "type": "general"}
    data = work / "train.jsonl"
    data.write_text(json.dumps(row) + "\n")
    out = work / "run"
    r = CliRunner().invoke(app, [str(a) for a in (
        "train", data, "--videos", work / "videos", "--encoder", folder, "--db", work / "train.db",
        "--out", out, "--steps", 1, "--group", 2, "--lr", 1e-12, "--device", "cpu", "--json")])
    assert r.exit_code == 0, r.output
    assert "agent: TSPO-0.4B selector" in r.output  # the run's log names where the agent came from
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["steps"] == 1
    # one step at a negligible learning rate: the trained agent is still the selector, not similarity
    trained = load_agent(out / "agent")
    x = features(work / "train.db", work / "videos" / "clip.mp4").x
    np.testing.assert_allclose(trained.events(x), official.events(x), rtol=1e-4, atol=1e-4)


def test_export_writes_the_official_selector(tspo, exported):
    folder, official = tspo
    out, manifest = exported
    assert manifest["agent"]["id"] == official.id
    assert set(manifest["models"]) == {"agent", "image", "text"}
    assert (out / "agent.onnx").is_file() and (out / "manifest.json").is_file()


def test_onnx_runtime_index_and_ask_report_the_official_agent(work, tspo, indexed, exported):
    folder, official = tspo
    out, _ = exported
    db = work / "onnx.db"
    summary = run_json("index", work / "videos", "--model-dir", out, "--db", db)
    assert summary["ok"] and summary["agent_id"] == official.id
    torch_db, _ = indexed
    for name in ("clip.mp4", "other.mp4"):
        f, t = features(db, work / "videos" / name), features(torch_db, work / "videos" / name)
        assert f.video.agent_id == official.id and f.video.encoder_id == t.video.encoder_id
        assert_events_of(official, f)  # ONNX Runtime's events are the torch agent's
        # the same z as the torch runtime stored: within 1e-4 before storage, and float16 rounding
        # of two such neighbours differs by at most one step (2**-10 of the value)
        scale = float(np.abs(t.z).max())
        gap = float(np.abs(f.z - t.z).max())
        assert gap <= (1e-4 + 2.0 ** -10) * scale, (gap, scale)
    r = run_json("ask", work / "videos" / "clip.mp4", QUESTION, "--model-dir", out, "--mllm", "none", "--db", db)
    assert r["models"]["agent"] == official.id
    # an index built by the torch runtime is read by the onnx runtime (same encoder id)
    r = run_json("ask", work / "videos" / "clip.mp4", QUESTION, "--model-dir", out, "--mllm", "none",
                 "--db", torch_db)
    assert r["models"]["agent"] == official.id and not r["indexed_now"]


def test_model_dir_with_the_torch_runtime_is_refused(work, exported):
    out, _ = exported
    for cmd in (["index", work / "videos"], ["ask", work / "videos" / "clip.mp4", QUESTION, "--mllm", "none"]):
        r = CliRunner().invoke(app, [str(a) for a in (*cmd, "--model-dir", out, "--runtime", "torch",
                                                      "--db", work / "refused.db")])
        assert r.exit_code == 2, r.output
        assert "torch" in r.output
    assert not (work / "refused.db").exists()


def test_ask_with_another_agent_leaves_the_index_as_it_was(work, tspo, indexed):
    folder, official = tspo
    torch_db, _ = indexed
    db = work / "agents.db"
    shutil.copy(torch_db, db)
    video = work / "videos" / "clip.mp4"
    before = features(db, video)
    other = load_agent("similarity:768")
    r = run_json("ask", video, QUESTION, "--encoder", folder, "--agent", "similarity:768", "--mllm", "none",
                 "--db", db)
    assert r["models"]["agent"] == other.id
    after = features(db, video)
    assert after.video.agent_id == official.id
    np.testing.assert_array_equal(after.z, before.z)
    r = run_json("ask", video, QUESTION, "--encoder", folder, "--mllm", "none", "--db", db)
    assert r["models"]["agent"] == official.id
    info = run_json("info", "--db", db)
    agents = {v["path"]: v["agent_id"] for v in info["videos"]}
    assert agents == {str((work / "videos" / n).resolve()): official.id for n in ("clip.mp4", "other.mp4")}
