"""`tspo-edge rm`, `prune` and `clip` as users run them, the server's clip route, and every
command's output in a pipe (no box tables, no path wrapped or cut)."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import pythonpath_with, write_test_video
from tspo_edge.cli import app
from tspo_edge.media.clip import parse_time
from tspo_edge.errors import InputError
from tspo_edge.index.console import OutputConsole, print_table
from tspo_edge.pipeline import index_videos
from tspo_edge.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
BOX = set("┏┓┗┛┃━┡┩│─└┘┌┐├┤┼╇╈")
LONG = "a_folder_name_long_enough_to_push_every_path_in_it_well_past_eighty_columns_of_a_terminal"


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def err_lines(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory, lite_models):
    """Two short videos under a long folder name, indexed with the lite encoder (no search data yet)."""
    root = tmp_path_factory.mktemp("commands")
    folder = root / LONG
    folder.mkdir()
    paths = [write_test_video(folder / "front_door_recording.mp4", seconds=3, fps=10),
             write_test_video(folder / "driveway_recording.mp4", seconds=3, fps=10, seed=1)]
    with Store(root / "index.db") as store:
        assert [r.status for r in index_videos(store, paths, lite_models())] == ["indexed", "indexed"]
    return root / "index.db", paths


@pytest.fixture
def archive(built, tmp_path):
    """A copy of the built index for one test: (db, [front door, driveway] paths)."""
    db, paths = built
    shutil.copy(db, tmp_path / "index.db")
    return tmp_path / "index.db", paths


def video_ids(db: Path) -> dict[str, int]:
    r = run("info", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    return {v["path"]: v["id"] for v in json.loads(r.stdout)["videos"]}


# ---------------------------------------------------------------- rm

def test_rm_drops_the_video_from_info_search_and_features_and_ask_indexes_it_again(archive, cli_lite_encoder):
    db, (door, drive) = archive
    before = run("search", "a door", "--db", db, "--json")
    assert before.exit_code == 0, before.output
    assert {m["path"] for m in json.loads(before.stdout)["moments"]} == {str(door), str(drive)}
    door_id = video_ids(db)[str(door)]

    r = run("rm", door, "--db", db)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"removed {door}"]
    assert str(door) not in video_ids(db)
    with sqlite3.connect(db) as c:  # features and search data gone with the row
        assert c.execute("SELECT COUNT(*) FROM features WHERE video_id = ?", [door_id]).fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM search_segments WHERE video_id = ?", [door_id]).fetchone()[0] == 0
    after = run("search", "a door", "--db", db, "--json")
    assert after.exit_code == 0, after.output
    assert {m["path"] for m in json.loads(after.stdout)["moments"]} == {str(drive)}
    assert door.exists()  # the file itself is never touched

    # asking about it again treats it as any new file: indexed first, then answered
    ask = run("ask", door, "what is at the door?", "--mllm", "none", "--db", db)
    assert ask.exit_code == 0, ask.output
    assert "indexing" in ask.stderr and "moments:" in ask.stdout
    assert str(door) in video_ids(db)


def test_rm_by_id_and_a_name_not_in_the_index(archive):
    db, (door, drive) = archive
    ids = video_ids(db)
    r = run("rm", str(ids[str(drive)]), "nowhere.mp4", "--db", db)
    assert r.exit_code == 1, r.output  # one of two not found: a partial failure
    assert r.stdout.splitlines() == [f"removed {drive}"]
    assert err_lines(r) == [f"warning: nowhere.mp4: not in the index {db}"]
    assert list(video_ids(db)) == [str(door)]

    r = run("rm", "nowhere.mp4", "--db", db)
    assert r.exit_code == 1 and len(err_lines(r)) == 1 and r.stdout == ""
    assert list(video_ids(db)) == [str(door)]


def test_rm_a_folder_removes_the_videos_under_it(archive):
    db, (door, drive) = archive
    r = run("rm", door.parent, "--db", db, "--json")
    assert r.exit_code == 0, r.output
    assert {v["path"] for v in json.loads(r.stdout)["removed"]} == {str(door), str(drive)}
    assert video_ids(db) == {}


def test_rm_without_an_index_is_one_line(tmp_path):
    r = run("rm", "x.mp4", "--db", tmp_path / "none.db")
    assert r.exit_code == 2 and err_lines(r) == [f"error: {tmp_path / 'none.db'}: no such index"]
    assert not (tmp_path / "none.db").exists()


# ---------------------------------------------------------------- prune

def _fake_index(db: Path, paths: list[Path]) -> None:
    """An index of `paths` with made-up features (prune reads no features)."""
    rng = np.random.default_rng(0)
    with Store(db) as store:
        for p in paths:
            x = rng.standard_normal((4, 8)).astype(np.float32)
            st = p.stat()
            store.put_video(path=p, size=st.st_size, mtime=st.st_mtime, fingerprint="f", times=np.arange(4.0),
                            x=x, z=x, encoder_id="test-encoder", agent_id="test-agent")


def _rows(db: Path):
    with sqlite3.connect(db) as c:
        return (c.execute("SELECT * FROM videos ORDER BY id").fetchall(),
                c.execute("SELECT video_id FROM features ORDER BY video_id").fetchall())


def test_prune_dry_run_changes_nothing_then_prune_removes_the_gone(tmp_path):
    keep, deleted, missing = (tmp_path / n for n in ("keep.mp4", "deleted.mp4", "missing.mp4"))
    for p in (keep, deleted, missing):
        p.write_bytes(b"not decoded by prune")
    db = tmp_path / "index.db"
    _fake_index(db, [keep, deleted, missing])
    with Store(db) as store:
        store.mark_missing(missing)  # as `index --watch` records a removed file
    deleted.unlink()
    before = _rows(db)

    r = run("prune", "--dry-run", "--db", db)
    assert r.exit_code == 0, r.output
    assert sorted(r.stdout.splitlines()) == [f"would remove {deleted} (no such file)",
                                             f"would remove {missing} (marked missing)"]
    assert _rows(db) == before

    r = run("prune", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    assert sorted(v["path"] for v in json.loads(r.stdout)["videos"]) == [str(deleted), str(missing)]
    videos, features = _rows(db)
    assert [v[1] for v in videos] == [str(keep)] and len(features) == 1
    assert missing.exists()  # files are never touched

    r = run("prune", "--db", db)
    assert r.exit_code == 0 and r.stdout == "" and "0 videos removed" in r.stderr


# ---------------------------------------------------------------- clip

def _frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times, frames) of every decoded frame, times from the start of the stream."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        fr = list(c.decode(s))
    return (np.array([float((f.pts - start) * s.time_base) for f in fr]),
            np.stack([f.to_ndarray(format="rgb24") for f in fr]))


def _source_time(frame: np.ndarray, times: np.ndarray, frames: np.ndarray) -> float:
    """The time of the source frame `frame` shows (each test frame has its own colour)."""
    diff = np.abs(frames.astype(np.int16) - frame.astype(np.int16)).mean(axis=(1, 2, 3))
    return float(times[int(np.argmin(diff))])


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_clip_stream_copy_plays_and_starts_at_the_keyframe_before_at(make_video, tmp_path, codec):
    src = make_video("cam.mp4", seconds=8, fps=10, codec=codec, gop=10)  # a keyframe every second (or more)
    out = tmp_path / "clip.mp4"
    r = run("clip", src, "--at", "00:03.5", "--seconds", "2", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    assert 2.5 - 1e-6 <= c["start"] <= 3.5 and not c["reencoded"]
    times, frames = _frames(out)
    src_times, src_frames = _frames(src)
    first = _source_time(frames[0], src_times, src_frames)
    assert first == pytest.approx(c["start"], abs=0.051) and first <= 3.5
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert times[-1] + 0.1 == pytest.approx(5.5 - c["start"], abs=0.35)  # from the keyframe to --at + --seconds
    assert c["duration"] == pytest.approx(times[-1] + 0.1, abs=0.11)  # the length it reports is the clip's


def test_clip_reencode_starts_exactly_at_at(make_video, tmp_path):
    src = make_video("cam.mp4", seconds=8, fps=10, gop=30)
    out = tmp_path / "exact.mkv"
    r = run("clip", src, "--at", "3.5", "--seconds", "2", "--reencode", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{out}: 00:03.5 to 00:05.5 of {src}")
    times, frames = _frames(out)
    src_times, src_frames = _frames(src)
    assert _source_time(frames[0], src_times, src_frames) == pytest.approx(3.5)
    assert len(times) == 20 and times[-1] == pytest.approx(1.9)


@pytest.mark.parametrize("reencode", [False, True])
def test_clip_near_the_end_of_an_mpeg_ts_file(make_video, tmp_path, reencode):
    """MPEG-TS has no keyframe index: a seek lands past the time asked for, so the cut seeks further back."""
    src = make_video("cam.ts", seconds=6, fps=10, gop=20)
    out = tmp_path / "end.mp4"
    r = run("clip", src, "--at", "5.85", "--seconds", "3", "-o", out, "--json", *(["--reencode"] if reencode else []))
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    times, frames = _frames(out)
    src_times, src_frames = _frames(src)
    first = _source_time(frames[0], src_times, src_frames)
    if reencode:  # the frame on screen at 5.85 s is the one shown from 5.8 s
        assert c["start"] == 5.85 and first == pytest.approx(5.8) and len(times) == 2
    else:
        assert first == pytest.approx(c["start"], abs=0.051) and first <= 5.85 and c["end"] <= 6.0 + 1e-6


def test_clip_past_the_end_is_one_line_and_writes_nothing(make_video, tmp_path):
    src = make_video("cam.mp4", seconds=4, fps=10)
    r = run("clip", src, "--at", "1:00", "-o", tmp_path / "late.mp4")
    assert r.exit_code == 2
    assert err_lines(r) == [f"error: {src}: 01:00 is past the end of the video (00:04)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.mp4"]  # no clip, no temporary file


def test_clip_never_overwrites_without_force(make_video, tmp_path):
    src = make_video("cam.mp4", seconds=4, fps=10)
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"the user's file")
    r = run("clip", src, "--at", "1", "-o", out)
    assert r.exit_code == 2 and err_lines(r) == [f"error: {out}: already exists (--force replaces it)"]
    assert out.read_bytes() == b"the user's file"
    r = run("clip", src, "--at", "1", "--seconds", "1", "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert len(_frames(out)[0]) >= 10


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_clip_of_no_length_is_one_line_and_writes_nothing(seconds, make_video, tmp_path):
    """The clip's length is checked in one place, cut_clip (cli.py had its own positive() before it)."""
    src = make_video("cam.mp4", seconds=2, fps=10)
    r = run("clip", src, "--at", "0", "--seconds", seconds, "-o", tmp_path / "c.mp4")
    assert r.exit_code == 2 and err_lines(r) == [f"error: {src}: a clip must last more than 0 seconds, not {float(seconds)}"]
    assert not (tmp_path / "c.mp4").exists()


