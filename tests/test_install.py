"""One installed namespace (issue 10, item 3): the distribution exposes `tspo_edge` and nothing else.

The repository keeps index/, train/, export/ and cli.py at its top, but they install as
tspo_edge.index, tspo_edge.train, tspo_edge.export and tspo_edge.cli. So a user's own
`index.py`, `train.py`, `export.py` or `cli.py` in the working directory (first on sys.path
for `python -m` and `python -c`) changes nothing, with a regular install and with an editable
one. Both are made here, into fresh virtual environments that take their dependencies from
this machine's site-packages, from a copy of the repository under test.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHADOWS = ("index", "train", "export", "cli")
DEPS_PTH = "_test_dependencies.pth"  # make_venv's pointer to the running environment's packages
LIBRARY = ("from tspo_edge.ask import Asker; import tspo_edge, tspo_edge.index, tspo_edge.train, "
           "tspo_edge.export, tspo_edge.cli; print(tspo_edge.__file__); print(tspo_edge.index.__file__)")


def sh(*cmd, cwd=None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    # keep PYTHONPATH entries that hold dependencies (a machine that provides packages that way),
    # never one that holds a checkout of this project: the installs under test must stand alone
    deps = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and not (Path(p) / "tspo_edge").exists()]
    if deps:
        env["PYTHONPATH"] = os.pathsep.join(deps)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1", COLUMNS="100")
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the repository under test (symlinks kept as links), without build leftovers."""
    dst = tmp_path_factory.mktemp("install") / "src"
    shutil.copytree(REPO, dst, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".benchmarks", ".venv",
        "*.db", "*.db-wal", "*.db-shm", "out", "tests", "benchmarks"))
    return dst


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, source)
    (whl,) = out.glob("tspo_edge-*.whl")
    return whl


@pytest.fixture(scope="module")
def shadow_dir(tmp_path_factory) -> Path:
    """A working directory holding index.py, train.py, export.py and cli.py, each raising on import."""
    d = tmp_path_factory.mktemp("shadow")
    for name in SHADOWS:
        (d / f"{name}.py").write_text(f"raise RuntimeError('the user\\'s own {name}.py was imported')\n")
    return d


def make_venv(path: Path) -> Path:
    """A virtual environment that sees the packages of the interpreter running the tests (the
    dependencies), also when that is itself a virtual environment; returns its python."""
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(path)
    python = path / "bin" / "python"
    purelib = sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # plain path lines: the running environment's own .pth files (an editable install of this
    # checkout among them) are not run, so the installs under test still stand alone
    (Path(purelib) / DEPS_PTH).write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def test_wheel_holds_only_the_tspo_edge_namespace(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"tspo_edge"} and len(dist_info) == 1, sorted(top)
    # the top-level folders of the repository are inside the namespace, whole
    for module in ("index/__init__.py", "index/batch.py", "train/__init__.py", "train/run.py",
                   "export/__init__.py", "export/api.py", "cli.py", "__main__.py"):
        assert f"tspo_edge/{module}" in names, module
    assert "tspo-edge = tspo_edge.cli:app" in entry_points


def _check_unshadowed(python: Path, shadow_dir: Path, clean_dir: Path, home: Path) -> None:
    """The CLI (python -m, the console script) and a library import, run from the shadowing folder,
    behave as from a clean one and use the installed package."""
    # the trap works: a top-level `import index` from that folder does pick up the user's file
    trap = sh(python, "-c", "import index", cwd=shadow_dir, check=False)
    assert trap.returncode != 0 and "own index.py was imported" in trap.stderr
    script = python.parent / "tspo-edge"
    for cmd in ([python, "-m", "tspo_edge", "--version"], [script, "--help"], [python, "-m", "tspo_edge", "ask", "--help"]):
        shadowed, clean = sh(*cmd, cwd=shadow_dir), sh(*cmd, cwd=clean_dir)
        assert shadowed.stdout == clean.stdout and shadowed.stdout.strip(), cmd
    assert sh(python, "-m", "tspo_edge", "--version", cwd=shadow_dir).stdout.startswith("tspo-edge ")
    files = sh(python, "-c", LIBRARY, cwd=shadow_dir).stdout.split()
    assert all(Path(f).resolve().is_relative_to(home.resolve()) for f in files), (files, home)


@pytest.mark.slow
def test_regular_install_is_not_shadowed(wheel, shadow_dir, tmp_path):
    python = make_venv(tmp_path / "venv")
    sh(python, "-m", "pip", "install", "--no-deps", "-q", wheel)
    site = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    installed = {p.name for p in site.iterdir() if p.name not in ("__pycache__", DEPS_PTH)}
    dist_info = {n for n in installed if n.startswith("tspo_edge-") and n.endswith(".dist-info")}
    assert installed - dist_info == {"tspo_edge"} and len(dist_info) == 1, sorted(installed)
    (tmp_path / "clean").mkdir()
    _check_unshadowed(python, shadow_dir, tmp_path / "clean", site / "tspo_edge")


@pytest.mark.slow
def test_editable_install_is_not_shadowed(source, shadow_dir, tmp_path):
    python = make_venv(tmp_path / "venv")
    sh(python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "-e", source)
    (tmp_path / "clean").mkdir()
    # the editable install runs the source folder's code: index/ through the tspo_edge/index link
    _check_unshadowed(python, shadow_dir, tmp_path / "clean", source)
