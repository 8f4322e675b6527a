"""The library functions the command line became a thin face of (issue 23, item 2): what cli.py
checked, chose and printed, now callable (and tested) without it; and the one error mapping."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tspo_edge.cli import app
from tspo_edge.errors import InputError
from tspo_edge.media import registry
from tspo_edge.models import ModelSpec
from tspo_edge.pipeline import Sampling


# ---- option checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"runtime": "tensorrt"}, "--runtime tensorrt: choose torch, onnx, auto"),
    ({"runtime": "onnx"}, "--runtime onnx needs --model-dir DIR"),
    ({"runtime": "torch", "model_dir": "."}, "--model-dir runs with --runtime onnx, not torch"),
    ({"model_dir": "no-such-folder"}, "no-such-folder: --model-dir is not a folder"),
    ({"device": "gpu0"}, "--device gpu0: expected cpu, cuda, cuda:N or mps"),
])
def test_model_options_are_refused_naming_the_option(kw, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ModelSpec.from_options(**kw)


def test_model_options_choose_the_runtime(tmp_path, monkeypatch):
    monkeypatch.delenv("TSPO_EDGE_RUNTIME", raising=False)
    assert ModelSpec.from_options(default="auto").runtime == "auto"
    assert ModelSpec.from_options(model_dir=tmp_path).runtime == "onnx"
    assert ModelSpec.from_options(model_dir=tmp_path).model_dir == str(tmp_path)
    monkeypatch.setenv("TSPO_EDGE_RUNTIME", "torch")
    assert ModelSpec.from_options(default="auto").runtime == "torch"
    monkeypatch.setenv("TSPO_EDGE_RUNTIME", "gpu")
    with pytest.raises(InputError, match=r"\$TSPO_EDGE_RUNTIME=gpu: choose torch or auto"):
        ModelSpec.from_options()


@pytest.mark.parametrize("args, message", [
    ((0.0,), "--fps must be a number from 0.001 to"),
    ((1.0, 0), "--max-frames must be a positive whole number"),
    ((1.0, None, "vhs"), "--decoder vhs: not available here"),
])
def test_sampling_options_are_refused_naming_the_option(args, message):
    with pytest.raises(InputError, match=message):
        Sampling.from_options(*args)


def test_sampling_options_build_the_sampling():
    assert Sampling.from_options(2.0, 10) == Sampling(fps=2.0, max_frames=10)


def test_a_decoder_that_cannot_run_here_falls_back_with_one_line(monkeypatch):
    assert registry.choose("pyav") == ("pyav", None)
    monkeypatch.setattr(registry.DECODERS["nvdec"], "cannot_run", lambda: "no NVIDIA GPU (test)")
    assert registry.choose("nvdec") == ("pyav", "nvdec: no NVIDIA GPU (test); decoding with PyAV")


# ---- the one error mapping -------------------------------------------------------------------

def test_running_out_of_memory_in_any_command_is_one_line(tmp_path, monkeypatch):
    """MemoryError outside ask was a traceback before the mapping moved into one place."""
    import tspo_edge.storage.store as store_mod

    def no_memory(self, *a, **kw):
        raise MemoryError

    db = tmp_path / "i.db"
    with store_mod.Store(db):
        pass
    monkeypatch.setattr(store_mod.Store, "check", no_memory)
    r = CliRunner().invoke(app, ["check", "--db", str(db)])
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.stderr.strip().splitlines()[-1] == "error: out of memory"


def test_ctrl_c_prints_the_commands_own_line(tmp_path, monkeypatch):
    import tspo_edge.storage.store as store_mod

    def interrupt(self, *a, **kw):
        raise KeyboardInterrupt

    db = tmp_path / "i.db"
    with store_mod.Store(db):
        pass
    monkeypatch.setattr(store_mod.Store, "videos", interrupt)
    r = CliRunner().invoke(app, ["prune", "--db", str(db)])
    assert r.exit_code == 130, (r.output, r.exception)
    assert r.stderr.strip().splitlines()[-1] == "interrupted: nothing was removed"
    r = CliRunner().invoke(app, ["info", "--db", str(db)])
    assert r.exit_code == 130 and r.stderr.strip().splitlines()[-1] == "interrupted"