@pytest.mark.parametrize("text, seconds", [("03:09", 189), ("1:02:03", 3723), ("189", 189), ("189.5", 189.5),
                                           ("3:09.5", 189.5), ("0:00:02", 2)])
def test_time_formats(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "3:75", "1:75:00", "-3", "3m", "1:2:3:4", "nan"])
def test_bad_times_are_one_line_errors(text, make_video, tmp_path):
    with pytest.raises(InputError):
        parse_time(text)
    r = run("clip", make_video("cam.mp4", seconds=2), "--at", text, "-o", tmp_path / "c.mp4")
    assert r.exit_code == 2 and len(err_lines(r)) == 1 and err_lines(r)[0].startswith("error: --at ")


# ---------------------------------------------------------------- the server's clip route

def test_server_clip_is_an_mp4_attachment(built, lite_models, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.serving.app import create_app

    db, (door, _) = built
    shutil.copy(db, tmp_path / "index.db")
    app_ = create_app(tmp_path / "index.db", lite_models(), load_answerer("none"), refresh_search=False)
    vid = video_ids(tmp_path / "index.db")[str(door)]
    with TestClient(app_, base_url="http://127.0.0.1:8008") as c:
        r = c.get(f"/api/videos/{vid}/clip", params={"t": 1.0, "seconds": 1.5})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "video/mp4"
        assert r.headers["content-disposition"].startswith("attachment;")
        assert 'filename="front_door_recording_00-00.mp4"' in r.headers["content-disposition"]  # the keyframe at 0
        (tmp_path / "got.mp4").write_bytes(r.content)
        times, _ = _frames(tmp_path / "got.mp4")
        assert len(times) >= 15
        for params, status in (({"t": 1, "seconds": 301}, 422), ({"t": 60, "seconds": 1}, 422),
                               ({"t": -1}, 422), ({"t": "x"}, 422)):
            bad = c.get(f"/api/videos/{vid}/clip", params=params)
            assert bad.status_code == status, bad.text
            assert list(bad.json()) == ["error"] and "\n" not in bad.text
        assert c.get("/api/videos/999/clip", params={"t": 1}).status_code == 404
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("tspo-edge-clip-*")
                if p.stat().st_mtime > (tmp_path / "got.mp4").stat().st_mtime - 60]


