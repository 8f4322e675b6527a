"""What a folder can hold never hangs, kills or poisons ingestion (issue: reliability of the walk):
link loops, FIFOs, sockets, links out of the folder — for `index`, `index --watch` and the watch
inside `serve`. Each through the command as a user runs it (a new process, bounded in time: on
the code before this, the FIFO hung `index` forever and the loop ended in a traceback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


from conftest import pythonpath_with, write_test_video
from tspo_edge.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": pythonpath_with(ROOT)}


def hostile_folder(tmp_path: Path) -> Path:
    d = tmp_path / "D"
    d.mkdir()
    write_test_video(d / "v.mp4", seconds=2)
    os.symlink("l2.mp4", d / "l1.mp4")
    os.symlink("l1.mp4", d / "l2.mp4")
    os.mkfifo(d / "cam.mp4")
    os.symlink("/etc/hostname", d / "host.mp4")
    os.symlink(d / "nothing.mp4", d / "dangling.mp4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.mp4"))
    sock.close()
    return d


def warnings_of(stderr: str) -> dict[str, str]:
    return {Path(ln.split(": skipped")[0].removeprefix("warning: ")).name: ln
            for ln in stderr.splitlines() if ": skipped" in ln}


def test_index_skips_what_is_not_a_regular_file_in_the_folder(tmp_path):
    d, db = hostile_folder(tmp_path), tmp_path / "i.db"
    r = subprocess.run([sys.executable, "-m", "tspo_edge", "index", str(d), "--db", str(db), "--workers", "1"],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    w = warnings_of(r.stderr)
    assert set(w) == {"l1.mp4", "l2.mp4", "cam.mp4", "host.mp4", "dangling.mp4", "sock.mp4"}, r.stderr
    assert "FIFO" in w["cam.mp4"] and "socket" in w["sock.mp4"] and "outside" in w["host.mp4"]
    assert "loop" in w["l1.mp4"]
    with Store(db, readonly=True) as s:
        assert [(Path(v.path).name, v.status) for v in s.videos()] == [("v.mp4", "indexed")]


def test_a_fifo_named_on_the_command_line_is_skipped_not_missing(tmp_path):
    os.mkfifo(tmp_path / "cam.mp4")
    r = subprocess.run([sys.executable, "-m", "tspo_edge", "index", str(tmp_path / "cam.mp4"), "--db",
                        str(tmp_path / "i.db")], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert "cam.mp4: skipped: a FIFO" in r.stderr and "missing" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_the_watch_survives_hostile_entries_and_stops_on_sigterm(tmp_path):
    d, db = hostile_folder(tmp_path), tmp_path / "i.db"
    p = subprocess.Popen([sys.executable, "-m", "tspo_edge", "index", "--watch", str(d), "--db", str(db),
                          "--settle", "0.3"], cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True).start()

    def wait_for(cond, what, timeout=240):
        end = time.monotonic() + timeout
        while not cond():
            assert p.poll() is None, f"the watch died: {''.join(lines)[-3000:]}"
            assert time.monotonic() < end, f"timed out waiting for {what}: {''.join(lines)[-3000:]}"
            time.sleep(0.1)

    try:
        wait_for(lambda: any(ln.startswith("indexed ") for ln in lines), "the first video")
        # hostile entries appearing while it watches, then a real recording
        os.symlink("l4.mp4", d / "l3.mp4")
        os.symlink("l3.mp4", d / "l4.mp4")
        os.mkfifo(d / "cam2.mp4")
        write_test_video(d / "new.mp4", seconds=2, seed=4)
        wait_for(lambda: any(ln.startswith("indexed ") and "new.mp4" in ln for ln in lines), "the new recording")
        wait_for(lambda: {"l3.mp4", "cam2.mp4"} <= set(warnings_of("".join(lines))), "the new warnings")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    out = "".join(lines)
    assert rc == 0 and "Traceback" not in out, out[-3000:]
    with Store(db, readonly=True) as s:
        assert sorted(Path(v.path).name for v in s.videos()) == ["new.mp4", "v.mp4"]


def test_a_failing_watch_inside_serve_is_restarted_and_shown_by_health(tmp_path, lite_models):
    """serve's watch thread: a failure is one line, the watch is tried again, and /api/health says
    `failing` (and ok: false) until it runs."""
    from fastapi.testclient import TestClient

    from tspo_edge.index.watch import WatchService
    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.pipeline import index_videos
    from tspo_edge.serving.app import create_app

    d = tmp_path / "D"
    d.mkdir()
    db = tmp_path / "i.db"
    with Store(db) as s:
        index_videos(s, [write_test_video(tmp_path / "first.mp4", seconds=2)], lite_models())
    calls, errors, stop = [], [], threading.Event()

    def models():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("the models' folder is not mounted yet")
        return lite_models()

    svc = WatchService([d], db=db, models=models, settle=0.3, stop=stop, on_error=errors.append)
    app = create_app(db, lite_models(), load_answerer("none"), watch_status=svc.status)
    with TestClient(app, base_url="http://127.0.0.1:8008") as c:
        h = c.get("/api/health").json()
        assert h["watch"]["state"] == "starting"
        svc.start()
        end = time.monotonic() + 60
        seen_failing = False
        while time.monotonic() < end:
            h = c.get("/api/health").json()
            seen_failing |= h["watch"]["state"] == "failing" and h["ok"] is False and \
                "not mounted" in (h["watch"]["last_error"] or "")
            if h["watch"]["state"] == "running":
                break
            time.sleep(0.05)
        assert seen_failing and h["watch"]["state"] == "running" and h["ok"] is True, h
        assert h["watch"]["restarts"] == 2 and h["watch"]["failing_since"] is None
        write_test_video(d / "new.mp4", seconds=2, seed=2)
        end = time.monotonic() + 120
        while not any(v["name"] == "new.mp4" for v in c.get("/api/videos").json()["videos"]):
            assert time.monotonic() < end, "the restarted watch did not index the new recording"
            time.sleep(0.2)
    stop.set()
    svc.join(30)
    assert len(errors) == 2 and all("\n" not in e and "restarting" in e for e in errors), errors
    assert svc.status()["state"] == "stopped"
