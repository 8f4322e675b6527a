"""Issue 11 at library level: many writers, hostile inputs, full and read-only storage.

Nothing lost (every video written exactly once, integrity ok), nothing poisoned (no NaN/inf stored,
no NaN agent loaded), never a traceback (every fault a one-line TspoError naming the file)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_edge.models.agent import TemporalAgent, load_agent, save_agent
from tspo_edge.question_batch import BatchError, load_batch, read_batch
from tspo_edge.errors import (AnswererError, CheckpointError, ModelLoadError, NonFiniteError, NotAnIndexError,
                              StoreError, StoreFullError, StoreLockedError, StoreNonFiniteError,
                              StoreReadOnlyError, StoreUnreadableError, TspoError)
from tspo_edge.checks import check_finite
from tspo_edge.redaction import redact
from tspo_edge.storage.store import SCHEMA_VERSION, Store
from tspo_edge.train.data import DataError, load_rows

from conftest import pythonpath_with, write_test_video

ROOT = Path(__file__).resolve().parents[1]


def _arrays(t=20, d=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, d)).astype(np.float32)
    return np.arange(t, dtype=np.float64), x, 2 * x


def _put(store, name, seed=0, **kw):
    times, x, z = _arrays(seed=seed, **kw)
    return store.put_video(path=f"/videos/{name}.mp4", size=1, mtime=0.0, fingerprint="fp", times=times, x=x,
                           z=z, encoder_id="enc", agent_id="agent", sample_fps=1.0)


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


# ---------------------------------------------------------------------------- many writers

_WORKER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pathlib import Path
    from tspo_edge.storage.store import Store

    db, go, role, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
    while not go.exists():  # start together: the index does not exist yet, all race to create it
        time.sleep(0.005)
    with Store(db) as s:
        if role == "reader":
            deadline, reads = time.time() + 20, 0
            while time.time() < deadline and reads < 400:
                for v in s.videos(status="indexed"):
                    f = s.load_features(v.id)
                    assert np.allclose(f.z, 2 * f.x, atol=1e-2), v.path  # never half of two writers
                    reads += 1
                if len(s.videos()) >= int(names[0]):
                    break
        else:
            w = int(role)
            for name in names:
                rng = np.random.default_rng(1000 * w + int(name))
                x = rng.standard_normal((120, 64)).astype(np.float32) + w
                s.put_video(path=f"/videos/{name}.mp4", size=w, mtime=float(w), fingerprint=f"w{w}",
                            times=np.arange(120.0), x=x, z=2 * x, encoder_id="enc", agent_id=f"agent-{w}",
                            sample_fps=1.0)
    print("ok", role)
""")


def test_several_processes_create_write_and_read_one_index(tmp_path):
    """4 writers with overlapping videos + 1 reader start at once on a new index: every video once,
    each whole from one writer, integrity ok, every process exit 0 (bounded: 120 s)."""
    db, go = tmp_path / "shared.db", tmp_path / "go"
    plans = {w: [str(i) for i in range(w * 6, w * 6 + 12)] for w in range(4)}  # each overlaps the next
    expected = {f"/videos/{n}.mp4" for names in plans.values() for n in names}
    env = {**os.environ, "PYTHONPATH": pythonpath_with(ROOT)}
    cmds = [[sys.executable, "-c", _WORKER, str(db), str(go), str(w), ",".join(names)] for w, names in plans.items()]
    cmds.append([sys.executable, "-c", _WORKER, str(db), str(go), "reader", str(len(expected))])
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    time.sleep(1.0)  # let every interpreter import and wait at the barrier
    go.touch()
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=120))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.startswith("ok"), out
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        paths = [r[0] for r in c.execute("SELECT path FROM videos")]
        assert sorted(paths) == sorted(expected)  # every video exactly once
        assert c.execute("SELECT count(*) FROM features").fetchone()[0] == len(expected)
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    with Store(db, readonly=True) as s:
        for v in s.videos():
            w = int(v.fingerprint[1:])
            f = s.load_features(v.id)
            assert v.size == w and v.agent_id == f"agent-{w}"   # row and features from one writer
            assert abs(float(f.x.mean()) - w) < 0.2
            np.testing.assert_allclose(f.z, 2 * f.x, atol=1e-2)