def test_web_page_has_a_save_clip_button_without_inline_script():
    js = (ROOT / "tspo_edge" / "serving" / "web" / "app.js").read_text()
    html = (ROOT / "tspo_edge" / "serving" / "web" / "index.html").read_text()
    assert "/clip?t=" in js and "save clip" in js
    assert " onclick=" not in html and "setAttribute(\"style\"" not in js


# ---------------------------------------------------------------- output in a pipe

def _no_boxes_and_whole(text: str, path: Path) -> None:
    assert not BOX & set(text), text
    assert any(str(path) in line for line in text.splitlines()), text  # the path whole on one line
    assert "…" not in text


def test_info_in_a_pipe_is_tab_separated(archive):
    db, (door, drive) = archive
    assert len(str(door)) > 80
    r = run("info", "--db", db)  # CliRunner's stdout is not a terminal
    assert r.exit_code == 0, r.output
    _no_boxes_and_whole(r.stdout, door)
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert rows[0] == ["id", "path", "duration", "frames", "status", "agent", "error"]
    assert sorted(row[1] for row in rows[1:]) == sorted([str(door), str(drive)])
    assert all(len(row) == 7 for row in rows)
    assert not BOX & set(r.stderr) and f"{db}: 2 videos" in r.stderr  # the title goes to stderr


