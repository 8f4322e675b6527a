"""Which files an index run looks at: video files, given directly or found in folders.

A watched folder is written by others (a camera's upload share), so a folder entry is indexed
only when it is a regular file, or a link to a regular file inside the folders being indexed.
Everything else is skipped with one warning line naming the entry and why: a link out of those
folders (it would let whoever writes the folder publish any file this user can read), a link
loop, a dangling link, a FIFO (opening it would block), a socket, a device. A file named on the
command line is the user's choice and is followed wherever it points; it must still be a regular
file. Keys are symlink-resolved paths (`canonical_path`), so a file reached twice is indexed once.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import Iterable

from tspo_edge.storage.store import canonical_path
from tspo_edge.media.video import VIDEO_EXTENSIONS

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def _skip(entry, why: str) -> None:
    warnings.warn(f"{entry}: skipped: {why}", stacklevel=3)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _within(key: str, roots: Iterable[str]) -> bool:
    return any(key == r or key.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def resolve_roots(paths) -> list[str]:
    """The folders and files an index run or a watch was given, as canonical keys (those that exist)."""
    out = []
    for p in paths:
        try:
            out.append(str(Path(p).expanduser().resolve(strict=True)))
        except (OSError, RuntimeError):  # missing, or a loop: find_videos reports it
            continue
    return out


def admit_entry(entry, roots: Iterable[str]) -> str | None:
    """The key to index the folder entry `entry` under, or None (skipped, with one warning line).
    `roots`: `resolve_roots` of what the run was given; a link must stay inside them."""
    entry = Path(entry)
    try:
        st = entry.lstat()
    except OSError:
        return None  # gone meanwhile: nothing to say
    if stat.S_ISLNK(st.st_mode):
        try:
            target = Path(os.path.realpath(entry, strict=True))
        except OSError:
            _skip(entry, "a link loop or a link to nothing")
            return None
        if not _within(str(target), roots):
            _skip(entry, f"a link to {target}, outside the folders being indexed")
            return None
        try:
            st = target.stat()
        except OSError:
            return None
    if not stat.S_ISREG(st.st_mode):
        _skip(entry, f"{_kind(st.st_mode)}, not a regular file")
        return None
    return canonical_path(entry)


def _named(p: Path) -> tuple[str | None, bool]:
    """(key, missing) of a path named on the command line, followed wherever it points: missing
    when nothing is there; no key, with one warning line, when it is no regular file or a loop."""
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno != errno.ELOOP:
            return None, True
        _skip(p, "a link loop")
        return None, False
    if not stat.S_ISREG(st.st_mode):
        _skip(p, f"{_kind(st.st_mode)}, not a regular file")
        return None, False
    return canonical_path(p), False


def is_video_name(name: str, extensions=VIDEO_EXTENSIONS) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def find_videos(paths, *, extensions=VIDEO_EXTENSIONS, roots: list[str] | None = None) -> tuple[list[Path], list[Path]]:
    """(videos, missing): files given explicitly are kept whatever their extension; folders are
    walked recursively for files with a video extension (hidden entries skipped; links to folders
    not followed). Entries that are not regular files, or links out of `paths`, are skipped with
    a warning (see the module docstring). `roots`: where links may point (default: `paths`).
    Sorted by key, unique."""
    roots = resolve_roots(paths) if roots is None else roots
    found: dict[str, Path] = {}
    missing: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, files in os.walk(p, onerror=lambda e: _skip(e.filename, e.strerror or str(e))):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    if is_video_name(name, extensions):
                        f = Path(root) / name
                        key = admit_entry(f, roots)
                        if key is not None:
                            found.setdefault(key, f)
            continue
        key, gone = _named(p)
        if gone:
            missing.append(p)
        elif key is not None:
            found.setdefault(key, p)
    return [found[k] for k in sorted(found)], missing