def test_a_held_write_lock_is_named_locked_and_readers_go_on(tmp_path):
    db = tmp_path / "i.db"
    with Store(db) as s:
        _put(s, "a")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process mid-write, for longer than we wait
    try:
        with Store(db, timeout=0.2) as s:
            assert [v.path for v in s.videos()] == ["/videos/a.mp4"]  # WAL: reading does not wait
            t0 = time.perf_counter()
            with pytest.raises(StoreLockedError) as e:
                _put(s, "b")
            assert time.perf_counter() - t0 < 5
            msg = _one_line(e.value)
            assert str(db) in msg and "locked" in msg and "not a tspo-edge index" not in msg
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Store(db) as s:  # once the other writer is done, the write goes through
        _put(s, "b")
        assert len(s.videos()) == 2


def test_creating_an_index_another_process_has_locked_is_locked_not_bad(tmp_path):
    db = tmp_path / "new.db"
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # a creator holding the brand-new file
    try:
        with pytest.raises(StoreLockedError, match="locked"):
            Store(db, timeout=0.2)
        assert db.exists()  # someone else's file is not removed
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Store(db) as s:
        assert s.meta("schema_version") == str(SCHEMA_VERSION)


# ---------------------------------------------------------------------------- what a file is

def test_not_an_index_is_told_apart_and_left_alone(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"these are my notes\n" * 300)
    before = bad.read_bytes()
    with pytest.raises(NotAnIndexError, match="not a tspo-edge index") as e:
        Store(bad)
    assert str(bad) in _one_line(e.value)
    assert bad.read_bytes() == before


def test_a_folder_given_as_the_index(tmp_path):
    with pytest.raises(StoreUnreadableError, match="folder") as e:
        Store(tmp_path)
    assert str(tmp_path) in _one_line(e.value)
    with pytest.raises(StoreUnreadableError, match="folder"):
        Store(tmp_path, readonly=True)


def test_readonly_open_never_changes_the_file(tmp_path):
    db = tmp_path / "i.db"
    with Store(db) as s:
        row = _put(s, "a")
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with Store(db, readonly=True) as s:
        assert s.load_features(row.id).x.shape == (20, 32)
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            _put(s, "b")
        with pytest.raises(StoreReadOnlyError):
            s.update_events(row.id, np.zeros((20, 32), np.float32), "other")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


# ---------------------------------------------------------------------------- real storage faults

@pytest.fixture
def small_fs(tmp_path):
    """Mount a tmpfs of the given size (KiB) under tmp_path; skipped where mount is not allowed."""
    mounted = []

    def make(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small filesystem needs root; not root here")
        mnt = tmp_path / f"fs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
        mounted.append(mnt)
        return mnt

    yield make
    for mnt in mounted:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _remount(mnt: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(mnt)], check=True, capture_output=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_full_disk_keeps_what_was_written_and_names_the_cause(small_fs):
    mnt = small_fs(320)
    db = mnt / "i.db"
    written = 0
    with Store(db) as s:
        with pytest.raises(StoreFullError) as e:
            for i in range(200):
                _put(s, f"v{i}", seed=i, t=60, d=256)
                written += 1
        msg = _one_line(e.value)
        assert str(db) in msg and "disk is full" in msg
    assert written >= 1
    with Store(db, readonly=True) as s:
        assert len(s.videos()) == written  # the failed video left nothing half-written
        for v in s.videos():
            assert s.load_features(v.id).x.shape == (60, 256)
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_new_index_on_a_full_disk_leaves_no_file(small_fs):
    mnt = small_fs(128)
    _fill(mnt)
    with pytest.raises(StoreError) as e:
        Store(mnt / "new.db")
    assert isinstance(e.value, (StoreFullError, StoreUnreadableError)), e.value
    assert "full" in _one_line(e.value)
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]  # no 0-byte new.db, no -wal/-shm


