"""`tspo-edge doctor`: what this machine can run, from a new process, with or without torch.

Torch-free (tests/conftest.py TORCH_FREE_MODULES): the torch-free CI jobs run it on machines
without torch, the main job with it, a GPU machine with its GPUs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from tspo_edge.media import nvdec

from conftest import pythonpath_with

REPO = Path(__file__).resolve().parents[1]


def doctor(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "tspo_edge", "doctor", *args], env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return r


def nvdec_expected() -> str | None:
    """Why NVDEC cannot run here, from this machine's facts rather than from tspo_edge.nvdec: the
    words the reason must hold, or None where a backend, torch and a CUDA device are all here."""
    if not any(importlib.util.find_spec(m) for m in ("PyNvVideoCodec", "torchcodec")):
        return "no NVDEC backend is installed"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA device"


def test_doctor_json_says_what_this_machine_has(monkeypatch):
    monkeypatch.delenv(nvdec.CHOICE_ENV, raising=False)
    facts = json.loads(doctor("--json").stdout)
    assert facts["python"] == sys.version.split()[0]
    assert facts["pyav"]["version"] == av.__version__
    assert facts["decoders"]["pyav"] == "ok"
    got, why = facts["decoders"]["nvdec"], nvdec_expected()
    if why is None:  # a GPU machine with a backend: it decodes, or says why the backend cannot load
        assert got in ("ok (pynvvideocodec)", "ok (torchcodec)") or "cannot load" in got, got
    else:
        assert why in got and not got.startswith("ok"), got
    assert (facts["decoders"]["decord"] == "ok") == (importlib.util.find_spec("decord") is not None)
    if importlib.util.find_spec("torch") is None:
        assert facts["torch"]["version"] is None and "not installed" in facts["torch"]["note"]
    else:
        import torch

        assert facts["torch"]["version"] == torch.__version__
        assert len(facts["torch"]["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if importlib.util.find_spec("onnxruntime") is None:
        assert facts["onnxruntime"] == {"version": None, "providers": []}
    else:
        import onnxruntime

        assert facts["onnxruntime"]["providers"] == onnxruntime.get_available_providers()


def test_doctor_prints_a_line_per_fact():
    lines = doctor().stdout.splitlines()
    assert lines[0].startswith(f"tspo-edge ") and f"Python {sys.version.split()[0]}" in lines[0]
    decoders = [ln for ln in lines if ln.startswith("decoder ")]
    assert [ln.split(":")[0] for ln in decoders] == ["decoder pyav", "decoder decord", "decoder nvdec"]
    assert any(ln.startswith("torch: ") for ln in lines) and any(ln.startswith("lite profile: ") for ln in lines)
    assert "Traceback" not in "\n".join(lines)


def test_nvdec_reason_names_what_an_installed_backend_lacks(tmp_path, monkeypatch):
    """A backend that is installed but has no torch to run with says so (it was once reported as
    'no NVDEC backend is installed')."""
    fake = tmp_path / "site" / "PyNvVideoCodec"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as where it is not installed
    monkeypatch.delenv(nvdec.CHOICE_ENV, raising=False)
    nvdec._backend_unavailable.cache_clear()
    try:
        assert "pynvvideocodec" in nvdec.installed_backends()
        assert nvdec.nvdec_unavailable() == "torch is not installed"
    finally:
        nvdec._backend_unavailable.cache_clear()
