"""One index per user (issue 21, item 4): without --db every command, from any folder, uses
$XDG_DATA_HOME/tspo-edge/tspo-edge.db (else ~/.local/share/tspo-edge/tspo-edge.db); --db and
$TSPO_EDGE_DB still choose another; a ./tspo-edge.db an earlier version left in the current folder
is used, with a note. Through the command line, with HOME and XDG_DATA_HOME in a temporary folder.
The index is made with the tiny export folder (tests/data/tiny-export), so no torch is needed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_test_video
from tspo_edge.cli import app

TINY_EXPORT = Path(__file__).resolve().parent / "data" / "tiny-export"


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A user with a home of their own and no XDG_DATA_HOME or TSPO_EDGE_DB; cwd: an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("TSPO_EDGE_DB", raising=False)
    monkeypatch.delenv("TSPO_EDGE_SERVER", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return {"home": home, "tmp": tmp_path, "per_user": home / ".local" / "share" / "tspo-edge" / "tspo-edge.db"}


def run(*args, code: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == code, r.output
    return r


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("videos") / "clip.mp4", seconds=3, fps=4, size=(64, 48))


def index(video, *extra):
    return run("index", video, "--model-dir", TINY_EXPORT, *extra)


def info_db(*extra) -> str:
    return json.loads(run("info", "--json", *extra).stdout)["db"]


def test_one_index_per_user_found_from_any_folder(user, video, monkeypatch):
    index(video)
    assert user["per_user"].is_file() and not Path("tspo-edge.db").exists()
    elsewhere = user["tmp"] / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Path(info_db()) == user["per_user"]  # info says where the index is
    r = run("search", "a colourful frame", "--model-dir", TINY_EXPORT, "--json")
    assert Path(json.loads(r.stdout)["moments"][0]["path"]).name == "clip.mp4"
    assert not (elsewhere / "tspo-edge.db").exists()


def test_xdg_data_home_moves_it_and_a_relative_one_is_ignored(user, video, monkeypatch):
    data = user["tmp"] / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    index(video)
    assert Path(info_db()) == data / "tspo-edge" / "tspo-edge.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # the XDG specification: ignore it
    r = run("info", code=2)
    assert str(user["per_user"]) in r.output and "no such index" in r.output
    assert not Path("relative").exists()


def test_db_and_the_environment_still_choose(user, video, monkeypatch):
    chosen = user["tmp"] / "chosen.db"
    index(video, "--db", chosen)
    assert chosen.is_file() and not user["per_user"].exists()
    monkeypatch.setenv("TSPO_EDGE_DB", str(chosen))
    assert Path(info_db()) == chosen
    other = user["tmp"] / "other.db"
    shutil.copy(chosen, other)
    assert Path(info_db("--db", other)) == other  # --db over the environment


def test_an_index_in_the_current_folder_is_used_with_a_note(user, video, monkeypatch):
    index(video, "--db", "tspo-edge.db")  # what an earlier version made with no --db
    r = run("info", "--json")
    assert Path(json.loads(r.stdout)["db"]) == Path.cwd() / "tspo-edge.db"  # stdout stays JSON
    assert "note: using ./tspo-edge.db of this folder" in r.stderr and str(user["per_user"]) in r.stderr
    r = run("ask", video, "What colour is it?", "--model-dir", TINY_EXPORT, "--mllm", "none", "--json")
    assert not json.loads(r.stdout)["indexed_now"]  # nothing indexed twice
    assert not user["per_user"].exists()
    # once it is moved to the per-user place, the note goes and every folder finds it
    user["per_user"].parent.mkdir(parents=True)
    shutil.move("tspo-edge.db", user["per_user"])
    r = run("info", "--json")
    assert Path(json.loads(r.stdout)["db"]) == user["per_user"] and "note:" not in r.stderr
