"""Rebuild tests/data/tiny-export/, the ONNX export folder the torch-free tests run (needs torch).

    cd <repo> && PYTHONPATH=$PWD python tests/data/make_tiny_export.py

A tiny random CLIP laid out as TSPO-0.4B (tests/tiny_models.py: 32-wide towers, 32 px images,
16 text tokens, a 24-wide agent in the folder), exported by `tspo-edge export` as a user would.
Rerun it when the export format changes (the manifest's version); the folder is about 0.4 MB.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "tiny-export"

sys.path[:0] = [str(REPO), str(REPO / "tests")]
from tiny_models import tiny_clip_folder  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_clip_folder(Path(tmp) / "tiny-tspo", projection_dim=24, selector=True, seed=0)
        staged = Path(tmp) / "export"
        subprocess.run([sys.executable, "-m", "tspo_edge", "export", "--encoder", str(folder), "--out", str(staged)],
                       cwd=REPO, check=True)
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(staged, OUT)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT}: {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
