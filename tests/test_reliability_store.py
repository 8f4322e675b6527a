"""Issue 25 (items 4, 5, 7) at the command line and the server: nothing a damaged index, a damaged
or missing search cache, a read-only copy or another process's write lock can do gives a traceback,
a NaN score or a lost answer. Each index here is damaged with sqlite3 or by writing into the cache's
files, then `search`, `ask --mllm none`, `check`, `/api/search` and `/api/ask` are run on it."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_test_video

from tspo_edge.storage import search as S
from tspo_edge.cli import app as cli_app
from tspo_edge.pipeline import index_videos
from tspo_edge.storage.store import Store

Q = "a bright moving square"


@pytest.fixture(scope="module")
def base(tmp_path_factory, lite_models):
    """Two indexed videos (30 frames each, so x and z span several overflow pages); no cache yet."""
    root = tmp_path_factory.mktemp("store-reliability")
    paths = [write_test_video(root / f"{name}.mp4", seconds=30.0, fps=2.0, seed=i)
             for i, name in enumerate(("alpha", "beta"))]
    db = root / "base.db"
    with Store(db) as store:
        results = index_videos(store, paths, lite_models())
    assert [r.status for r in results] == ["indexed", "indexed"]
    return {"db": db, "alpha": paths[0], "beta": paths[1]}


@pytest.fixture
def db(base, tmp_path):
    """A fresh copy of the base index (its own path: its own, empty, search cache)."""
    p = tmp_path / "i.db"
    shutil.copy(base["db"], p)
    return p


def _run(*args):
    res = CliRunner().invoke(cli_app, [str(a) for a in args])
    text = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "Traceback" not in text and res.exception is None or isinstance(res.exception, SystemExit), text
    return res.exit_code, res.stdout, res.stderr


def _video_id(db, path) -> int:
    with Store(db, readonly=True) as s:
        return s.find_video(path).id


def _damage(db, vid, how: str) -> None:
    with sqlite3.connect(db) as c:
        t, d = c.execute("SELECT frames, dim FROM features WHERE video_id = ?", [vid]).fetchone()
        if how == "nan-times":
            c.execute("UPDATE features SET times = ? WHERE video_id = ?",
                      [np.full(t, np.nan).tobytes(), vid])
        elif how == "shape":
            c.execute("UPDATE features SET frames = frames + 1 WHERE video_id = ?", [vid])
        elif how == "nan-events":
            z = np.ones((t, d), np.float16)
            z[3] = np.nan
            c.execute("UPDATE features SET z = ? WHERE video_id = ?", [z.tobytes(), vid])
    c.close()


def _zero_a_page(db, vid) -> None:
    """Zero one overflow page in the middle of a video's x blob, as a disk or a copy might."""
    with sqlite3.connect(db) as c:
        x = c.execute("SELECT x FROM features WHERE video_id = ?", [vid]).fetchone()[0]
        page = c.execute("PRAGMA page_size").fetchone()[0]
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    raw = bytearray(db.read_bytes())
    at = raw.find(x[len(x) // 2:len(x) // 2 + 64])
    assert at > 0
    n = at // page
    raw[n * page:(n + 1) * page] = bytes(page)
    db.write_bytes(bytes(raw))


def _brute(db, q, top=10, per_video=3, nms=30.0):
    with Store(db, readonly=True) as s:
        return [(m.video_id, m.frame) for m in S.search(s, q, top=top, per_video=per_video, nms_seconds=nms,
                                                         refresh_first=False).moments]


# ------------------------------------------------------------------ damaged videos in the index

@pytest.mark.parametrize("how", ["nan-times", "shape", "nan-events", "zeroed-page"])
def test_a_damaged_video_is_named_with_its_repair_never_a_traceback(db, base, how, cli_lite_encoder):
    alpha = _video_id(db, base["alpha"])
    if how == "zeroed-page":
        _zero_a_page(db, alpha)
    else:
        _damage(db, alpha, how)
    # ask: exit 2, one line naming the video and the repair
    code, out, err = _run("ask", base["alpha"], "What moves?", "--mllm", "none", "--db", db)
    assert code == 2, err
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and str(base["alpha"]) in line[0] and "damaged" in line[0]
    assert f"tspo-edge index --force {base['alpha']}" in line[0]
    # search: the damaged video is skipped with one warning; the other is searched; scores finite
    code, out, err = _run("search", Q, "--db", db, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["moments"] and {m["path"] for m in d["moments"]} == {str(base["beta"])}
    assert all(np.isfinite(m["score"]) for m in d["moments"])
    assert d["unsearched"] == 1 and sum("alpha.mp4" in w for w in d["warnings"]) == 1
    assert sum(ln.startswith("warning:") and "alpha.mp4" in ln for ln in err.splitlines()) == 1
    # check: exit 1, the video listed; --json says the same
    code, out, err = _run("check", "--db", db)
    assert code == 1 and str(base["alpha"]) in err and "beta.mp4" not in err, err
    code, out, _ = _run("check", "--db", db, "--json")
    rep = json.loads(out)
    assert code == 1 and not rep["ok"] and [x["path"] for x in rep["damaged"]] == [str(base["alpha"])]
    if how == "zeroed-page":
        assert rep["integrity"]  # SQLite's own check saw the page too


def test_check_of_a_sound_index_exits_0(db, cli_lite_encoder):
    code, out, err = _run("check", "--db", db, "--json")
    assert code == 0 and json.loads(out) == {"db": str(db), "ok": True, "videos": 2, "integrity": [], "damaged": []}
    code, _, err = _run("check", "--db", db)
    assert code == 0 and "2 videos checked; ok" in err


# ------------------------------------------------------------------ the search cache

def _built(db):
    with Store(db) as s:
        S.refresh(s)
        return S.search_dir(s), {k: v for k, v in s.db.execute("SELECT key, value FROM search_state").fetchall()}


def _search_json(db):
    code, out, err = _run("search", Q, "--db", db, "--json")
    assert code == 0, err
    return json.loads(out), err


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "deleted"])
def test_a_damaged_or_missing_cache_is_rebuilt_by_search(db, damage, cli_lite_encoder):
    folder, st = _built(db)
    want, _ = _search_json(db)
    codes = folder / f"codes-{st['gen']}.int8"
    aux = folder / f"aux-{st['gen']}.float32"
    if damage == "truncated":
        with open(codes, "r+b") as f:
            f.truncate(codes.stat().st_size // 2)
    elif damage == "corrupted":  # every scale NaN: the old code listed NaN scores and exited 0
        a = np.fromfile(aux, np.float32).reshape(-1, 4)
        a[:, 0] = np.nan
        a.tofile(aux)
    else:
        shutil.rmtree(folder)
    got, err = _search_json(db)
    assert [(m["video_id"], m["frame"]) for m in got["moments"]] == \
        [(m["video_id"], m["frame"]) for m in want["moments"]]
    assert all(np.isfinite(m["score"]) for m in got["moments"])
    assert got["direct"] == 0 and got["unsearched"] == 0          # searched from the rebuilt cache
    if damage != "deleted":
        assert "rebuilt" in err
    _, st2 = _built(db)
    assert st2["cache_id"] != st["cache_id"] or damage == "deleted"


def test_index_repairs_the_cache(db, base, cli_lite_encoder):
    folder, st = _built(db)
    shutil.rmtree(folder)
    code, _, err = _run("index", base["alpha"], base["beta"], "--db", db, "--workers", "1")
    assert code == 0, err
    with Store(db, readonly=True) as s:
        res = S.search(s, np.ones(s.load_features(1).x.shape[1], np.float32), refresh_first=False)
    assert res.direct == 0 and res.frames > 0 and not res.warnings


def test_a_copied_db_alone_searches_the_same(db, tmp_path, cli_lite_encoder, lite_encoder, lite_models):
    _built(db)
    want, _ = _search_json(db)
    copy = tmp_path / "elsewhere" / "copy.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)  # the .db alone: that is the whole backup
    # a read-only reader with no cache: scored from the index file, the same answer
    with Store(copy, readonly=True) as ro:
        res = S.search(ro, lite_encoder.encode_texts([Q]), top=10)
    assert [(m.video_id, m.frame) for m in res.moments] == [(m["video_id"], m["frame"]) for m in want["moments"]]
    assert res.direct == 2
    # a read-only server on the copy (no start-up refresh): 200, the same moments
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.serving.app import create_app

    app = create_app(copy, lite_models(), load_answerer("none"), refresh_search=False)
    with TestClient(app, base_url="http://127.0.0.1:8008") as c:
        r = c.get("/api/search", params={"q": Q, "top": 10})
        assert r.status_code == 200, r.text
        assert [(m["video_id"], m["frame"]) for m in r.json()["moments"]] == \
            [(m["video_id"], m["frame"]) for m in want["moments"]]
    # search on the writable copy builds its own cache
    got, _ = _search_json(copy)
    assert got["moments"] == want["moments"] and got["direct"] == 0


# ------------------------------------------------------------------ another process's write lock

@pytest.fixture
def locked(db):
    """Another connection holds the write lock (BEGIN IMMEDIATE) until the test ends."""
    held, release = threading.Event(), threading.Event()

    def hold():
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(60)
        c.execute("ROLLBACK")
        c.close()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert held.wait(10)
    yield db
    release.set()
    t.join(10)


def test_search_while_another_process_holds_the_write_lock(locked, base, monkeypatch, cli_lite_encoder,
                                                             lite_models):
    monkeypatch.setattr(S, "LOCK_WAIT", 0.2, raising=False)
    want = _brute(locked, cli_lite_encoder.encode_texts([Q]))
    code, out, err = _run("search", Q, "--db", locked, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert [(m["video_id"], m["frame"]) for m in d["moments"]] == want
    assert d["direct"] == 2 and any("locked by another process" in w for w in d["warnings"])
    # the server starts (its start-up refresh meets the lock) and searches
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.serving.app import create_app

    app = create_app(locked, lite_models(), load_answerer("none"), allow_index=True,
                     index_roots=[base["alpha"].parent])
    with TestClient(app, base_url="http://127.0.0.1:8008") as c:
        r = c.get("/api/search", params={"q": Q})
        assert r.status_code == 200 and [(m["video_id"], m["frame"]) for m in r.json()["moments"]] == want


def test_api_ask_on_a_damaged_video_is_one_line_not_500(db, base, lite_models):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.serving.app import create_app

    alpha = _video_id(db, base["alpha"])
    _damage(db, alpha, "nan-times")
    app = create_app(db, lite_models(), load_answerer("none"))
    with TestClient(app, base_url="http://127.0.0.1:8008") as c:
        r = c.post("/api/ask", json={"video": alpha, "question": "What moves?", "mllm": "none"})
        assert r.status_code == 409, r.text
        assert "damaged" in r.json()["error"] and "alpha.mp4" in r.json()["error"]
        r = c.get("/api/search", params={"q": Q})
        assert r.status_code == 200 and r.json()["unsearched"] == 1
        assert {m["name"] for m in r.json()["moments"]} == {"beta.mp4"}


def test_cache_files_are_the_layout_the_index_names(db):
    folder, st = _built(db)
    assert (folder / "cache-id").read_text().strip() == st["cache_id"]
    assert sorted(p.name.split("-")[0] for p in folder.glob(f"*-{st['gen']}.*")) == ["aux", "codes", "exact", "times"]
    assert not (db.parent / (db.name + ".search")).exists()  # nothing beside the index any more
