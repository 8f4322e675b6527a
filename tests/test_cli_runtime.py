"""`--runtime onnx --model-dir DIR` on index, ask and train: the exported models run the pipeline."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tspo_edge import models
from tspo_edge.cli import app


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "edge"
    r = CliRunner().invoke(app, ["export", "similarity:384", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_index_and_ask_with_onnx_runtime(edge, real_clips, tmp_path, monkeypatch):
    # both runtimes give the lite encoder's id and the same agent id: the torch runtime's loaders
    # must not run at all, so a command that quietly fell back to torch fails here
    def torch_runtime(*args, **kwargs):
        raise AssertionError("the torch runtime was used")

    monkeypatch.setattr(models, "load_encoder", torch_runtime)
    monkeypatch.setattr(models.Models, "_torch_agent", staticmethod(torch_runtime))
    bikes = str(real_clips["bikes"])
    db = str(tmp_path / "onnx.db")
    r = CliRunner().invoke(app, ["index", bikes, "--db", db, "--runtime", "onnx", "--model-dir", str(edge), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["encoder_id"].startswith("lite:")
    assert summary["agent_source"] == f"exported agent from {edge} (similarity:384)"
    r = CliRunner().invoke(app, ["ask", bikes, "What are the people doing?", "--db", db, "--mllm", "none",
                                 "--runtime", "onnx", "--model-dir", str(edge), "--frames", "4", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert len(res["frames"]) == 4


def test_onnx_runtime_without_model_dir_is_refused(real_clips, tmp_path):
    r = CliRunner().invoke(app, ["index", str(real_clips["bikes"]), "--db", str(tmp_path / "x.db"), "--runtime", "onnx"])
    assert r.exit_code == 2
    assert "--model-dir" in r.output
    assert not (tmp_path / "x.db").exists()
