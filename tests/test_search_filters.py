"""search's filters: --in FOLDER, --since/--until (the recording time: the container's
creation_time, else the file's mtime), the relevance floor (--min-score, default s>=0), the header
line and --paths, through the CLI and /api/search; the library's answer with filters is still
the brute-force answer over the videos the filters let through."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import datetime, timezone

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli import app as cli_app
from tspo_edge.storage import search as S
from tspo_edge.media import video
from tspo_edge.models.mllm import load_answerer
from tspo_edge.pipeline import index_videos
from tspo_edge.scoring import score_frames
from tspo_edge.storage.search_filters import make_filters, parse_when
from tspo_edge.serving.app import create_app
from tspo_edge.storage.store import SCHEMA_VERSION, Store

LOCAL = "http://127.0.0.1:8008"
Q = "a red truck at the gate"
ANY = ["--min-score", "-1000"]  # no floor to speak of: the time and folder filters alone decide


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def local(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def write_clip(path, creation_time: str | None = None, seed: int = 0, n: int = 10):
    """A 2 s clip (5 fps); `creation_time` written into the container's metadata as cameras do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        if creation_time:
            c.metadata["creation_time"] = creation_time
        s = c.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            img = base.copy()
            img[..., i % 3] = i * 25
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def lines_of_error(r) -> list[str]:
    return [x for x in r.stderr.splitlines() if x.strip()]


