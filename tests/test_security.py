"""The server's trust boundary, attacked as in docs/security.md: someone who can drop files into an
indexed folder (a camera's upload share), and a web page the user visits while `tspo-edge serve`
runs on loopback. Everything goes through the real commands: `tspo-edge index` and `tspo-edge
serve` as new processes (uvicorn on a loopback port), then curl-like requests, headless Chromium
and `tspo-edge ask`.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import pythonpath_with, write_test_video
from tspo_edge.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
SECRET = "TOP SECRET: the user's private file"
PAYLOAD = ("<!doctype html><title>promo</title><script>document.title = 'PWNED';"
           "fetch('/api/videos').then(r => r.text()).then(t => { document.title = 'PWNED ' + t.length; });</script>")


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "TSPO_EDGE_TOKEN"}
    e.update(PYTHONPATH=pythonpath_with(ROOT), **extra)
    return e


def cli(*args, timeout=600, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tspo_edge", *map(str, args)], cwd=ROOT, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`tspo-edge serve` in a new process; its stderr kept in a file."""

    def __init__(self, db: Path, log: Path, *args, host="127.0.0.1", **extra):
        self.port, self.log = free_port(), log
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self.p = subprocess.Popen([sys.executable, "-m", "tspo_edge", "serve", "--db", str(db), "--host", host,
                                   "--port", str(self.port), "--mllm", "none", *map(str, args)],
                                  cwd=ROOT, env=env(**extra), stderr=open(log, "w"), stdout=subprocess.DEVNULL)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            assert self.p.poll() is None, log.read_text()
            try:
                if httpx.get(self.url + "/api/health", timeout=5).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not start: " + log.read_text())

    def stop(self) -> str:
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=60)
        finally:
            if self.p.poll() is None:
                self.p.kill()
        return self.log.read_text()


@pytest.fixture(scope="module")
def share(tmp_path_factory, real_clips):
    """A camera share A indexed through the CLI, with a secret and a payload outside it linked in."""
    root = tmp_path_factory.mktemp("share")
    a, outside = root / "A", root / "O"
    a.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "payload.html").write_text(PAYLOAD)
    shutil.copy(real_clips["bikes"], a / "bikes.mp4")
    write_test_video(a / "swap.mp4", seconds=3)
    write_test_video(a / "later.mp4", seconds=2, seed=3)
    (a / "clip.mp4").symlink_to(outside / "secret.txt")
    (a / "promo.mp4").symlink_to(outside / "payload.html")
    (a / "planted.mp4").write_text(PAYLOAD)  # a regular file: fails to decode, never served
    db = root / "s.db"
    r = cli("index", a, "--db", db, "--workers", 1)
    assert r.returncode == 1, r.stderr  # planted.mp4 failed; the rest indexed
    served = Served(db, root / "serve.log")
    yield {"root": root, "A": a, "O": outside, "db": db, "index": r, "server": served}
    served.stop()


def rows(db: Path) -> dict:
    with Store(db, readonly=True) as s:
        return {Path(r.path).name: r for r in s.videos()}


# ---- 1. links out of the share are never indexed, never served ---------------------------------

def test_links_out_of_the_share_are_skipped_with_one_warning_each(share):
    err = share["index"].stderr
    for name, target in (("clip.mp4", "secret.txt"), ("promo.mp4", "payload.html")):
        line = [ln for ln in err.splitlines() if f"{name}: skipped" in ln]
        assert len(line) == 1 and target in line[0] and "outside" in line[0], err
    assert "Traceback" not in err
    got = rows(share["db"])
    assert set(got) == {"bikes.mp4", "swap.mp4", "later.mp4", "planted.mp4"}, got
    assert got["planted.mp4"].status == "failed"


def test_no_row_serves_anything_but_its_indexed_video(share):
    url = share["server"].url
    for v in httpx.get(url + "/api/videos").json()["videos"]:
        r = httpx.get(f"{url}/api/videos/{v['id']}/file")
        assert SECRET not in r.text and "<script" not in r.text
        assert r.headers["x-content-type-options"] == "nosniff"
        if v["status"] != "indexed":
            assert r.status_code == 404 and r.headers["content-type"] == "application/json", (v, r.text)
        else:
            assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"