def test_search_and_ask_in_a_pipe(archive, tmp_path, cli_lite_encoder):
    db, (door, _) = archive
    r = run("search", "a door", "--db", db)
    assert r.exit_code == 0, r.output
    _no_boxes_and_whole(r.stdout, door)
    (tmp_path / LONG).mkdir()
    new = write_test_video(tmp_path / LONG / "porch_recording.mp4", seconds=2, fps=10)
    r = run("ask", new, "what is at the door?", "--mllm", "none", "--db", db)
    assert r.exit_code == 0, r.output
    assert not BOX & set(r.output) and "…" not in r.output
    assert f"indexing {new} first" in r.stderr  # the line naming a long path is not wrapped


def test_index_in_a_pipe_prints_plain_progress_and_summary(archive, tmp_path, cli_lite_encoder):
    db, _ = archive
    (tmp_path / LONG).mkdir()
    other = write_test_video(tmp_path / LONG / "garden_recording.mp4", seconds=2, fps=10)
    r = run("index", other, "--db", db, "--workers", "1")
    assert r.exit_code == 0, r.output
    _no_boxes_and_whole(r.stderr, db)  # progress and the summary go to stderr, plain
    summary = [ln.split("\t") for ln in r.stderr.splitlines() if "\t" in ln]
    assert summary[0][:3] == ["indexed", "events recomputed", "skipped"] and summary[1][0] == "1"
    assert r.stdout == ""


