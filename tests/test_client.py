"""The client of a running server (tspo_edge.serving.client) is light: importing it loads no
NumPy, Pillow, PyAV, sqlite-utils or web framework (it used to load the first four through
tspo_edge.ask), and its checks refuse bad input before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tspo_edge.errors import InputError
from tspo_edge.serving.client import ask_remote

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("av", "PIL", "numpy", "sqlite_utils", "fastapi", "starlette", "uvicorn", "torch")


def test_importing_the_client_loads_nothing_heavy():
    code = ("import json, sys, tspo_edge.serving.client as c; "
            "print(json.dumps({'file': c.__file__, 'modules': sorted(sys.modules)}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert Path(out["file"]).resolve().is_relative_to(REPO)  # this checkout's client was the one imported
    heavy = sorted({m.split(".")[0] for m in out["modules"]} & set(HEAVY))
    assert not heavy, f"importing the client loaded {heavy} (find the importer with python -X importtime)"


@pytest.mark.parametrize("kw,words", [
    ({"local_only": {"--sheet": Path("x.png"), "--batch": None}}, "--sheet: not with --server"),
    ({"question": None}, "give VIDEO and QUESTION"),
    ({"question": "?" * 4001}, "4001 characters"),
    ({"options": ["a" * 4000]}, "characters with its options"),
    ({"method": "best"}, "--method best: choose from topk | bin-max | aks | uniform"),
])
def test_bad_input_is_refused_before_anything_is_sent(kw, words):
    args = {"question": "What?", **kw}
    question = args.pop("question")
    # port 9 (discard) on loopback: were anything sent, the error would be ClientError, not InputError
    with pytest.raises(InputError, match=words.replace("|", r"\|").replace("?", r"\?")):
        ask_remote("http://127.0.0.1:9", "v.mp4", question, **args)
