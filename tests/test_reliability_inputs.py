"""Issue 25 (arguments and questions): no argument, question or batch line loses data, hangs a
run or ends in a traceback.

Every numeric option of every command is given each extreme value of one table; the rows and
feature blobs of an indexed archive are compared before and after (an argument never changes a
stored row of an unchanged file), and an out-of-range value is refused with exit 2 and one error
line naming the option. Then the cases found one by one: a failed file is not retried until it
changes, batch lines each cost only themselves and come out in order, and the tracebacks of
export, eval, a hostile server and a damaged schema version are one-line errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import Spy, write_test_video
from tspo_edge.cli import app
from tspo_edge.errors import InputError
from tspo_edge.index import index_paths
from tspo_edge.pipeline import Sampling, index_video
from tspo_edge.storage.store import Store

EXTREMES = ["0", "-1", "1e-9", "1e9", str(2**63), str(2**64), "nan", "inf", "1e400"]
ALWAYS_REFUSED = {"-1", "1e9", str(2**63), str(2**64), "nan", "inf", "1e400"}

# command line (before the option) and its numeric options; {folder}, {video}, {db}, {tmp} filled in
COMMANDS = {
    "index": (["index", "{folder}", "--db", "{db}", "--workers", "1"],
              ["--fps", "--max-frames", "--settle", "--workers"]),
    "ask": (["ask", "{video}", "What is shown?", "--db", "{db}", "--mllm", "none"],
            ["--frames", "--timeout", "--max-new-tokens"]),
    "search": (["search", "a red car", "--db", "{db}"], ["--top", "--per-video", "--nms-seconds"]),
    "serve": (["serve", "--db", "{db}"], ["--port", "--threads", "--torch-threads", "--settle"]),
    "train": (["train", "{tmp}/no-such-data.jsonl", "--videos", "{folder}", "--db", "{db}", "--out", "{tmp}/run"],
              ["--steps", "--epochs", "--group", "--lr", "--grad-accum", "--save-every", "--seed"]),
    "eval needle": (["eval", "needle", "--out", "{tmp}/needle", "--db", "{db}", "--videos", "1", "--minutes", "0.1",
                     "--needles", "1", "--frames", "4", "--methods", "uniform", "--mllm", "none"],
                    ["--videos", "--minutes", "--seed", "--needles", "--video-fps", "--frames"]),
    "eval frames": (["eval", "frames", "{tmp}/mlvu.json", "--benchmark", "mlvu", "--out", "{tmp}/frames.json",
                     "--db", "{db}", "--video-root", "{folder}"], ["--frames", "--fps", "--max-frames"]),
    "export": (["export", "--out", "{tmp}/export"], ["--opset"]),
}
CASES = [(cmd, flag, value) for cmd, (_, flags) in COMMANDS.items() for flag in flags for value in EXTREMES]


def snapshot(db: Path) -> dict:
    """Every stored video row and its feature blobs, by path."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = {}
        for row in con.execute("SELECT v.*, f.* FROM videos v LEFT JOIN features f ON f.video_id = v.id "
                               "ORDER BY v.path"):
            out[row[1]] = hashlib.sha256(repr(row).encode()).hexdigest()
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, lite_models):
    """Two indexed clips and a corrupt file recorded as failed (a fresh copy per test)."""
    root = tmp_path_factory.mktemp("archive")
    folder = root / "videos"
    folder.mkdir()
    for i in range(2):
        write_test_video(folder / f"v{i}.mp4", seconds=3, fps=5, seed=i)
    (folder / "broken.mp4").write_bytes(b"not a video" * 200)
    db = root / "index.db"
    summary = index_paths([folder], db=db, models=lite_models(), sampling=Sampling())
    assert summary.count("indexed") == 2 and len(summary.failed) == 1
    return folder, db


@pytest.fixture
def arc(archive, tmp_path):
    """A private copy of the archive's index (the videos are shared, read only)."""
    folder, db = archive
    copy = tmp_path / "index.db"
    shutil.copy(db, copy)
    return folder, copy


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.lower().startswith("error")]


@pytest.fixture
def stubbed(monkeypatch):
    """The serve command's server does not start (its arguments are what is tested)."""
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **kw: None)