def test_index_on_a_read_only_mount_is_readable(small_fs):
    mnt = small_fs(2048)
    db = mnt / "i.db"
    with Store(db) as s:
        row = _put(s, "a")
    assert sorted(p.name for p in mnt.iterdir()) == ["i.db"]  # the last close folds the WAL in
    _remount(mnt, "ro")
    for readonly in (True, False):  # `ask` opens for writing; on read-only media it can still read
        with Store(db, readonly=readonly) as s:
            assert s.readonly and "read-only" in s.readonly_reason
            f = s.load_features(row.id)
            np.testing.assert_allclose(f.z, 2 * f.x, atol=1e-2)
            with pytest.raises(StoreReadOnlyError) as e:
                _put(s, "b")
            assert str(db) in _one_line(e.value)
            assert ("opened read-only" if readonly else "read-only file system") in str(e.value)
    with pytest.raises(StoreReadOnlyError, match="cannot create") as e:
        Store(mnt / "new.db")
    assert str(mnt / "new.db") in _one_line(e.value)
    assert sorted(p.name for p in mnt.iterdir()) == ["i.db"]


# ---------------------------------------------------------------------------- nothing non-finite

@pytest.mark.parametrize("what", ["x", "z", "times"])
def test_non_finite_features_are_refused_before_writing(tmp_path, what):
    with Store(tmp_path / "i.db") as s:
        first = _put(s, "a")
        times, x, z = _arrays(seed=5)
        {"x": x, "z": z, "times": times}[what][3] = np.nan
        with pytest.raises(StoreNonFiniteError) as e:
            s.put_video(path="/videos/a.mp4", size=1, mtime=0.0, fingerprint="fp", times=times, x=x, z=z,
                        encoder_id="enc", agent_id="agent")
        assert "/videos/a.mp4" in _one_line(e.value) and "not finite" in str(e.value)
        assert isinstance(e.value, StoreError) and isinstance(e.value, NonFiniteError)
        np.testing.assert_allclose(s.load_features(first.id).x, _arrays()[1], atol=1e-2)  # old kept


def test_non_finite_events_and_sampling_rates_are_refused(tmp_path):
    with Store(tmp_path / "i.db") as s:
        row = _put(s, "a")
        before = s.load_features(row.id).z
        bad = np.ones((20, 32), np.float32)
        bad[0, 0] = np.inf
        with pytest.raises(StoreNonFiniteError, match="/videos/a.mp4"):
            s.update_events(row.id, bad, "nan-agent")
        with pytest.raises(StoreNonFiniteError, match="float16"):
            s.update_events(row.id, np.full((20, 32), 1e6, np.float32), "huge-agent")
        np.testing.assert_array_equal(s.load_features(row.id).z, before)
        assert s.get_video(row.id).agent_id == "agent"
        times, x, z = _arrays()
        for fps in (math.inf, math.nan):
            with pytest.raises(StoreNonFiniteError, match="sample_fps"):
                s.put_video(path="/videos/b.mp4", size=1, mtime=0.0, fingerprint="f", times=times, x=x, z=z,
                            encoder_id="enc", agent_id="agent", sample_fps=fps)
            with pytest.raises(StoreNonFiniteError, match="sample_fps"):
                s.put_failed(path="/videos/a.mp4", size=1, mtime=0.0, fingerprint="f", error="x", sample_fps=fps)
        assert s.get_video(row.id).status == "indexed" and len(s.videos()) == 1


def test_check_finite_names_the_thing_and_counts(tmp_path):
    check_finite(np.ones(3), "fine")
    check_finite(np.arange(3), "integers are always finite")
    with pytest.raises(NonFiniteError, match=r"^clip\.mp4: batch 2: 2 of 6 values are not finite \(NaN and inf\)$"):
        check_finite(np.array([[1, np.nan, 3], [np.inf, 5, 6]], np.float32), "clip.mp4: batch 2")
    with pytest.raises(NonFiniteError, match="tensor"):
        check_finite(torch.tensor([0.0, float("nan")]), "tensor")


# ---------------------------------------------------------------------------- checkpoints

def _agent(dim=32):
    torch.manual_seed(0)
    return TemporalAgent(dim, heads=4, window=4).eval()