def test_a_video_swapped_for_a_link_or_another_file_is_refused(share):
    """After indexing, with the server running: the file route and the thumbnails check the open
    file against the recorded identity, and refuse a link or another file under the same name."""
    url, a = share["server"].url, share["A"]
    vid = rows(share["db"])["swap.mp4"].id
    assert httpx.get(f"{url}/api/videos/{vid}/file").status_code == 200
    kept = share["root"] / "swap-original.mp4"
    os.replace(a / "swap.mp4", kept)
    try:
        for target in (share["O"] / "secret.txt", Path("/etc/passwd"), share["O"] / "payload.html"):
            (a / "swap.mp4").symlink_to(target)
            for route in ("file", "thumb?t=1"):
                r = httpx.get(f"{url}/api/videos/{vid}/{route}")
                assert r.status_code == 409 and "link" in r.json()["error"], r.text
                assert SECRET not in r.text and "root:" not in r.text
            (a / "swap.mp4").unlink()
        # another regular file of the same size and mtime under the name: another identity and content
        st = kept.stat()
        (a / "swap.mp4").write_bytes((SECRET.encode() * (st.st_size // len(SECRET) + 1))[:st.st_size])
        os.utime(a / "swap.mp4", ns=(st.st_atime_ns, st.st_mtime_ns))
        r = httpx.get(f"{url}/api/videos/{vid}/file")
        assert r.status_code == 409 and SECRET not in r.text, r.text
        (a / "swap.mp4").unlink()
    finally:
        if (a / "swap.mp4").is_symlink() or (a / "swap.mp4").exists():
            (a / "swap.mp4").unlink()
        os.replace(kept, a / "swap.mp4")
    assert httpx.get(f"{url}/api/videos/{vid}/file").status_code == 200  # the original back: served again


def test_a_copied_archive_is_still_served(share, tmp_path):
    """Another identity with the indexed content (an archive restored from a copy) is the same video."""
    from tspo_edge.serving.served_file import open_indexed

    row = rows(share["db"])["later.mp4"]
    copy = tmp_path / "later.mp4"
    shutil.copy2(share["A"] / "later.mp4", copy)
    moved = row.__class__(**{**row.__dict__, "path": str(copy)})
    f = open_indexed(moved)
    assert f.size == copy.stat().st_size and f.media_type == "video/mp4"
    f.close()


def test_a_reindex_after_a_swap_adds_nothing_from_outside(share):
    a = share["A"]
    (a / "later.mp4").rename(share["root"] / "later.mp4")
    (a / "later.mp4").symlink_to("/etc/hostname")
    try:
        r = cli("index", a, "--db", share["db"], "--workers", 1)
        assert "later.mp4: skipped" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not any(p.startswith("/etc") for p in (v.path for v in rows(share["db"]).values()))
    finally:
        (a / "later.mp4").unlink()
        (share["root"] / "later.mp4").rename(a / "later.mp4")


# ---- 2. planted HTML never runs in our origin; 3. DNS rebinding ------------------------------------

@pytest.fixture(scope="module")
def chromium():
    exe = os.environ.get("TSPO_EDGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True,
                              args=["--no-sandbox", "--host-resolver-rules=MAP attacker.example 127.0.0.1"])
        yield b
        b.close()


def test_planted_html_does_not_run_in_the_servers_origin(share, chromium):
    url, a = share["server"].url, share["A"]
    ids = {name: r.id for name, r in rows(share["db"]).items()}
    page = chromium.new_page()
    for vid in ids.values():
        page.goto(f"{url}/api/videos/{vid}/file")
        assert not page.title().startswith("PWNED")
    # the payload swapped in under an indexed name, while the server runs
    os.replace(a / "swap.mp4", share["root"] / "swap-kept.mp4")
    (a / "swap.mp4").symlink_to(share["O"] / "payload.html")
    try:
        resp = page.goto(f"{url}/api/videos/{ids['swap.mp4']}/file")
        page.wait_for_timeout(300)
        assert resp.status == 409 and not page.title().startswith("PWNED")
    finally:
        (a / "swap.mp4").unlink()
        os.replace(share["root"] / "swap-kept.mp4", a / "swap.mp4")
    # the page itself: a CSP that allows no inline script, and nosniff
    r = httpx.get(url + "/")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and r.headers["x-content-type-options"] == "nosniff"
    page.close()


def test_a_rebinding_page_cannot_read_the_archive(share, chromium):
    """attacker.example resolves to 127.0.0.1 (as after a DNS rebind): its pages get 421, no data."""
    page = chromium.new_page()
    port = share["server"].port
    resp = page.goto(f"http://attacker.example:{port}/api/videos")
    assert resp.status == 421 and "bikes" not in page.content()
    page.close()
    r = httpx.get(f"http://127.0.0.1:{port}/api/videos", headers={"Host": f"attacker.example:{port}"})
    assert r.status_code == 421 and list(r.json()) == ["error"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(f"http://127.0.0.1:{port}/api/videos", headers={"Host": host}).status_code == 200


def test_a_post_from_another_sites_page_is_refused(share):
    url = share["server"].url
    body = {"video": rows(share["db"])["bikes.mp4"].id, "question": "What?", "mllm": "none"}
    r = httpx.post(url + "/api/ask", json=body, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and list(r.json()) == ["error"]
    assert httpx.post(url + "/api/ask", json=body, headers={"Origin": url}).status_code == 200


# ---- 5. client input: one-line JSON with its status, never a 500 or a traceback ---------------------

@pytest.mark.parametrize("path, status", [
    ("/api/videos/%C2%B2/file", 404), ("/api/videos/%D9%A1/file", 404), ("/api/videos/%00/file", 404),
    ("/api/videos/1%00/thumb", 404), ("/api/videos/99999999999999999999/file", 404),
])
def test_odd_ids_are_404(share, path, status):
    r = httpx.get(share["server"].url + path)
    assert r.status_code == status and list(r.json()) == ["error"], r.text


@pytest.mark.parametrize("video", [10 ** 20, -1, 0, True, "/tmp/a\u0000b.mp4", "\u0661"])
def test_odd_videos_in_an_ask_are_4xx(share, video):
    r = httpx.post(share["server"].url + "/api/ask", json={"video": video, "question": "What?"})
    assert 400 <= r.status_code < 500 and list(r.json()) == ["error"], r.text


def test_range_errors_are_json(share):
    url = f"{share['server'].url}/api/videos/{rows(share['db'])['bikes.mp4'].id}/file"
    for header, status in (("bytes=99999999999-", 416), ("bytes=abc", 400), ("bytes=5-1", 416)):
        r = httpx.get(url, headers={"Range": header})
        assert r.status_code == status and list(r.json()) == ["error"], (header, r.text)


def test_the_server_printed_no_traceback(share):
    """Run after the attacks above: the server's stderr has one line per problem at most."""
    log = share["server"].log.read_text()
    assert "Traceback" not in log, log[-3000:]


# ---- 4. tokens; 7. the address and the port before the models --------------------------------------

def test_a_utf8_token_works_from_curl_the_page_and_ask(share, tmp_path):
    token = "ключ🔑"
    s = Served(share["db"], tmp_path / "serve.log", TSPO_EDGE_TOKEN=token)
    try:
        assert httpx.get(s.url + "/api/videos").status_code == 401
        ok = httpx.get(s.url + "/api/videos", headers={"Authorization": b"Bearer " + token.encode()})
        assert ok.status_code == 200
        with httpx.Client(base_url=s.url) as page:  # the page signs in with the token in the body
            assert page.post("/api/session", json={"token": token}).status_code == 200
            assert page.get("/api/videos").status_code == 200
            assert page.post("/api/session", json={"token": "wrong"}).status_code == 401
        assert httpx.get(s.url + "/api/health", headers={"Authorization": b"Bearer " + token.encode()}).json()[
            "token_required"] is True
        bikes = share["A"] / "bikes.mp4"
        r = cli("ask", bikes, "What are the people doing?", "--server", s.url, "--mllm", "none",
                TSPO_EDGE_TOKEN=token)
        assert r.returncode == 0 and "moments:" in r.stdout, r.stderr
    finally:
        log = s.stop()
    assert token not in log and "Traceback" not in log


@pytest.mark.parametrize("token", ["", "   ", "\t", "a\nb"])
def test_an_empty_or_unsendable_token_is_refused_at_start(share, token):
    r = cli("serve", "--db", share["db"], "--port", free_port(), "--mllm", "none", TSPO_EDGE_TOKEN=token)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "TSPO_EDGE_TOKEN" in r.stderr, r.stderr
    assert "serving" not in r.stderr


def test_a_busy_port_is_one_line_before_any_model_loads(share):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("serve", "--db", share["db"], "--port", port, "--mllm", "none", timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "in use" in r.stderr, r.stderr
    assert "serving" not in r.stderr


def test_ipv6_loopback(share, tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    s = Served(share["db"], tmp_path / "serve6.log", host="::1")
    try:
        r = httpx.get(s.url + "/api/videos")
        assert r.status_code == 200 and len(r.json()["videos"]) == 4
    finally:
        s.stop()


# ---- 8. what a file name, a batch line or a server says reaches the terminal escaped ---------------

def test_a_batch_line_cannot_send_escape_sequences(share, tmp_path):
    evil = "\x1b]0;pwned\x07\x1b[2J" + "x.mp4"
    batch = tmp_path / "q.jsonl"
    batch.write_text(json.dumps({"video": evil, "question": "What?"}) + "\n")
    r = cli("ask", "--batch", batch, "--db", share["db"], "--mllm", "none")
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "\\x1b" in r.stderr, r.stderr
    assert "\x1b" not in r.stdout


class _EvilServer(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        osc = "\x1b]52;c;cm0gLXJmIH4=\x07"
        body = {"video": "v.mp4", "question": "q" + osc, "stem": "q" + osc, "options": ["a" + osc, "b"],
                "answer": "A. a\x1b[31m" + osc, "letter": "A", "frames": [{"index": 0, "time": 0.0, "score": 1.0}],
                "method": "topk", "timings": {"total": 0.001}, "note": "\x1b[2J",
                "models": {"answerer": "x" + osc, "encoder": "e", "agent": "g"}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_ask_server_prints_what_a_server_says_escaped(tmp_path):
    srv = http.server.HTTPServer(("127.0.0.1", 0), _EvilServer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = cli("ask", "v.mp4", "q", "--server", f"http://127.0.0.1:{srv.server_port}", timeout=120)
    finally:
        srv.shutdown()
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\\x1b]52" in r.stdout, r.stdout