@pytest.mark.parametrize("cmd,flag,value", CASES, ids=[f"{c}{f}={v}" for c, f, v in CASES])
def test_no_argument_changes_a_stored_row(cmd, flag, value, arc, tmp_path, cli_lite_encoder, stubbed):
    folder, db = arc
    (tmp_path / "mlvu.json").write_text(json.dumps([{"video_name": "v0.mp4", "question": "What?",
                                                     "candidates": ["a", "b"], "answer": "a"}]))
    fill = {"folder": folder, "video": folder / "v0.mp4", "db": db, "tmp": tmp_path}
    prefix, _ = COMMANDS[cmd]
    before = snapshot(db)
    r = invoke(*[a.format(**fill) for a in prefix], flag, value)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert r.exit_code in (0, 1, 2), r.output
    after = snapshot(db)
    assert {k: after.get(k) for k in before} == before, f"{cmd} {flag} {value} changed a stored row"
    if value in ALWAYS_REFUSED:
        assert r.exit_code == 2, r.output
        lines = error_lines(r)
        assert len(lines) == 1 and flag in lines[0], r.stderr


def test_a_huge_frame_limit_is_refused_and_the_index_kept(arc, cli_lite_encoder):
    """Issue 25 item 1: it used to decode everything again, fail every file and drop its features."""
    folder, db = arc
    before = snapshot(db)
    r = invoke("index", folder, "--db", db, "--workers", "1", "--max-frames", "99999999999999999999")
    assert r.exit_code == 2 and "--max-frames" in error_lines(r)[0], r.output
    assert snapshot(db) == before


def test_a_failed_read_of_an_unchanged_file_keeps_its_row(arc, lite_models, monkeypatch):
    """A run whose reading fails (another sampling, a decoder fault) cannot cost a good video."""
    import tspo_edge.pipeline as pipeline

    folder, db = arc
    before = snapshot(db)

    def broken(*a, **kw):
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(pipeline, "encode_video", broken)
    with Store(db) as store:
        r = index_video(store, folder / "v0.mp4", lite_models(), Sampling(fps=2.0))
    assert r.status == "failed" and "OverflowError" in r.error
    assert snapshot(db) == before


@pytest.mark.parametrize("kw", [{"fps": 1e9}, {"fps": float("inf")}, {"max_frames": 2**63}])
def test_sampling_refuses_values_beyond_its_bounds(kw):
    with pytest.raises(InputError):
        Sampling(**kw)


def test_an_fps_above_the_native_rate_samples_every_frame(tmp_path):
    from tspo_edge.media import video

    clip = write_test_video(tmp_path / "c.mp4", seconds=2, fps=10)
    for decoder in video.available_decoders():
        if decoder == "nvdec":
            continue
        times = [t for c in video.iter_frames(clip, fps=1000, decoder=decoder, size=32) for t in c.times]
        assert len(times) == 20, decoder


# ---- ask: frames, question length, batches ---------------------------------------------------

def test_ask_frames_are_bounded_like_the_server(arc, cli_lite_encoder):
    folder, db = arc
    r = invoke("ask", folder / "v0.mp4", "What is shown?", "--db", db, "--mllm", "none", "--frames", "257")
    assert r.exit_code == 2 and "--frames must be a positive whole number (at most 256)" in error_lines(r)[0], r.output


def test_an_overlong_question_is_refused_in_one_line(arc, cli_lite_encoder):
    folder, db = arc
    before = snapshot(db)
    r = invoke("ask", folder / "v0.mp4", "Why? " + "A. x " * 2000, "--db", db, "--mllm", "none")
    assert r.exit_code == 2, r.output
    assert len(error_lines(r)) == 1 and "at most 4000" in r.stderr
    assert snapshot(db) == before


def test_every_batch_line_is_answered_in_order_and_a_bad_one_costs_itself(arc, tmp_path, cli_lite_encoder):
    folder, db = arc
    q = tmp_path / "q.jsonl"
    lines = [
        {"id": "first", "video": str(folder / "v0.mp4"), "question": "What is shown?"},
        {"id": "no-video", "question": "Which colour?"},
        {"id": "long-name", "video": "x" * 5000 + ".mp4", "question": "Why?"},
        "not json",
        {"id": "long-question", "video": str(folder / "v1.mp4"), "question": "Why? " * 1000},
        {"id": "last", "video": str(folder / "v1.mp4"), "question": "Is it short?"},
    ]
    q.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    before = snapshot(db)
    r = invoke("ask", "--batch", q, "--db", db, "--mllm", "none", "--json")
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, r.output
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 6
    assert [o.get("id") for o in out] == ["first", "no-video", "long-name", None, None, "last"]
    for n, o in enumerate(out, 1):
        if n in (1, 6):
            assert "error" not in o and o["frames"], o
        else:
            assert o["error"].startswith(f"{q}:{n}: ") and "\n" not in o["error"], o
    assert "VIDEO" in out[1]["error"] and "4000" in out[4]["error"]
    assert snapshot(db) == before


# ---- failed files: retried when they change ---------------------------------------------------