def test_nan_or_exploding_agents_are_refused_at_load(tmp_path):
    a = _agent()
    with torch.no_grad():
        a.mlp[0].weight[0, 0] = float("nan")
    path = save_agent(a, tmp_path / "nan")
    with pytest.raises(CheckpointError, match="NaN") as e:
        load_agent(path)
    assert str(path) in _one_line(e.value)
    b = _agent()
    with torch.no_grad():  # finite weights whose events overflow float32
        for p in b.mlp.parameters():
            p.fill_(1e30)
    path = save_agent(b, tmp_path / "huge")
    with pytest.raises(CheckpointError, match="event features are not finite"):
        load_agent(path.parent)
    good = save_agent(_agent(), tmp_path / "good")
    assert load_agent(good).dim == 32  # the probe passes a sound agent


def _bad_checkpoints(tmp: Path) -> dict[str, Path]:
    tmp.mkdir()
    files = {
        "garbage.safetensors": b"\x00\x01garbage" * 50,
        "huge-header.safetensors": struct.pack("<Q", 2 ** 62) + b'{"a": 1}',
        "bad-json.safetensors": struct.pack("<Q", 16) + b"{not json at all" + b"x" * 32,
        "garbage.bin": b"PK\x03\x04 not really a zip" * 20,
        "garbage.pt": os.urandom(512),
        "empty.pt": b"",
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    return {name: tmp / name for name in [*files, "tensor.pt"]}


def test_every_unreadable_checkpoint_is_one_line(tmp_path):
    for name, path in _bad_checkpoints(tmp_path / "bad").items():
        with pytest.raises(CheckpointError) as e:
            load_agent(path)
        msg = _one_line(e.value)
        assert msg.startswith(str(path)), (name, msg)
        assert e.value.exit_code == 2


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payloads_are_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"selector.temporal.Self_q.weight": _Payload(marker)}, tmp_path / "evil.pt")
    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    for name in ("evil.pt", "evil.bin"):
        with pytest.raises(CheckpointError) as e:
            load_agent(tmp_path / name)
        msg = _one_line(e.value)
        assert msg.startswith(str(tmp_path / name)) and "nothing was run" in msg
    assert not marker.exists()


@pytest.mark.parametrize("config", ['{"heads": 4, "window":', "[1, 2]", '{"heads": "many"}',
                                    '{"heads": 0}', b"\xff\xfe{}"])
def test_a_broken_agent_json_is_one_line(tmp_path, config):
    save_agent(_agent(), tmp_path)
    cfg = tmp_path / "agent.json"
    cfg.write_bytes(config if isinstance(config, bytes) else config.encode())
    with pytest.raises(CheckpointError) as e:
        load_agent(tmp_path)
    assert str(cfg) in _one_line(e.value)


# ---------------------------------------------------------------------------- the OpenAI client

def test_redact_masks_credentials_and_keeps_the_rest():
    cases = {
        "http://alice:s3cret@host:8000/v1": "http://alice:***@host:8000/v1",
        "https://tok3n@host/v1": "https://***@host/v1",
        "echo: Authorization: Bearer abc.def-123456 end": "echo: Authorization: Bearer *** end",
        '{"headers": {"authorization": "Basic YWxpY2U6czNjcmV0"}}': '{"headers": {"authorization": "Basic ***"}}',
        "key sk-proj-AbC123xyz789 rejected": "key sk-*** rejected",
        "url?api_key=K3Y999&model=m": "url?api_key=***&model=m",
        '{"x-api-key": "zz-99-yy", "error": "bad"}': '{"x-api-key": "***", "error": "bad"}',
        "model crashed at token 12 of http://host:8000/v1": "model crashed at token 12 of http://host:8000/v1",
    }
    for text, want in cases.items():
        assert redact(text) == want, text
    assert redact("I saw plain-key-77 here", known=["plain-key-77", None, ""]) == "I saw *** here"


