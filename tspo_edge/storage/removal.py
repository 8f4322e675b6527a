"""Taking videos out of an index: `tspo-edge rm` (videos named by path, folder or id) and
`tspo-edge prune` (videos whose files are gone). Only the index changes; files on disk are
never touched. Each call removes in one transaction (`Store.remove_videos`), and the search
data of a removed video goes with its features in that same transaction."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from tspo_edge.errors import StoreError
from tspo_edge.storage.store import Store, VideoRow, canonical_path

__all__ = ["RemoveResult", "PruneResult", "remove", "prune", "gone"]


@dataclass
class RemoveResult:
    removed: list[VideoRow] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)   # the names given that match no video

    def to_dict(self) -> dict:
        return {"removed": [{"id": r.id, "path": r.path, "status": r.status} for r in self.removed],
                "not_found": self.not_found}


@dataclass
class PruneResult:
    videos: list[tuple[VideoRow, str]] = field(default_factory=list)  # (row, why it is gone)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run,  # videos: removed, or with dry_run the ones that would be
                "videos": [{"id": r.id, "path": r.path, "status": r.status, "reason": why} for r, why in self.videos]}


def resolve(store: Store, ref: str) -> list[VideoRow]:
    """The videos a name means: an indexed path, every indexed video under a folder, or an id."""
    ref = str(ref)
    row = store.find_video(ref)
    if row is not None:
        return [row]
    path = Path(ref)
    if path.is_dir():
        prefix = canonical_path(path).rstrip(os.sep) + os.sep
        return [r for r in store.videos() if r.path.startswith(prefix)]
    if ref.isdigit() and len(ref) < 19:
        try:
            return [store.get_video(int(ref))]
        except StoreError:
            return []
    return []


def remove(store: Store, refs) -> RemoveResult:
    """Remove the videos named by `refs` (paths, folders, ids); names matching none are listed."""
    result, ids = RemoveResult(), {}
    for ref in refs:
        rows = resolve(store, ref)
        if not rows:
            result.not_found.append(str(ref))
        for r in rows:
            ids.setdefault(r.id, r)
    result.removed = store.remove_videos(list(ids))
    return result


def _why_gone(row: VideoRow) -> str | None:
    if row.status == "missing":
        return "marked missing"
    try:
        os.stat(row.path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file"
        return None  # cannot tell (permissions, I/O): kept
    return None


def gone(store: Store) -> list[tuple[VideoRow, str]]:
    """Videos whose file is gone: status 'missing', or nothing at their path any more."""
    found = []
    for row in store.videos():
        why = _why_gone(row)
        if why is not None:
            found.append((row, why))
    return found


def prune(store: Store, *, dry_run: bool = False) -> PruneResult:
    """Remove every video whose file is gone (`gone`); with `dry_run`, only list them."""
    videos = gone(store)
    if not dry_run and videos:
        removed = {r.id for r in store.remove_videos([r.id for r, _ in videos])}
        videos = [(r, why) for r, why in videos if r.id in removed]
    return PruneResult(videos=videos, dry_run=dry_run)
