"""Which index a command uses when none is named: one per user, the same from any folder.

In order:
    1. --db PATH                           what the command line names
    2. $TSPO_EDGE_DB                       (a leading ~ is expanded)
    3. ./tspo-edge.db, when the current folder already has one: the index an earlier version made
       there (its default was the current folder). It is used, with a note, so that an upgrade
       neither hides what was indexed nor indexes it again; nothing makes a new one there.
    4. the per-user index: $XDG_DATA_HOME/tspo-edge/tspo-edge.db, else
       ~/.local/share/tspo-edge/tspo-edge.db (Windows: %LOCALAPPDATA%\\tspo-edge\\tspo-edge.db)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

APP = "tspo-edge"
DB_NAME = "tspo-edge.db"
ENV_DB = "TSPO_EDGE_DB"


def user_data_dir() -> Path:
    """The per-user data folder (XDG base directories; a relative $XDG_DATA_HOME is ignored, as
    the specification says)."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / APP
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / APP


def user_cache_dir() -> Path:
    """The per-user cache folder: $TSPO_EDGE_CACHE, else $XDG_CACHE_HOME/tspo-edge, else
    ~/.cache/tspo-edge. Everything in it can be deleted (ONNX towers, search caches, the lite
    encoder's text cache): it is rebuilt from the index and the models when needed."""
    if os.environ.get("TSPO_EDGE_CACHE"):
        return Path(os.environ["TSPO_EDGE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / APP


def user_db() -> Path:
    """The per-user index file (it need not exist yet; the first write creates its folder)."""
    return user_data_dir() / DB_NAME


@dataclass(frozen=True)
class DbChoice:
    path: Path
    source: str              # "--db", "$TSPO_EDGE_DB", "current folder" or "per-user"
    note: str | None = None  # one line for the user, when the choice could surprise


def resolve_db(given: str | os.PathLike | None = None, *, cwd: str | os.PathLike | None = None) -> DbChoice:
    """The index a command uses: `given` (--db), else the rules in this module's docstring."""
    if given is not None and str(given) != "":
        return DbChoice(Path(given), "--db")
    env = os.environ.get(ENV_DB, "")
    if env:
        return DbChoice(Path(env).expanduser(), "$" + ENV_DB)
    per_user = user_db()
    local = Path(cwd or os.getcwd()) / DB_NAME
    if local.is_file() and not _same_file(local, per_user):
        where = (f"the per-user index {per_user} exists too: pass --db to choose" if per_user.exists() else
                 f"move it to {per_user} to reach it from any folder, or pass --db to choose")
        return DbChoice(local, "current folder", note=f"using ./{DB_NAME} of this folder; {where}")
    return DbChoice(per_user, "per-user")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