class _Hang:
    """Accepts connections and never answers (a stuck server)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.conns: list[socket.socket] = []
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _frames():
    return np.zeros((2, 32, 32, 3), np.uint8), [0.0, 1.0]


def test_one_timeout_is_one_wait(monkeypatch):
    pytest.importorskip("openai")
    from tspo_edge.models.mllm.openai_api import OpenAIAnswerer

    monkeypatch.delenv("TSPO_EDGE_API_KEY", raising=False)
    srv = _Hang()
    try:
        a = OpenAIAnswerer(f"http://127.0.0.1:{srv.port}/v1", model="m", timeout=1.0, check=False)
        t0 = time.perf_counter()
        with pytest.raises(AnswererError, match=r"no answer within 1 s"):
            a.answer(*_frames(), "What?", [])
        assert 0.9 < time.perf_counter() - t0 < 1.9  # not doubled by a silent retry
        r = OpenAIAnswerer(f"http://127.0.0.1:{srv.port}/v1", model="m", timeout=0.5, check=False, max_retries=1)
        with pytest.raises(AnswererError, match=r"2 tries of 0.5 s"):
            r.answer(*_frames(), "What?", [])
    finally:
        srv.close()


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, "soon"])
def test_bad_timeouts_are_refused(timeout):
    pytest.importorskip("openai")
    from tspo_edge.models.mllm.openai_api import OpenAIAnswerer

    with pytest.raises(ModelLoadError, match="timeout must be a positive number") as e:
        OpenAIAnswerer("http://127.0.0.1:9/v1", model="m", timeout=timeout, check=False)
    _one_line(e.value)


def test_server_error_bodies_and_url_credentials_never_show_secrets(monkeypatch):
    pytest.importorskip("openai")
    from tspo_edge.models.mllm.openai_api import OpenAIAnswerer

    key = "not-an-sk-key-but-secret-77"
    monkeypatch.setenv("TSPO_EDGE_API_KEY", key)

    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # a proxy that echoes the request headers into its error
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error": {"message": f"denied; you sent Authorization: "
                                                    f"{self.headers.get('Authorization')} and sk-live-9f8e7d6c5b"}})
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://alice:pa55word@127.0.0.1:{httpd.server_address[1]}/v1"
        a = OpenAIAnswerer(url, model="m", timeout=5, check=False)
        assert "pa55word" not in a.id
        with pytest.raises(AnswererError) as e:
            a.answer(*_frames(), "What?", [])
        msg = _one_line(e.value)
        assert "HTTP 401" in msg and "denied" in msg
        for secret in (key, "sk-live-9f8e7d6c5b", "pa55word"):
            assert secret not in msg
    finally:
        httpd.shutdown()
        httpd.server_close()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(AnswererError, match="cannot connect") as e:
        OpenAIAnswerer(f"http://bob:hunter22@127.0.0.1:{port}/v1", model="m", timeout=2)
    assert "hunter22" not in _one_line(e.value) and "bob:***@" in str(e.value)


# ---------------------------------------------------------------------------- batch and training files

def test_a_bad_batch_line_costs_only_that_line(tmp_path):
    f = tmp_path / "q.jsonl"
    lines = [
        {"question": "What colour?", "video": "a.mp4", "frames": 8, "method": "aks", "id": "q1"},
        {"question": "q", "frames": "abc"},
        {"question": "q", "video": 12},
        {"question": "q", "frames": 0},
        {"question": "q", "frames": True},
        {"question": "q", "frames": 2.5},
        {"question": "q", "method": "best"},
        {"question": "q", "options": ["a", 3]},
        {"question": "q", "options": list("abcdefghi")},
        {"question": "q", "id": [1]},
        {"question": ""},
        {"video": "a.mp4"},
        {"question": "Where?", "id": 7, "video": None, "extra": "kept"},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines[:3]) + "\n\nnot json\n[1, 2]\n"
                 + "\n".join(json.dumps(x) for x in lines[3:]) + "\n")
    batch = load_batch(f)
    assert [(i["line"], i["question"]) for i in batch.items] == [(1, "What colour?"), (16, "Where?")]
    assert batch.items[1] == {"question": "Where?", "id": 7, "extra": "kept", "line": 16}
    bad_lines = [int(e.split(":")[1]) for e in batch.errors]
    assert bad_lines == [2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    for e in batch.errors:
        assert e.startswith(f"{f}:") and "\n" not in e
    assert '"frames" must be a positive whole number, got "abc"' in batch.errors[0]
    assert '"video" must be a non-empty string' in batch.errors[1]
    with pytest.raises(BatchError, match=r"q\.jsonl:2: .*\(and 12 more bad lines\)"):
        read_batch(f)


def test_non_utf8_and_empty_batch_files_are_one_line(tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"question": "ok"}\n{"question": "caf\xe9?"}\n')
    with pytest.raises(BatchError, match=r"latin1\.jsonl:2: not UTF-8") as e:
        load_batch(f)
    _one_line(e.value)
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(BatchError, match="no questions"):
        load_batch(tmp_path / "empty.jsonl")
    with pytest.raises(BatchError, match="folder"):
        load_batch(tmp_path)


def _train_row(**kw):
    row = {"video": "a.mp4", "original_question": "<image>\nWhat?\nA. x\nB. y",
           "solution": "<answer>a</answer>", "type": "general"}
    return json.dumps({**row, **kw})


def test_training_rows_that_cannot_be_parsed_are_file_line(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"\0")
    f = tmp_path / "train.jsonl"
    f.write_text(_train_row() + "\n" + _train_row(original_question="<image>") + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:2: 'original_question' cannot be parsed") as e:
        load_rows(f, tmp_path)
    _one_line(e.value)
    f.write_bytes(_train_row().encode() + b"\n" + _train_row(problem="x").encode()[:-2] + b"\xff\"}\n")
    with pytest.raises(DataError, match=r"train\.jsonl:2: not UTF-8") as e:
        load_rows(f, tmp_path)
    _one_line(e.value)
    f.write_text(_train_row(original_question="What is \u2028 this?\nA. x\nB. y") + "\n")
    assert len(load_rows(f, tmp_path).rows) == 1  # a line separator inside a JSON string is not a new row


def test_every_error_here_is_a_tspo_error():
    for cls in (StoreError, NotAnIndexError, StoreLockedError, StoreFullError, StoreReadOnlyError,
                StoreUnreadableError, StoreNonFiniteError, NonFiniteError, CheckpointError, BatchError, DataError):
        assert issubclass(cls, TspoError) and cls.exit_code == 2


def test_index_and_ask_processes_share_one_new_index(tmp_path):
    """The normal edge case: cron's `index` runs overlap each other and people `ask` meanwhile.
    Three `tspo-edge index` processes over overlapping folders and two `ask`s (each of which must
    index its video first) start at once on one new index: every process exits 0, every video is
    indexed exactly once, integrity ok (bounded: 300 s)."""
    (tmp_path / "v").mkdir()
    videos = [write_test_video(tmp_path / "v" / f"{i}.mp4", seconds=2, fps=4, size=(64, 48), seed=i)
              for i in range(6)]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, members in ((a, videos[0:4]), (b, videos[2:6]), (c, videos[0:6:2])):
        folder.mkdir()
        for v in members:
            (folder / v.name).symlink_to(v)  # the same files through three folders: overlapping runs
    db = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": pythonpath_with(ROOT), "TSPO_EDGE_SERVER": ""}
    cli = [sys.executable, "-m", "tspo_edge"]
    # the links named on the command line (a folder's links out of it are skipped, docs/security.md)
    cmds = [[*cli, "index", *sorted(map(str, folder.iterdir())), "--db", str(db), "--workers", "1", "--json"]
            for folder in (a, b, c)]
    cmds += [[*cli, "ask", str(videos[i]), "What is shown?", "--db", str(db), "--mllm", "none", "--json"]
             for i in (1, 5)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for cmd, p, (out, err) in zip(cmds, procs, outs):
        assert p.returncode == 0, (cmd[3], err[-2000:])
        json.loads(out[out.index("{"):])  # every process printed its result as valid JSON
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT path, status FROM videos").fetchall()
        assert sorted(rows) == sorted((str(v.resolve()), "indexed") for v in videos)  # each once, all indexed
        assert con.execute("SELECT count(*) FROM features").fetchone()[0] == len(videos)