def one_line_exit_2(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.stdout == ""
    errs = lines_of_error(r)
    assert len(errs) == 1 and errs[0].startswith("error: "), errs
    return errs[0]


# ---------------------------------------------------------------- an archive of real clips

@pytest.fixture(scope="module")
def clips(tmp_path_factory, lite_models):
    """dashcam/a.mp4 (recorded 2026-11-05), dashcam/b.mp4 (2026-10-01), phone/c.mp4 (no
    creation_time; its mtime set to 2026-11-20 12:00 local before indexing), indexed (lite)."""
    root = tmp_path_factory.mktemp("filters")
    a = write_clip(root / "dashcam" / "a.mp4", "2026-11-05T10:00:00Z", seed=1)
    b = write_clip(root / "dashcam" / "b.mp4", "2026-10-01T10:00:00Z", seed=2)
    c = write_clip(root / "phone" / "c.mp4", None, seed=3)
    os.utime(c, (local("2026-11-20T12:00"), local("2026-11-20T12:00")))
    db = root / "index.db"
    with Store(db) as store:
        assert [r.status for r in index_videos(store, [a, b, c], lite_models())] == ["indexed"] * 3
    return {"root": root, "db": db, "a": a, "b": b, "c": c}


def found(clips, *args, db=None):
    """The set of video names `search --paths` prints (no floor), and the run."""
    r = CliRunner().invoke(cli_app, ["search", Q, "--db", str(db or clips["db"]), "--paths", *ANY, *args])
    assert r.exit_code == 0, r.output
    return {os.path.basename(p) for p in r.stdout.splitlines()}, r


def test_recording_time_is_the_containers_creation_time_else_the_mtime(clips):
    assert video.probe(clips["a"]).creation_time == utc("2026-11-05T10:00:00")
    assert video.probe(clips["c"]).creation_time is None
    with Store(clips["db"], readonly=True) as store:
        assert store.meta("schema_version") == str(SCHEMA_VERSION) == "4"
        rec = {os.path.basename(v.path): v.recorded_at for v in store.videos()}
        readable = {os.path.basename(r["path"]): r["recorded_at"] for r in store.db["videos_readable"].rows}
    assert rec == {"a.mp4": utc("2026-11-05T10:00:00"), "b.mp4": utc("2026-10-01T10:00:00"),
                   "c.mp4": local("2026-11-20T12:00")}
    assert readable["a.mp4"] == "2026-11-05T10:00:00.000Z"


def test_worker_processes_store_the_creation_time_too(clips, lite_models, tmp_path):
    """index's default on a machine with several cores: decoding processes send the probe's facts."""
    from tspo_edge.index.parallel import index_paths_parallel

    db = tmp_path / "parallel.db"
    summary = index_paths_parallel([clips["a"], clips["c"]], db=db, models=lite_models(), workers=2)
    assert summary.count("indexed") == 2
    with Store(db, readonly=True) as store:
        rec = {os.path.basename(v.path): v.recorded_at for v in store.videos()}
    assert rec == {"a.mp4": utc("2026-11-05T10:00:00"), "c.mp4": local("2026-11-20T12:00")}


def test_since_and_until_filter_by_recording_time(clips, cli_lite_encoder):
    assert found(clips)[0] == {"a.mp4", "b.mp4", "c.mp4"}
    assert found(clips, "--since", "2026-11-01")[0] == {"a.mp4", "c.mp4"}
    assert found(clips, "--until", "2026-11-01")[0] == {"b.mp4"}
    assert found(clips, "--since", "2026-11-10")[0] == {"c.mp4"}            # the mtime, for want of a tag
    assert found(clips, "--since", "2026-11-05T09:00Z", "--until", "2026-11-05T11:00Z")[0] == {"a.mp4"}
    assert found(clips, "--until", "2026-11-05T09:00Z")[0] == {"b.mp4"}     # with a zone: that instant
    assert found(clips, "--until", "2026-11-20")[0] == {"a.mp4", "b.mp4", "c.mp4"}  # a date: to its end
    assert found(clips, "--until", "2026-11-20T11:00")[0] == {"a.mp4", "b.mp4"}     # no zone: local time
    assert found(clips, "--since", "3650d")[0] == {"a.mp4", "b.mp4", "c.mp4"}
    got, r = found(clips, "--since", "2026-11-01")
    assert "since 2026-11-01 00:00" in r.stderr  # the header says what was searched


def test_in_restricts_to_a_folder(clips, cli_lite_encoder):
    got, r = found(clips, "--in", str(clips["root"] / "dashcam"))
    assert got == {"a.mp4", "b.mp4"}
    assert f"of 2 videos for \"{Q}\"" in r.stderr and f"in {clips['root'] / 'dashcam'}" in r.stderr
    assert found(clips, "--in", str(clips["root"] / "phone"), "--in", str(clips["root"] / "dashcam"))[0] == \
        {"a.mp4", "b.mp4", "c.mp4"}
    assert found(clips, "--in", str(clips["root"] / "dashcam"), "--since", "2026-11-01")[0] == {"a.mp4"}
    # a folder whose name is a prefix of another's is not it
    (clips["root"] / "dash").mkdir(exist_ok=True)
    got, r = found(clips, "--in", str(clips["root"] / "dash"))
    assert got == set() and "no indexed video matches" in r.stderr


def test_rows_from_before_schema_4_fall_back_to_their_mtime(clips, tmp_path, cli_lite_encoder):
    """An index of schema 3 (no recorded_at) is upgraded; its rows read their stored mtime."""
    db = tmp_path / "old.db"
    shutil.copy(clips["db"], db)
    with sqlite3.connect(db) as con:
        con.execute("DROP VIEW videos_readable")
        con.execute("ALTER TABLE videos DROP COLUMN recorded_at")
        con.execute("UPDATE videos SET mtime = ?", [local("2026-10-01T12:00")])
        con.execute("UPDATE videos SET mtime = ? WHERE path LIKE '%/a.mp4'", [local("2026-11-25T12:00")])
        con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with Store(db, readonly=True) as store:  # read as it is: still searchable by mtime
        res = S.search(store, np.ones(store.load_features(1).x.shape[1], np.float32), since="2026-11-21",
                       refresh_first=False)
        assert {os.path.basename(v.path) for v in res.videos} == {"a.mp4"}
    assert found(clips, "--since", "2026-11-21", db=db)[0] == {"a.mp4"}  # upgraded by this (writable) run
    with Store(db, readonly=True) as store:
        assert store.meta("schema_version") == str(SCHEMA_VERSION)
        assert {os.path.basename(v.path): v.recorded_at for v in store.videos()}["a.mp4"] is None
        assert "recorded_at" in {c.name for c in store.db["videos_readable"].columns}


def test_paths_prints_unique_paths_in_rank_order_and_nothing_else(clips, cli_lite_encoder):
    base = ["search", Q, "--db", str(clips["db"]), *ANY, "--top", "5"]
    js = CliRunner().invoke(cli_app, [*base, "--json"])
    assert js.exit_code == 0, js.output
    d = json.loads(js.stdout)
    want = [v["path"] for v in d["videos"]]
    assert len(want) == 3 and [v["best_score"] for v in d["videos"]] == sorted((v["best_score"] for v in d["videos"]),
                                                                                 reverse=True)
    assert d["filters"] == {"in": [], "since": None, "until": None, "min_score": -1000.0} and d["searched"] == 3
    r = CliRunner().invoke(cli_app, [*base, "--paths"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == want
    assert r.stdout == "".join(p + "\n" for p in want)


def test_the_api_takes_the_same_filters(clips, lite_models, lite_encoder):
    app = create_app(clips["db"], lite_models(), load_answerer("lite", encoder=lite_encoder))
    with TestClient(app, base_url=LOCAL) as client:
        def names(**params):
            r = client.get("/api/search", params={"q": Q, "min_score": -1000, **params})
            assert r.status_code == 200, r.text
            return {v["name"] for v in r.json()["videos"]}, r.json()

        assert names()[0] == {"a.mp4", "b.mp4", "c.mp4"}
        assert names(since="2026-11-01")[0] == {"a.mp4", "c.mp4"}
        assert names(until="2026-11-01")[0] == {"b.mp4"}
        got, d = names(**{"in": str(clips["root"] / "dashcam"), "since": "2026-11-01"})
        assert got == {"a.mp4"} and d["searched"] == 1
        assert d["filters"]["in"] == [str(clips["root"] / "dashcam")] and d["filters"]["since"].startswith("2026-11-01T00:00:00")
        r = client.get("/api/search", params=[("q", Q), ("min_score", "-1000"), ("in", str(clips["root"] / "phone")),
                                              ("in", str(clips["root"] / "dashcam"))])
        assert {v["name"] for v in r.json()["videos"]} == {"a.mp4", "b.mp4", "c.mp4"}
        # the floor by default: what the API lists all scores at least 0
        d = client.get("/api/search", params={"q": Q}).json()
        assert d["filters"]["min_score"] == 0.0 and all(m["score"] >= 0 for m in d["moments"])
        assert client.get("/api/search", params={"q": Q, "min_score": 1e6}).json()["moments"] == []
        for params, word in (({"since": "yesterday"}, "since"), ({"until": "2026-13-01"}, "until"),
                             ({"since": "2026-11-02", "until": "2026-11-01"}, "not before"),
                             ({"in": "relative/folder"}, "in:"), ({"in": "/a\x00b"}, "not a usable path"),
                             ({"min_score": "nan"}, "min_score"),
                             ({"min_score": "high"}, "min_score")):
            r = client.get("/api/search", params={"q": Q, **params})
            assert r.status_code == 422, (params, r.text)
            body = r.json()
            assert set(body) == {"error"} and word in body["error"] and "\n" not in body["error"], body


# ---------------------------------------------------------------- the floor, with planted scores

@pytest.fixture()
def planted(tmp_path, lite_encoder):
    """good.mp4: every frame the question itself (s about +80); bad.mp4: its opposite (about -80);
    mixed.mp4: one a minute, alternately (frames 60 s apart, so the NMS keeps several)."""
    qv = np.asarray(lite_encoder.encode_texts([Q]), np.float32)[0]
    qh = qv / np.linalg.norm(qv)
    rng = np.random.default_rng(0)
    signs = {"good": np.ones(8), "bad": -np.ones(8), "mixed": np.array([1, -1] * 4, float)}
    folder = tmp_path / "cam"
    folder.mkdir()
    db = tmp_path / "planted.db"
    with Store(db) as store:
        for name, sign in signs.items():
            x = (3 * sign[:, None] * qh + 0.05 * rng.standard_normal((8, len(qh)))).astype(np.float32)
            store.put_video(path=folder / f"{name}.mp4", size=8, mtime=0.0, fingerprint=name,
                            times=np.arange(8) * 60.0, x=x, z=x.copy(), encoder_id=lite_encoder.id, agent_id="a")
    return {"db": db, "folder": folder, "q": qv}


def test_the_floor_drops_negative_moments(planted, cli_lite_encoder):
    run = lambda *a: CliRunner().invoke(cli_app, ["search", Q, "--db", str(planted["db"]), "--top", "20",  # noqa: E731
                                                  "--per-video", "8", "--nms-seconds", "1", *a])
    r = run("--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    scores = [m["score"] for m in d["moments"]]
    assert len(scores) == 8 + 4 and min(scores) > 50  # good's 8 and mixed's 4: none of bad's, none negative
    assert {os.path.basename(v["path"]) for v in d["videos"]} == {"good.mp4", "mixed.mp4"}
    assert d["filters"]["min_score"] == 0.0
    everything = json.loads(run("--json", "--min-score", "-1000").stdout)
    assert len(everything["moments"]) == 20 and min(m["score"] for m in everything["moments"]) < -50
    text = run()
    assert text.exit_code == 0 and len(text.stdout.splitlines()) == 12
    assert f'12 moments in 2 of 3 videos for "{Q}" (floor s>=0)' in text.stderr
    assert "s=  -" not in text.stdout
    # nothing passes: one line, exit 0, nothing on stdout
    none = run("--min-score", "1000")
    assert none.exit_code == 0 and none.stdout == ""
    assert lines_of_error(none) == [f'no moments for "{Q}" score s>=1000 in 3 videos (--min-score lowers the floor)']


@pytest.mark.parametrize("args, word", [
    (["--since", "yesterday"], "since 'yesterday'"),
    (["--until", "2026-13-01"], "until '2026-13-01'"),
    (["--since", "2026-11-02", "--until", "2026-11-01"], "is not before"),
    (["--since", "5 fortnights"], "since"),
    (["--in", "/no/such/folder"], "/no/such/folder: --in: no such folder"),
    (["--min-score", "nan"], "--min-score must be a finite number"),
    (["--paths", "--json"], "--paths and --json"),
])
def test_bad_filter_values_are_one_line_exit_2(planted, cli_lite_encoder, args, word):
    r = CliRunner().invoke(cli_app, ["search", Q, "--db", str(planted["db"]), *args])
    assert word in one_line_exit_2(r)


# ---------------------------------------------------------------- the library: still the exact answer

def _brute(store, q, allowed, floor, top, per_video, nms):
    frames = []
    for v in store.videos(status="indexed"):
        if v.id not in allowed:
            continue
        f = store.load_features(v.id)
        s = score_frames(f.z, f.x, q, z_norm=f.z_norm, x_norm=f.x_norm)
        frames += [(float(s[i]), v.id, float(f.times[i]), i) for i in range(len(s)) if s[i] >= floor]
    frames.sort(key=lambda m: -m[0])
    kept, per = [], {}
    for score, vid, t, i in frames:
        ts = per.setdefault(vid, [])
        if len(ts) >= per_video or any(abs(t - u) < nms for u in ts):
            continue
        ts.append(t)
        kept.append((vid, i))
        if len(kept) == top:
            break
    best = {}
    for score, vid, _, _ in frames:
        best.setdefault(vid, score)
    return kept, list(best)[:top]


@pytest.mark.parametrize("cached", [True, False])  # from the cache; read-only with none: from the index file
def test_filtered_search_is_the_brute_force_answer_over_the_allowed_videos(tmp_path, cached):
    rng = np.random.default_rng(3)
    d = 32
    path = tmp_path / "i.db"
    with Store(path) as store:
        for i in range(12):
            t = int(rng.integers(40, 300))
            x = rng.standard_normal((t, d)).astype(np.float32)
            store.put_video(path=f"/archive/{'ab'[i % 2]}/v{i}.mp4", size=t, mtime=1000.0 * i, fingerprint=str(i),
                            times=np.arange(t) + 0.5, x=x, z=x + rng.standard_normal((t, d)).astype(np.float32),
                            encoder_id="enc", agent_id="a", recorded_at=None if i % 3 else 5000.0 + i)
        if cached:
            S.refresh(store)
    with Store(path, readonly=not cached) as store:
        rec = {v.id: (v.path, v.recorded_at if v.recorded_at is not None else v.mtime) for v in store.videos()}
        short = 0  # searches the floor cut below `top` moments
        for k in range(4):
            q = rng.standard_normal(d).astype(np.float32)
            floor = [None, 38.0, 40.0, 36.0][k]  # here the 8th moment scores about 30, the best about 42
            f = make_filters(["/archive/a"] if k % 2 else None, 2000.0 if k else None, 9000.0 if k > 1 else None, floor)
            allowed = {v for v, (p, t) in rec.items() if (not f.under or p.startswith("/archive/a/"))
                       and (f.since is None or t >= f.since) and (f.until is None or t < f.until)}
            for candidates in (1, 256):
                res = S.search(store, q, top=8, per_video=2, nms_seconds=10, filters=f, candidates=candidates)
                kept, best = _brute(store, q, allowed, -np.inf if floor is None else floor, 8, 2, 10)
                assert [(m.video_id, m.frame) for m in res.moments] == kept
                assert [v.video_id for v in res.videos] == best
                assert res.searched == len(allowed) and {m.video_id for m in res.moments} <= allowed
                assert res.direct == (0 if cached else len(allowed))
                assert all(m.score >= floor for m in res.moments) if floor is not None else True
                short += len(res.moments) < 8
                if cached and floor is not None:  # frames whose bound is below the floor are never rescored
                    assert res.rescored < res.frames / 2, (res.rescored, res.frames)
            if k:  # the filter narrows what is scored, not only what is listed
                assert res.frames < sum(v.frame_count for v in store.videos())
        assert short >= 2, short  # the floor decided some answers


def test_parse_when():
    now = utc("2026-12-02T12:00:00")
    assert parse_when("7d", now=now) == now - 7 * 86400
    assert parse_when("12h", now=now) == now - 12 * 3600
    assert parse_when("2026-11-01T08:00Z") == utc("2026-11-01T08:00:00")
    assert parse_when("2026-11-01T08:00+02:00") == utc("2026-11-01T06:00:00")
    assert parse_when("2026-11-01") == local("2026-11-01T00:00")
    assert parse_when("2026-11-01", end=True) == local("2026-11-02T00:00")


# ---------------------------------------------------------------- the web page

def test_the_page_sends_the_filters(clips, lite_models, lite_encoder):
    chromium = os.environ.get("TSPO_EDGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    from conftest import served

    app = create_app(clips["db"], lite_models(), load_answerer("lite", encoder=lite_encoder))
    with served(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        refused: list[str] = []  # the page's CSP refuses inline script and style: nothing may be refused
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: refused.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("#archive .card")
        page.fill("#q", Q)
        page.fill("#f-in", str(clips["root"] / "dashcam"))
        page.fill("#f-since", "2026-11-01")
        page.fill("#f-min", "-1000")
        page.click("#search-form button")
        page.wait_for_selector("#results .group")
        assert page.locator("#results .group .name").all_inner_texts() == ["a.mp4"]
        info = page.locator("#results-info").inner_text()
        assert "of 1 videos" in info and "since 2026-11-01" in info and "floor s≥-1000" in info, info
        page.fill("#f-since", "yesterday")
        page.click("#search-form button")
        for _ in range(200):
            if page.locator("#error").inner_text():
                break
            page.wait_for_timeout(50)
        assert "since 'yesterday'" in page.locator("#error").inner_text()
        assert not refused, refused
        browser.close()