def test_a_failed_file_is_retried_only_when_it_changes(archive, tmp_path, cli_lite_encoder, monkeypatch):
    import tspo_edge.models as models_mod

    src, _ = archive
    folder = tmp_path / "videos"
    shutil.copytree(src, folder)
    db = tmp_path / "i.db"
    args = ["index", folder, "--db", db, "--workers", "1", "--json"]
    first = invoke(*args)
    assert first.exit_code == 1, first.output  # the broken file fails
    spy = Spy(models_mod.load_encoder)
    monkeypatch.setattr(models_mod, "load_encoder", spy)

    def run(*extra) -> dict:
        r = invoke(*args, *extra)
        assert r.exit_code == 1, r.output
        return json.loads(r.stdout[r.stdout.index("{"):])

    out = run()  # nothing changed: no model loads, the failure is still listed with its error
    assert spy.calls == [] and out["skipped"] == 2 and out["failed"] == 1
    failed = [f for f in out["files"] if f["status"] == "failed"]
    assert failed[0]["path"].endswith("broken.mp4") and "not a readable video" in failed[0]["error"]
    assert failed[0]["unchanged"] is True

    out = run("--retry-failed")  # asked to: tried again (and fails again)
    assert len(spy.calls) == 1 and out["failed"] == 1
    assert not [f for f in out["files"] if f["status"] == "failed"][0]["unchanged"]

    spy.calls.clear()
    (folder / "broken.mp4").write_bytes(b"still not a video" * 300)  # changed: tried without asking
    out = run()
    assert len(spy.calls) == 1 and out["failed"] == 1


# ---- the other tracebacks -----------------------------------------------------------------------

def test_export_onto_an_existing_file_is_one_line(tmp_path, cli_lite_encoder):
    target = tmp_path / "edge"
    target.write_text("a file, not a folder")
    r = invoke("export", "--out", target)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2 and len(error_lines(r)) == 1 and "not a folder" in r.stderr, r.output
    assert target.read_text() == "a file, not a folder"


def test_an_unknown_benchmark_is_one_line(arc, tmp_path):
    folder, db = arc
    ann = tmp_path / "a.json"
    ann.write_text("[]")
    r = invoke("eval", "frames", ann, "--benchmark", "bogus", "--out", tmp_path / "o.json", "--db", db)
    assert r.exit_code == 2 and len(error_lines(r)) == 1 and "bogus" in r.stderr, r.output


def test_a_server_answering_deeply_nested_json_is_one_line(arc):
    folder, _ = arc
    body = ("[" * 100_000 + "]" * 100_000).encode()

    class Nested(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Nested)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = invoke("ask", folder / "v0.mp4", "Why?", "--server", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2 and len(error_lines(r)) == 1 and "nested" in r.stderr, r.output


@pytest.mark.parametrize("version", ["x", "\u00b2", "1.0"])
def test_a_non_numeric_schema_version_is_one_line(arc, version):
    _, db = arc
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [version])
    con.commit()
    con.close()
    for args in (["info", "--db", db], ["search", "a car", "--db", db]):
        r = invoke(*args)
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        assert r.exit_code == 2 and len(error_lines(r)) == 1 and "schema_version" in r.stderr, r.output


# ---- options through the command line -----------------------------------------------------------

def test_ask_reads_numbered_options_and_warns_once_when_none_can_be_read(arc, cli_lite_encoder):
    folder, db = arc
    clip = folder / "v0.mp4"
    r = invoke("ask", clip, "What are the people doing? 1) riding bicycles 2) swimming 3) cooking",
               "--db", db, "--mllm", "none", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["stem"] == "What are the people doing?" and d["options"] == ["riding bicycles", "swimming", "cooking"]
    assert "warning" not in r.stderr
    r = invoke("ask", clip, "Which colour?\nA. red", "--db", db, "--mllm", "none")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "open question" in r.stderr
    r = invoke("ask", clip, "Which colour?", "--option", "red", "--option", "blue", "--db", db, "--mllm", "none",
               "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["options"] == ["red", "blue"], r.output


def test_running_out_of_memory_while_answering_is_one_line(arc, cli_lite_encoder, monkeypatch):
    """Under a memory cap (issue 25 item 7) the ask ends in one line, the index unchanged."""
    import tspo_edge.ask as ask_mod

    def no_memory(*a, **kw):
        raise MemoryError

    monkeypatch.setattr(ask_mod, "select_frames", no_memory)
    folder, db = arc
    before = snapshot(db)
    r = invoke("ask", folder / "v0.mp4", "Why?", "--db", db, "--mllm", "none", "--method", "bin-max")
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2 and len(error_lines(r)) == 1 and "out of memory" in r.stderr, r.output
    assert snapshot(db) == before
