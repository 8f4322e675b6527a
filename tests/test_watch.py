"""Continuous ingestion: a rerun with nothing to do loads no model; `index --watch` indexes a
growing recording once, whole; marks removed files missing; records a corrupt file failed once;
stops cleanly between videos and on SIGTERM. Every wait is bounded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import Spy, agent_checkpoint, write_test_video
from tspo_edge.storage.store import Store

from tspo_edge.cli import app as cli_app
from tspo_edge.index.watch import watch

ROOT = Path(__file__).resolve().parents[1]
SETTLE = 1.5


def wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- a rerun with nothing to do -------------------------------------------------------------

def test_rerun_with_nothing_to_do_loads_no_model(tmp_path, cli_lite_encoder, monkeypatch):
    import tspo_edge.models.agent as agent_mod
    import tspo_edge.models as models_mod
    from tspo_edge.models.agent import TemporalAgent
    app = cli_app

    folder = tmp_path / "videos"
    folder.mkdir()
    vids = [write_test_video(folder / f"v{i}.mp4", seconds=2, seed=i) for i in range(2)]
    ckpt = agent_checkpoint(TemporalAgent(cli_lite_encoder.dim).eval(), tmp_path / "agent")
    db = tmp_path / "i.db"
    args = ["index", str(folder), "--db", str(db), "--agent", ckpt, "--json"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output

    enc, agent = Spy(models_mod.load_encoder), Spy(agent_mod.load_agent)
    monkeypatch.setattr(models_mod, "load_encoder", enc)
    monkeypatch.setattr(agent_mod, "load_agent", agent)

    def run() -> dict:
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout[r.stdout.index("{"):])

    out = run()
    assert (enc.calls, agent.calls) == ([], [])
    assert out["skipped"] == 2 and out["indexed"] == 0
    first_out = json.loads(first.stdout[first.stdout.index("{"):])
    assert (out["encoder_id"], out["agent_id"]) == (first_out["encoder_id"], first_out["agent_id"])

    # the agent checkpoint saved over (its files change): the models load, the events are recomputed
    time.sleep(0.01)
    for f in Path(ckpt).iterdir():
        os.utime(f)
    out = run()
    assert agent.calls == [ckpt] and len(enc.calls) == 1 and out["skipped"] == 2
    enc.calls.clear(), agent.calls.clear()
    assert run()["skipped"] == 2 and (enc.calls, agent.calls) == ([], [])  # recorded again: cheap again

    # a changed video loads them and is indexed again
    write_test_video(vids[1], seconds=3, seed=5)
    out = run()
    assert len(enc.calls) == 1 and out["indexed"] == 1 and out["skipped"] == 1


# ---- the watch --------------------------------------------------------------------------------

class Watching:
    """watch() in a thread; results collected; stopped (bounded) at the end."""

    def __init__(self, folder: Path, db: Path, models, **kw):
        self.results, self.stop, self.ready = [], threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.summary = None

        def run():
            try:
                self.summary = watch([folder], db=db, models=models, settle=kw.pop("settle", SETTLE),
                                     stop=self.stop, on_result=self.results.append, on_ready=self.ready.set, **kw)
            except BaseException as e:  # re-raised in the test
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.ready.is_set() or self.error, 60, "the watch to start")

    def of(self, path: Path) -> list[str]:
        key = str(path.resolve())
        return [r.status for r in self.results if r.path == key]

    def close(self, timeout: float = 120) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the watch did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def watched(tmp_path, lite_models):
    folder = tmp_path / "in"
    folder.mkdir()
    started = []

    def start(**kw) -> Watching:
        w = Watching(folder, tmp_path / "i.db", kw.pop("models", None) or lite_models(), **kw)
        started.append(w)
        return w

    yield folder, tmp_path / "i.db", start
    for w in started:
        if w.thread.is_alive():
            w.close()


def test_growing_recording_is_indexed_once_whole(watched, tmp_path):
    folder, db, start = watched
    data = write_test_video(tmp_path / "full.mp4", seconds=6, fps=10).read_bytes()
    w = start()
    rec = folder / "rec.mp4"
    parts = 6
    with open(rec, "wb") as f:  # a recorder appending: each part lands well inside the settle time
        for i in range(parts):
            f.write(data[i * len(data) // parts:(i + 1) * len(data) // parts])
            f.flush()
            time.sleep(0.3)
    wait_for(lambda: w.of(rec), 120, "the recording to be indexed")
    time.sleep(SETTLE + 1.0)  # nothing more happens to it
    w.close()
    assert w.of(rec) == ["indexed"]
    with Store(db, readonly=True) as s:
        rows = s.videos()
        assert [(Path(r.path).name, r.status, r.frame_count) for r in rows] == [("rec.mp4", "indexed", 6)]
        assert s.load_features(rows[0].id).x.shape[0] == 6 and rows[0].size == len(data)


def test_removed_file_is_marked_missing_and_restored_when_back(watched, tmp_path):
    folder, db, start = watched
    keep = write_test_video(folder / "keep.mp4", seconds=2)
    gone = write_test_video(folder / "gone.mp4", seconds=3, seed=1)
    backup = tmp_path / "backup.mp4"
    shutil.copy2(gone, backup)
    w = start()
    wait_for(lambda: w.of(keep) and w.of(gone), 120, "both videos to be indexed")
    gone.unlink()
    wait_for(lambda: "missing" in w.of(gone), 30, "the removed file to be marked missing")
    with Store(db, readonly=True) as s:
        assert s.find_video(gone).status == "missing" and s.find_video(keep).status == "indexed"
        assert [Path(r.path).name for r in s.videos(status="indexed")] == ["keep.mp4"]
    shutil.copy2(backup, gone)  # the same file back (same bytes, same mtime): restored, not decoded
    wait_for(lambda: "restored" in w.of(gone), 30, "the file to be restored")
    w.close()
    assert w.of(gone) == ["indexed", "missing", "restored"] and w.of(keep) == ["indexed"]
    with Store(db, readonly=True) as s:
        assert s.find_video(gone).status == "indexed" and s.find_video(gone).frame_count == 3


def test_corrupt_file_is_failed_once(watched, tmp_path, lite_models):
    folder, db, start = watched
    data = write_test_video(tmp_path / "full.mp4", seconds=4).read_bytes()
    bad = folder / "bad.mp4"
    bad.write_bytes(data[: len(data) // 2])  # truncated: never readable as it is
    w = start()
    wait_for(lambda: w.of(bad), 120, "the corrupt file to be tried")
    with Store(db, readonly=True) as s:
        first = s.find_video(bad)
    st = bad.stat()
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))  # an event, but the file did not change
    time.sleep(2 * SETTLE + 1.0)
    w.close()
    assert w.of(bad) == ["failed"] and str(bad.resolve()) in first.error
    # a restart does not try it again either
    w2 = start()
    time.sleep(SETTLE + 1.0)
    w2.close()
    assert w2.of(bad) == []
    with Store(db, readonly=True) as s:
        assert s.find_video(bad).indexed_at == first.indexed_at and s.find_video(bad).status == "failed"


def test_stop_finishes_the_video_in_flight_and_starts_no_other(tmp_path, lite_models):
    folder = tmp_path / "in"
    folder.mkdir()
    vids = [write_test_video(folder / f"v{i}.mp4", seconds=3, seed=i) for i in range(2)]
    stop, results = threading.Event(), []

    def progress(ev):
        if ev.kind == "frames":
            stop.set()  # as a signal handler would, mid-video

    summary = watch([folder], db=tmp_path / "i.db", models=lite_models(), settle=0.2, stop=stop,
                    progress=progress, on_result=results.append)
    assert [(Path(r.path).name, r.status, r.frames) for r in results] == [("v0.mp4", "indexed", 3)]
    assert summary.count("indexed") == 1
    with Store(tmp_path / "i.db", readonly=True) as s:
        assert [(Path(r.path).name, r.frame_count) for r in s.videos()] == [("v0.mp4", 3)]


def test_sigterm_stops_the_watch_command(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_test_video(folder / "v.mp4", seconds=2)
    db = tmp_path / "i.db"
    p = subprocess.Popen([sys.executable, "-m", "tspo_edge", "index", "--watch", str(folder), "--db", str(db),
                          "--settle", "0.5"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("indexed ") for line in lines), 240, "the video to be indexed")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    reader.join(5)
    assert rc == 0, "".join(lines)[-2000:]
    assert any(line.startswith("stopped: 1 indexed") for line in lines), lines
    with Store(db, readonly=True) as s:
        assert [r.status for r in s.videos()] == ["indexed"]


def test_serve_with_a_watch_finds_a_new_recording(tmp_path):
    """One process on the box: `serve --watch DIR` indexes a recording dropped into DIR while it
    serves, and the server lists it and finds its moments (search data refreshed by the watch)."""
    import socket
    import urllib.request

    folder = tmp_path / "in"
    folder.mkdir()
    db = tmp_path / "i.db"
    first = write_test_video(tmp_path / "first.mp4", seconds=2)
    r = CliRunner().invoke(cli_app, ["index", str(first), "--db", str(db)])
    assert r.exit_code == 0, r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "TSPO_EDGE_TOKEN"}
    p = subprocess.Popen([sys.executable, "-m", "tspo_edge", "serve", "--db", str(db), "--port", str(port),
                          "--mllm", "none", "--watch", str(folder), "--settle", "0.5"],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True)
    reader.start()

    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return json.loads(resp.read())

    try:
        wait_for(lambda: any(line.startswith("serving ") for line in lines), 240, "the server to start")
        write_test_video(folder / "new.mp4", seconds=3, seed=5)
        wait_for(lambda: any(line.startswith("watch: indexed ") for line in lines), 240, "the watch to index it")
        videos = get("/api/videos")
        rows = videos["videos"] if isinstance(videos, dict) else videos
        names = {Path(v["path"]).name for v in rows}
        assert names == {"first.mp4", "new.mp4"}, names
        hits = get("/api/search?q=what%20is%20shown&top=10")
        assert "new.mp4" in {Path(m["path"]).name for m in hits["moments"]}, hits
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
    reader.join(5)
