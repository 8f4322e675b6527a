"""Hub ids with no hub: the encoder and the MLLM fail within seconds in one line when the hub
cannot be reached (refused, or a server that never answers), at once when the hub is off by
setting, and load from the local cache without a single request when the model is cached.

Each case runs in a fresh interpreter, because huggingface_hub reads HF_ENDPOINT and the cache
folder when it is imported. The "hub" is a socket on the loopback address."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import pythonpath_with
from tiny_models import tiny_clip_folder
from test_mllm_hf import build_tiny_qwen2vl
from tspo_edge.models import hub
from tspo_edge.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
from tspo_edge.models.encoders import load_encoder
from tspo_edge.models.mllm import load_answerer

out = {}
for kind, load in (("encoder", lambda i: load_encoder(i, device="cpu")),
                   ("mllm", lambda i: load_answerer(i, device="cpu"))):
    t = time.perf_counter()
    try:
        model = load(sys.argv[1 if kind == "encoder" else 2])
        out[kind] = {"ok": model.id}
    except Exception as e:
        out[kind] = {"error": type(e).__name__, "message": str(e)}
    out[kind]["seconds"] = time.perf_counter() - t
print(json.dumps(out))
'''


class SilentHub:
    """Accepts connections on 127.0.0.1, reads each request line, never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.conns, self.requests, self.stop = [], [], threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn = self.sock.accept()[0]
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        try:
            conn.settimeout(5)
            self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1"))
        except OSError:
            pass

    def model_requests(self) -> list[str]:
        """Requests about models (huggingface_hub also fetches, once per process and best-effort
        with a 3 s timeout, a list of agent names for its user-agent header: not counted)."""
        return [r for r in self.requests if "agent-harnesses" not in r]

    def close(self):
        self.stop.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_hub():
    h = SilentHub()
    yield h
    h.close()


def closed_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed on exit: connections are refused


def run_child(endpoint: str, encoder_id: str, mllm_id: str, **env) -> tuple[dict, str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_ETAG_TIMEOUT")}
    e.update(HF_ENDPOINT=endpoint, PYTHONPATH=pythonpath_with(ROOT), **env)
    r = subprocess.run([sys.executable, "-c", CHILD, encoder_id, mllm_id], env=e, cwd=str(ROOT),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_hub_fails_fast_in_one_line(kind, silent_hub, tmp_path):
    endpoint = silent_hub.url if kind == "silent" else closed_port()
    ids = {"encoder": "tspo-edge-test/no-such-clip", "mllm": "tspo-edge-test/no-such-mllm"}
    out, stderr = run_child(endpoint, ids["encoder"], ids["mllm"], HF_HUB_CACHE=str(tmp_path / "cache"))
    for kind_, r in out.items():
        assert r.get("error") == "ModelLoadError", r
        msg = r["message"]
        assert "\n" not in msg and msg.startswith(f"{ids[kind_]}: ")
        assert f"the hub at {endpoint} cannot be reached" in msg
        assert ("Timeout" if kind == "silent" else "Connect") in msg
    # fast because it asks once, with the probe's own short timeout, and never retries: counted, not
    # timed (a wall-time bound failed under load while the behaviour was right)
    if kind == "silent":
        assert len(silent_hub.model_requests()) == len(ids), silent_hub.model_requests()
    # no retry storm: the child wrote no warnings about retries or connections
    noise = [ln for ln in stderr.splitlines() if "retry" in ln.lower() or "connect" in ln.lower()]
    assert noise == [], noise[:5]
    if kind == "silent":  # one request for each model: the probe
        assert sorted(silent_hub.model_requests()) == [f"GET /api/models/{i} HTTP/1.1" for i in sorted(ids.values())]


def test_hub_off_by_setting_fails_at_once(monkeypatch):
    from tspo_edge.models.encoders import load_encoder
    from tspo_edge.models.mllm import load_answerer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for load, name in ((load_encoder, "tspo-edge-test/no-such-clip"), (load_answerer, "tspo-edge-test/no-such-mllm")):
        with pytest.raises(ModelLoadError) as e:
            load(name)
        assert str(e.value).startswith(f"{name}: not in the local Hugging Face cache and the hub is off")
        assert "\n" not in str(e.value)
    assert hub.offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub.offline()


def _cache_entry(cache: Path, repo_id: str, build) -> None:
    """Lay out `repo_id` in a Hugging Face cache as a download would (refs/main -> snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    build(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_cached_hub_ids_load_without_a_request(silent_hub, tmp_path):
    cache = tmp_path / "cache"
    _cache_entry(cache, "tspo-edge-test/tiny-clip", lambda d: tiny_clip_folder(d, projection_dim=24, selector=False))
    _cache_entry(cache, "tspo-edge-test/tiny-qwen2vl", build_tiny_qwen2vl)
    out, _ = run_child(silent_hub.url, "tspo-edge-test/tiny-clip", "tspo-edge-test/tiny-qwen2vl",
                       HF_HUB_CACHE=str(cache))
    assert out["encoder"].get("ok", "").startswith("hf:tspo-edge-test/tiny-clip@0123456789ab:"), out
    assert out["mllm"].get("ok") == "hf:tspo-edge-test/tiny-qwen2vl", out
    assert silent_hub.model_requests() == []  # the hub (which would hang) was never asked
    # the cache check itself, in this process's cache: a fake id is not there
    assert not hub.in_cache("tspo-edge-test/no-such-model")
    shutil.rmtree(cache)