def test_info_through_a_real_pipe(archive, tmp_path):
    db, (door, _) = archive
    env = {**os.environ, "PYTHONPATH": pythonpath_with(ROOT), "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    r = subprocess.run([sys.executable, "-m", "tspo_edge", "info", "--db", str(db)], env=env, cwd=tmp_path,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _no_boxes_and_whole(r.stdout, door)
    assert r.stdout.splitlines()[0].split("\t")[:2] == ["id", "path"]
    assert not BOX & set(r.stderr) and max(map(len, r.stderr.splitlines())) > 80  # a long line kept whole


def test_progress_and_tables_on_a_non_terminal_are_never_cut():
    pytest.importorskip("torch")
    from rich.table import Table

    from tspo_edge.train.progress import TrainProgress

    buf = io.StringIO()
    console = OutputConsole(file=buf)
    with TrainProgress(console) as progress:
        progress({"step": 1, "R_A": 0.5, "R_T": 0.25, "grad_norm": 1.5, "entropy": 4.5, "lr": 5e-4, "tau": 0.0175,
                  "samples_per_s": 0.2}, 2)
    assert "0.2 samples/s" in buf.getvalue() and "…" not in buf.getvalue()
    t = Table(title="needle benchmark", caption="encoder lite")
    t.add_column("method")
    t.add_column("hit %")
    t.add_row("[bold]agent[/]", "12.5")
    buf = io.StringIO()
    print_table(OutputConsole(file=buf), t)
    assert buf.getvalue().splitlines() == ["needle benchmark", "encoder lite", "method\thit %", "agent\t12.5"]


def test_save_clip_button_downloads_a_clip_under_a_strict_csp(built, lite_models, lite_encoder, tmp_path):
    """The page's button in a real headless browser, with the Content-Security-Policy the server
    is to send (`default-src 'self'`): the download is an MP4 that decodes; the player is left alone."""
    chromium = os.environ.get("TSPO_EDGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    from conftest import served
    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.serving.app import create_app

    db, (door, _) = built
    shutil.copy(db, tmp_path / "index.db")
    app_ = create_app(tmp_path / "index.db", lite_models(), load_answerer("lite", encoder=lite_encoder))

    def with_csp(route):
        resp = route.fetch()
        route.fulfill(response=resp, headers={**resp.headers, "content-security-policy": "default-src 'self'"})

    with served(app_) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # index.html's own <style> and style attribute are refused by this policy (the page's, not
            # the button's): anything else refused -- a script, a handler, a style set from app.js -- fails
            page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text and not (
                m.text.startswith("Applying inline style") and m.location.get("url") == url + "/") else None)
            page.route(url + "/", with_csp)
            page.goto(url + "/")
            page.fill("#q", "a door")
            page.click("#search-form button")
            button = page.locator("#results .moment .save-clip").first
            button.wait_for()
            with page.expect_download() as info:
                button.click()
            d = info.value
            assert d.suggested_filename.endswith(".mp4")
            d.save_as(tmp_path / "saved.mp4")
            assert len(_frames(tmp_path / "saved.mp4")[0]) >= 10
            assert page.locator("#player").get_attribute("data-video") is None  # the click saved, not played
            assert page.locator("#error").inner_text() == ""
            assert not errors, errors
        finally:
            browser.close()
