"""`tspo-edge serve`: every endpoint through FastAPI's TestClient over a real lite index, the same
answers as the library and the CLI, security (token, loopback, ids never paths, limits, read-only),
concurrent requests, and `ask --server` against a real uvicorn server."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import served  # noqa: E402

from tspo_edge.storage import search as search_mod  # noqa: E402
from tspo_edge.cli import app as cli_app  # noqa: E402
from tspo_edge.models.mllm import load_answerer  # noqa: E402
from tspo_edge.pipeline import index_videos  # noqa: E402
from tspo_edge.errors import ServeError  # noqa: E402
from tspo_edge.serving.app import create_app  # noqa: E402
from tspo_edge.serving.guard import is_loopback  # noqa: E402
from tspo_edge.serving.listen import check_bind  # noqa: E402
from tspo_edge.serving.shared_models import SharedEncoder  # noqa: E402
from tspo_edge.storage.store import Store  # noqa: E402

LOCAL = "http://127.0.0.1:8008"  # the Host a browser on this machine sends (the server refuses others)

MC = ["cyclists", "a cartoon rabbit", "food"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, lite_models, real_clips):
    """bikes.mp4 and bigbuckbunny.mp4 copied to a folder and indexed (lite)."""
    root = tmp_path_factory.mktemp("serve")
    paths = []
    for name in ("bikes", "bigbuckbunny"):
        p = root / "videos" / f"{name}.mp4"
        p.parent.mkdir(exist_ok=True)
        shutil.copy(real_clips[name], p)
        paths.append(p)
    db = root / "index.db"
    with Store(db) as store:
        results = index_videos(store, paths, lite_models())
    assert [r.status for r in results] == ["indexed", "indexed"]
    return {"db": db, "bikes": paths[0], "bunny": paths[1], "root": root,
            "ids": {Path(r.path).stem: r.video_id for r in results}}


@pytest.fixture(scope="module")
def client(archive, lite_models, lite_encoder):
    app = create_app(archive["db"], lite_models(), load_answerer("lite", encoder=lite_encoder))
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def digest(path: Path) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    h = hashlib.sha256()
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for row in con.execute(f'SELECT * FROM "{table}" ORDER BY 1'):  # names from sqlite_master
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def one_line_error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    assert "Traceback" not in r.text
    return body["error"]


# ---- the endpoints -----------------------------------------------------------------------------

def test_videos_lists_the_index(client, archive):
    rows = client.get("/api/videos").json()["videos"]
    by_name = {v["name"]: v for v in rows}
    assert set(by_name) == {"bikes.mp4", "bigbuckbunny.mp4"}
    bikes = by_name["bikes.mp4"]
    assert bikes["id"] == archive["ids"]["bikes"] and bikes["status"] == "indexed"
    assert bikes["duration"] == pytest.approx(10.0, abs=0.2) and bikes["frames"] == 10


def test_search_is_the_library_search(client, archive, lite_encoder):
    for q in ("a cartoon rabbit in a meadow", "people riding bicycles"):
        got = client.get("/api/search", params={"q": q, "top": 5}).json()
        with Store(archive["db"], readonly=True) as store:
            want = search_mod.search(store, lite_encoder.encode_texts([q]), top=5,  # the API's default floor
                                     min_score=search_mod.DEFAULT_MIN_SCORE)
        assert [(m["video_id"], m["frame"]) for m in got["moments"]] == [(m.video_id, m.frame) for m in want.moments]
        np.testing.assert_allclose([m["score"] for m in got["moments"]], [m.score for m in want.moments], rtol=1e-4)
        assert got["unsearched"] == 0 and got["frames"] == 16
    rabbit = client.get("/api/search", params={"q": "a cartoon rabbit", "top": 1}).json()
    assert rabbit["moments"][0]["name"] == "bigbuckbunny.mp4"
    bikes = client.get("/api/search", params={"q": "cyclists riding bikes", "top": 1}).json()
    assert bikes["moments"][0]["name"] == "bikes.mp4"


def test_ask_answers_the_json_of_ask_json(client, archive, cli_lite_encoder):
    body = {"video": str(archive["bikes"]), "question": "What is shown?", "options": MC, "frames": 4}
    got = client.post("/api/ask", json=body).json()
    res = CliRunner().invoke(cli_app, ["ask", str(archive["bikes"]), "What is shown?", "--db", str(archive["db"]),
                                       "--frames", "4", "--json"] + sum([["--option", o] for o in MC], []))
    assert res.exit_code == 0, res.output
    want = json.loads(res.stdout)
    assert set(got) == set(want)
    for key in ("video", "question", "stem", "options", "answer", "letter", "method", "models", "note", "indexed_now"):
        assert got[key] == want[key], key
    assert [f["index"] for f in got["frames"]] == [f["index"] for f in want["frames"]]
    np.testing.assert_allclose([f["score"] for f in got["frames"]], [f["score"] for f in want["frames"]], atol=1e-3)
    assert got["letter"] == "A" and not got["indexed_now"]
    # by id, and mllm none skips the answerer
    by_id = client.post("/api/ask", json={**body, "video": archive["ids"]["bigbuckbunny"], "mllm": "none"}).json()
    assert by_id["video"] == str(archive["bunny"]) and by_id["answer"] is None
    assert by_id["models"]["answerer"] == "none" and "answer" in by_id["timings"]


def test_thumbnail_is_the_frame_at_that_time(client, archive):
    vid = archive["ids"]["bikes"]
    r1 = client.get(f"/api/videos/{vid}/thumb", params={"t": 1, "size": 96})
    r2 = client.get(f"/api/videos/{vid}/thumb", params={"t": 8, "size": 96})
    assert r1.headers["content-type"] == "image/jpeg"
    a, b = (np.asarray(Image.open(io.BytesIO(r.content))) for r in (r1, r2))
    assert min(a.shape[:2]) == 96 and a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5  # different moments, different pictures
    one_line_error(client.get(f"/api/videos/{vid}/thumb", params={"t": 1, "size": 5000}), 422)


def test_video_file_supports_range_requests(client, archive):
    vid, data = archive["ids"]["bikes"], archive["bikes"].read_bytes()
    full = client.get(f"/api/videos/{vid}/file")
    assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "video/mp4"
    part = client.get(f"/api/videos/{vid}/file", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = client.get(f"/api/videos/{vid}/file", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == data[-100:]


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/videos", "/api/search", "/api/ask", "/api/videos/{video_id}/thumb", "/api/videos/{video_id}/file"} <= set(paths)


# ---- security ------------------------------------------------------------------------------------

def test_public_host_needs_a_token():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ServeError, match="TSPO_EDGE_TOKEN"):
            check_bind(host, None)
        with pytest.raises(ServeError):
            check_bind(host, "  ")
        check_bind(host, "s3cret")


def test_serve_cli_refuses_a_public_host_without_token(archive, monkeypatch):
    monkeypatch.delenv("TSPO_EDGE_TOKEN", raising=False)
    res = CliRunner().invoke(cli_app, ["serve", "--db", str(archive["db"]), "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "TSPO_EDGE_TOKEN" in res.output


def test_token_required_when_set(archive, lite_models):
    token = "tok-" + "x" * 20
    app = create_app(archive["db"], lite_models(), load_answerer("none"), token=token)
    with TestClient(app, base_url=LOCAL) as c:
        for path in ("/api/videos", "/api/search?q=bikes", f"/api/videos/{archive['ids']['bikes']}/file"):
            one_line_error(c.get(path), 401)
            one_line_error(c.get(path, headers={"Authorization": "Bearer wrong"}), 401)
            assert c.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert token not in c.get("/api/videos", headers={"Authorization": "Bearer wrong"}).text
        assert c.get("/").status_code == 200  # the page itself holds no data
        # the page's session: a cookie (an HMAC, not the token) lets <img>/<video> through
        s = c.post("/api/session", headers={"Authorization": f"Bearer {token}"})
        assert s.status_code == 200 and token not in s.headers["set-cookie"]
        assert c.get("/api/videos").status_code == 200  # TestClient keeps the cookie
        c.cookies.clear()
        one_line_error(c.get("/api/videos"), 401)


@pytest.mark.parametrize("path", [
    "/api/videos/..%2F..%2Fetc%2Fpasswd/file", "/api/videos/%2Fetc%2Fpasswd/file", "/api/videos/1.0/file",
    "/api/videos/-1/file", "/api/videos/999/file", "/api/videos/99999999999999999999999/thumb",
    "/api/videos/..%2Findex.db/file", "/api/videos/../../../etc/passwd",
])
def test_ids_never_traverse_paths(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert "root:" not in r.text and "SQLite" not in r.text


def test_only_indexed_files_are_read(client, archive, tmp_path, make_video):
    outside = make_video("outside.mp4", seconds=2)
    for ref in (str(outside), "/etc/passwd", "../index.db", str(archive["db"]), "", "12345678"):
        r = client.post("/api/ask", json={"video": ref, "question": "What?"})
        assert r.status_code == 404, (ref, r.text)
        one_line_error(r, 404)


def test_request_limits_and_bad_requests(client, archive):
    vid = archive["ids"]["bikes"]
    one_line_error(client.post("/api/ask", content=b"{" + b" " * 70000 + b"}",
                               headers={"content-type": "application/json"}), 413)
    # no Content-Length (chunked): the stream is counted
    one_line_error(client.post("/api/ask", content=iter([b"{" + b" " * 40000] * 3),
                               headers={"content-type": "application/json"}), 413)
    assert "frames" in one_line_error(client.post("/api/ask", json={"video": vid, "question": "x", "frames": 257}), 422)
    one_line_error(client.post("/api/ask", json={"video": vid, "question": "x", "frames": 0}), 422)
    one_line_error(client.post("/api/ask", json={"video": vid, "question": "x" * 2001}), 422)
    one_line_error(client.post("/api/ask", json={"video": vid, "question": "x", "method": "rm -rf"}), 422)
    one_line_error(client.post("/api/ask", json={"video": vid, "question": "x", "mllm": "openai:http://evil"}), 422)
    one_line_error(client.post("/api/ask", json={"video": vid, "question": "x", "extra": 1}), 422)
    one_line_error(client.post("/api/ask", json={"video": vid, "question": "   "}), 422)
    one_line_error(client.post("/api/ask", content=b"{bad json", headers={"content-type": "application/json"}), 422)
    one_line_error(client.get("/api/search", params={"q": "x", "top": 101}), 422)
    one_line_error(client.get("/api/search"), 422)
    one_line_error(client.get("/nope"), 404)
    one_line_error(client.put("/api/videos"), 405)


def test_internal_errors_are_one_line(archive, lite_models, monkeypatch):
    app = create_app(archive["db"], lite_models(), load_answerer("none"))
    monkeypatch.setattr(search_mod, "search", lambda *a, **k: 1 / 0)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        assert "ZeroDivisionError" in one_line_error(c.get("/api/search", params={"q": "x"}), 500)


def test_index_is_read_only_and_unchanged(archive, lite_models, lite_encoder):
    app = create_app(archive["db"], lite_models(), load_answerer("lite", encoder=lite_encoder))
    before = digest(archive["db"])
    with TestClient(app, base_url=LOCAL) as c:
        assert app.state.archive.store().readonly
        assert c.get("/api/health").json()["readonly"] is True
        for vid in archive["ids"].values():
            assert c.post("/api/ask", json={"video": vid, "question": "What is shown?", "options": MC}).status_code == 200
        c.get("/api/search", params={"q": "bikes"})
        c.get(f"/api/videos/{archive['ids']['bikes']}/thumb")
    assert digest(archive["db"]) == before


def test_changed_or_new_video_needs_allow_index(archive, lite_models, tmp_path):
    copy_dir = tmp_path / "arch"
    shutil.copytree(archive["root"], copy_dir)
    db = copy_dir / "index.db"
    with Store(db) as store:  # the copied index points at the copied files
        store.db.execute("UPDATE videos SET path = replace(path, ?, ?)", [str(archive["root"]), str(copy_dir)])
    bikes = copy_dir / "videos" / "bikes.mp4"
    with Store(db) as store:
        vid = store.find_video(bikes).id
    app = create_app(db, lite_models(), load_answerer("none"))
    with TestClient(app, base_url=LOCAL) as c:
        assert c.post("/api/ask", json={"video": vid, "question": "What?"}).status_code == 200
        bikes.write_bytes(bikes.read_bytes())  # same content, new mtime: changed on disk
        before = digest(db)
        assert "changed" in one_line_error(c.post("/api/ask", json={"video": vid, "question": "What?"}), 409)
        assert digest(db) == before
    new = copy_dir / "videos" / "bunny2.mp4"
    shutil.copy(copy_dir / "videos" / "bigbuckbunny.mp4", new)
    app = create_app(db, lite_models(), load_answerer("none"), allow_index=True, index_roots=[copy_dir / "videos"])
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/ask", json={"video": vid, "question": "What?"}).json()
        assert r["indexed_now"] is True  # re-indexed, allowed
        r = c.post("/api/ask", json={"video": str(new), "question": "What?"}).json()
        assert r["indexed_now"] is True and r["video"] == str(new)
        one_line_error(c.post("/api/ask", json={"video": str(tmp_path / "elsewhere.mp4"), "question": "What?"}), 404)
        names = [v["name"] for v in c.get("/api/videos").json()["videos"]]
        assert "bunny2.mp4" in names
        # a new video is searchable at once on a writable server
        assert c.get("/api/search", params={"q": "rabbit"}).json()["unsearched"] == 0


# ---- concurrency ---------------------------------------------------------------------------------

def test_concurrent_requests_give_the_serial_answers(client, archive):
    qs = [f"what happens at moment {i}?" for i in range(6)] + ["a cartoon rabbit", "cyclists"]
    jobs = [(vid, q) for q in qs for vid in archive["ids"].values()]

    def ask(job):
        vid, q = job
        r = client.post("/api/ask", json={"video": vid, "question": q, "mllm": "none", "frames": 3})
        assert r.status_code == 200, r.text
        return [f["index"] for f in r.json()["frames"]]

    def find(q):
        return [(m["video_id"], m["frame"]) for m in client.get("/api/search", params={"q": q, "top": 4}).json()["moments"]]

    serial = [ask(j) for j in jobs], [find(q) for q in qs]
    with ThreadPoolExecutor(8) as pool:
        asks = pool.map(ask, jobs)
        finds = pool.map(find, qs)
        parallel = list(asks), list(finds)
    assert parallel == serial


def test_shared_encoder_batches_concurrent_texts():
    class Slow:
        id, dim, source = "slow", 3, "slow"
        calls: list[list[str]] = []

        def encode_texts(self, texts):
            self.calls.append(list(texts))
            time.sleep(0.05)
            return np.array([[len(t), t.count("a"), 1.0] for t in texts], np.float32)

    inner = Slow()
    enc = SharedEncoder(inner, threading.RLock())
    texts = [f"text {'a' * i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(lambda t: enc.encode_texts([t])[0], texts))
    for t, v in zip(texts, out):
        np.testing.assert_array_equal(v, [len(t), t.count("a"), 1.0])
    assert len(inner.calls) < len(texts)  # waiting texts went together
    assert sorted(t for call in inner.calls for t in call) == sorted(texts)
    n = len(inner.calls)
    enc.encode_texts(texts[:3])  # cached: no new call
    assert len(inner.calls) == n


# ---- ask --server against a real server -----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(archive, lite_models, lite_encoder):
    token = "live-" + "y" * 16
    app = create_app(archive["db"], lite_models(), load_answerer("lite", encoder=lite_encoder), token=token)
    with served(app) as url:
        yield url, token


def test_ask_server_prints_what_a_local_ask_prints(archive, live_server, cli_lite_encoder, monkeypatch):
    url, token = live_server
    args = ["ask", str(archive["bikes"]), "What is shown?", "--frames", "4"] + sum([["--option", o] for o in MC], [])
    local = CliRunner().invoke(cli_app, args + ["--db", str(archive["db"])])
    monkeypatch.setenv("TSPO_EDGE_TOKEN", token)
    remote = CliRunner().invoke(cli_app, args + ["--server", url])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output

    def stable(out):  # the timings differ, nothing else
        return [line for line in out.splitlines() if not line.startswith("time:")]

    assert stable(remote.stdout) == stable(local.stdout)
    monkeypatch.setenv("TSPO_EDGE_SERVER", url)  # the environment names the server
    js = CliRunner().invoke(cli_app, args[:3] + ["--json", "--mllm", "none"])
    assert js.exit_code == 0, js.output
    assert json.loads(js.stdout)["models"]["answerer"] == "none"


def test_ask_server_errors_are_one_line(archive, live_server, monkeypatch):
    url, token = live_server
    monkeypatch.delenv("TSPO_EDGE_TOKEN", raising=False)
    r = CliRunner().invoke(cli_app, ["ask", str(archive["bikes"]), "What?", "--server", url])
    assert r.exit_code == 2 and "401" in r.output and token not in r.output
    monkeypatch.setenv("TSPO_EDGE_TOKEN", token)
    r = CliRunner().invoke(cli_app, ["ask", "/etc/passwd", "What?", "--server", url])
    assert r.exit_code == 2 and "not in the index" in r.output
    r = CliRunner().invoke(cli_app, ["ask", str(archive["bikes"]), "What?", "--server", f"http://127.0.0.1:{free_port()}"])
    assert r.exit_code == 2 and "cannot reach" in r.output
    r = CliRunner().invoke(cli_app, ["ask", str(archive["bikes"]), "What?", "--server", url, "--sheet", "x.png"])
    assert r.exit_code == 2 and "--sheet" in r.output


def test_search_cli(archive, cli_lite_encoder):
    res = CliRunner().invoke(cli_app, ["search", "a cartoon rabbit", "--db", str(archive["db"]), "--top", "2", "--json",
                                       "--min-score", "-1000"])  # bikes' best frame scores below the default floor
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["moments"][0]["path"] == str(archive["bunny"]) and len(d["moments"]) == 2
    assert all(re.fullmatch(r"\d\d:\d\d", m["timestamp"]) for m in d["moments"])
    text = CliRunner().invoke(cli_app, ["search", "cyclists riding bikes", "--db", str(archive["db"]), "--top", "1"])
    assert text.exit_code == 0 and "bikes.mp4" in text.stdout.splitlines()[0]
    bad = CliRunner().invoke(cli_app, ["search", "x", "--db", str(archive["root"] / "none.db")])
    assert bad.exit_code == 2 and "no such index" in bad.output
