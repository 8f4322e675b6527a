"""One installed namespace, built without links (issue 10, item 3; issue 23).

The repository keeps index/, train/, export/ and cli.py at its top, but they install as
tspo_edge.index, tspo_edge.train, tspo_edge.export and tspo_edge.cli (pyproject.toml maps the
folders, setup.py adds cli.py), and a source tree finds them the same way (tspo_edge/__init__.py).
So a user's own `index.py`, `train.py`, `export.py` or `cli.py` in the working directory (first on
sys.path for `python -m` and `python -c`) changes nothing. Checked here, from a copy of the
repository under test: the wheel; the sdist and a wheel built from it; a regular and an editable
install, into fresh virtual environments that take their dependencies from this machine's
site-packages; and a `git -c core.symlinks=false clone` (a file system or a Windows account without
symbolic links), run from source and installed editable.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHADOWS = ("index", "train", "export", "cli")
MAPPED = ("index", "train", "export", "commands")  # top-level folders that install as tspo_edge.<name>
DEPS_PTH = "_test_dependencies.pth"  # make_venv's pointer to the running environment's packages
LIBRARY = ("from tspo_edge.ask import Asker; import tspo_edge, tspo_edge.index, tspo_edge.train, "
           "tspo_edge.export, tspo_edge.cli; from tspo_edge.cli import app; print(*tspo_edge.__path__); "
           "print(tspo_edge.__file__, tspo_edge.index.__file__, tspo_edge.train.__file__, "
           "tspo_edge.export.__file__, tspo_edge.cli.__file__)")


def sh(*cmd, cwd=None, check: bool = True, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    # keep PYTHONPATH entries that hold dependencies (a machine that provides packages that way),
    # never one that holds a checkout of this project: the installs under test must stand alone
    deps = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and not (Path(p) / "tspo_edge").exists()]
    if pythonpath is not None:  # a source tree under test, first
        deps.insert(0, str(pythonpath))
    if deps:
        env["PYTHONPATH"] = os.pathsep.join(deps)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1", COLUMNS="100")
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def copy_repository(dst: Path) -> Path:
    """A copy of the repository under test (symlinks kept as links), without build leftovers."""
    shutil.copytree(REPO, dst, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".benchmarks", ".venv",
        "*.db", "*.db-wal", "*.db-shm", "out", "tests", "benchmarks"))
    return dst


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The copy the wheel and the sdist are built from (they leave build/ and egg-info in it)."""
    return copy_repository(tmp_path_factory.mktemp("install") / "src")


