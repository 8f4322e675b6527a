"""A torch-free ask (issue 10, item 4): `tspo-edge ask --model-dir DIR` imports neither torch nor transformers
(nor the web stack of `serve`: fastapi, starlette, uvicorn; nor pydantic).

The export folder is made once per module by `python -m tspo_edge export --out DIR` (the lite
encoder's towers and its agent); a short generated video is indexed with it. The ask then runs
in a fresh process through a small wrapper that runs the command line (runpy on tspo_edge, as
`python -m tspo_edge` does) and at exit writes the names in sys.modules (and where tspo_edge came from) to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_test_video

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "fastapi", "starlette", "uvicorn",  # the web stack: `serve` alone pays for it
         "pydantic")  # typer 0.29 brings it to every command (+0.2 s): pyproject keeps typer below 0.29
WRAPPER = """\
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(
    {"modules": sorted(sys.modules), "tspo_edge": getattr(sys.modules.get("tspo_edge"), "__file__", None)})))
sys.argv[0] = "tspo-edge"
runpy.run_module("tspo_edge", run_name="__main__", alter_sys=True)
"""


def env() -> dict:
    """The repository under test first on the path (the wrapper's folder is sys.path[0], not cwd)."""
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    e.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return e


def cli(*args, cwd=REPO) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tspo_edge", *map(str, args)], cwd=cwd, env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """(export folder, its manifest, an indexed video, the index) for the lite encoder."""
    root = tmp_path_factory.mktemp("startup")
    out, db = root / "edge", root / "index.db"
    cli("export", "--out", out)  # lite towers + the lite encoder's default agent
    video = write_test_video(root / "v.mp4", seconds=4, fps=4, size=(64, 48))
    cli("index", video, "--model-dir", out, "--db", db)
    return out, json.loads((out / "manifest.json").read_text()), video, db


@pytest.mark.slow
def test_onnx_ask_imports_neither_torch_nor_transformers(edge, tmp_path):
    out, manifest, video, db = edge
    (tmp_path / "run_cli.py").write_text(WRAPPER)
    modules_file = tmp_path / "modules.txt"
    r = subprocess.run([sys.executable, tmp_path / "run_cli.py", modules_file, "ask", video, "What colour is it?",
                        "--model-dir", out, "--mllm", "none", "--db", db, "--json"],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    answer = json.loads(r.stdout[r.stdout.index("{"):])
    assert not answer["indexed_now"] and answer["frames"]
    assert answer["models"]["agent"] == manifest["agent"]["id"]
    loaded = json.loads(modules_file.read_text())
    modules = set(loaded["modules"])
    # the list is this run's: the repository's code ran, with the ONNX text tower
    assert Path(loaded["tspo_edge"]).resolve().is_relative_to(REPO)
    assert {"onnxruntime", "tspo_edge.models.encoders.onnx", "tspo_edge.ask"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"an ONNX ask imported {heavy[:5]} (find the importer with python -X importtime)"