def build_wheel(src: Path, out: Path) -> Path:
    """The wheel pip builds from `src`, a source folder or an sdist."""
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, src)
    (whl,) = out.glob("tspo_edge-*.whl")
    return whl


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    return build_wheel(source, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def sdist(source, tmp_path_factory) -> Path:
    """The sdist, made by the build backend's own PEP 517 hook (what `python -m build --sdist` calls)."""
    out = tmp_path_factory.mktemp("sdist")
    sh(sys.executable, "-c", "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
       out, cwd=source)
    (tar,) = out.glob("tspo_edge-*.tar.gz")
    return tar


@pytest.fixture(scope="module")
def sdist_wheel(sdist, tmp_path_factory) -> Path:
    return build_wheel(sdist, tmp_path_factory.mktemp("sdist-wheel"))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """`git -c core.symlinks=false clone` of a repository holding a copy of the tree: a link, were
    there one, would arrive as a small file holding its target's path."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("git")
    origin = copy_repository(root / "origin")
    git = ("git", "-c", "user.name=tspo-edge tests", "-c", "user.email=tests@localhost", "-c", "init.defaultBranch=main")
    sh(*git, "init", "-q", cwd=origin)
    sh(*git, "add", "-A", cwd=origin)
    sh(*git, "commit", "-q", "-m", "the tree under test", cwd=origin)
    sh("git", "-c", "core.symlinks=false", "clone", "-q", origin, root / "checkout")
    return root / "checkout"


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


def installed_from_wheel(wheel: Path, where: Path) -> tuple[Path, Path]:
    """(python, site-packages) of a fresh venv with `wheel` installed; only tspo_edge lands there."""
    python = make_venv(where)
    sh(python, "-m", "pip", "install", "--no-deps", "-q", wheel)
    site_dir = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    installed = {p.name for p in site_dir.iterdir() if p.name not in ("__pycache__", DEPS_PTH)}
    dist_info = {n for n in installed if n.startswith("tspo_edge-") and n.endswith(".dist-info")}
    assert installed - dist_info == {"tspo_edge"} and len(dist_info) == 1, sorted(installed)
    return python, site_dir


def test_the_repository_holds_no_links(source):
    """A link turns into a copy in the sdist and into a file of one line in a checkout without links."""
    links = [str(p.relative_to(source)) for p in source.rglob("*") if p.is_symlink()]
    assert not links, links


def test_wheel_holds_only_the_tspo_edge_namespace(wheel, source):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        cli = z.read("tspo_edge/cli.py")
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"tspo_edge"} and len(dist_info) == 1, sorted(top)
    # every module of the tree, each once: the library, the mapped top-level folders, cli.py
    want = {f"tspo_edge/{p.relative_to(source / 'tspo_edge').as_posix()}" for p in (source / "tspo_edge").rglob("*.py")}
    for folder in MAPPED:
        want |= {f"tspo_edge/{folder}/{p.relative_to(source / folder).as_posix()}" for p in (source / folder).rglob("*.py")}
    want.add("tspo_edge/cli.py")
    assert {n for n in names if n.endswith(".py")} == want
    assert cli == (source / "cli.py").read_bytes()
    assert "tspo-edge = tspo_edge.cli:app" in entry_points


def test_sdist_keeps_the_layout_and_builds_the_same_wheel(sdist, sdist_wheel, wheel):
    with tarfile.open(sdist) as t:
        members = t.getmembers()
    assert all(m.isfile() or m.isdir() for m in members), [m.name for m in members if m.issym() or m.islnk()]
    files = {m.name.split("/", 1)[1] for m in members if m.isfile()}
    # the repository's own layout, once: no tspo_edge/cli.py, no tspo_edge/index/ beside index/
    assert {"pyproject.toml", "setup.py", "cli.py", "index/__init__.py", "train/__init__.py",
            "export/__init__.py", "commands/__init__.py", "tspo_edge/__init__.py", "tspo_edge/__main__.py"} <= files
    assert not {f for f in files if f == "tspo_edge/cli.py" or f.split("/")[:2] in (["tspo_edge", m] for m in MAPPED)}
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(sdist_wheel) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert all(a.read(n) == b.read(n) for n in a.namelist()), "a wheel from the sdist differs from the tree's"


def _check_runs(python: Path, cwd: Path, home: Path, pythonpath: Path | None = None) -> None:
    """`python -m tspo_edge`, the console script (when installed) and the library's imports run,
    from `home`'s code."""
    assert sh(python, "-m", "tspo_edge", "--version", cwd=cwd, pythonpath=pythonpath).stdout.startswith("tspo-edge ")
    script = python.parent / "tspo-edge"
    if pythonpath is None:
        assert "Usage: tspo-edge" in sh(script, "--help", cwd=cwd).stdout
    files = sh(python, "-c", LIBRARY, cwd=cwd, pythonpath=pythonpath).stdout.split()
    assert len(files) >= 6 and all(Path(f).resolve().is_relative_to(home.resolve()) for f in files), (files, home)


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
    _check_runs(python, shadow_dir, home)


@pytest.mark.slow
def test_regular_install_is_not_shadowed(wheel, shadow_dir, tmp_path):
    python, site_dir = installed_from_wheel(wheel, tmp_path / "venv")
    (tmp_path / "clean").mkdir()
    _check_unshadowed(python, shadow_dir, tmp_path / "clean", site_dir / "tspo_edge")


@pytest.mark.slow
def test_wheel_built_from_the_sdist_runs(sdist_wheel, tmp_path):
    python, site_dir = installed_from_wheel(sdist_wheel, tmp_path / "venv")
    _check_runs(python, tmp_path, site_dir / "tspo_edge")


@pytest.mark.slow
def test_editable_install_of_a_checkout_without_links(checkout, shadow_dir, tmp_path):
    python = make_venv(tmp_path / "venv")
    sh(python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "-e", checkout)
    (tmp_path / "clean").mkdir()
    # the editable install runs the checkout's code: index/ and cli.py from the top of it
    _check_unshadowed(python, shadow_dir, tmp_path / "clean", checkout)


@pytest.mark.slow
def test_checkout_without_links_runs_from_source(checkout, tmp_path):
    """What the README's test command and the tests' child processes do: PYTHONPATH=<checkout>."""
    _check_runs(Path(sys.executable), tmp_path, checkout, pythonpath=checkout)
    r = sh(sys.executable, checkout / "cli.py", "--version", cwd=tmp_path, pythonpath=checkout)  # `python cli.py`
    assert r.stdout.startswith("tspo-edge ")
