"""DIR/manifest.json of an export folder: the format, and how a runtime reads and checks it.

The runtime refuses a folder whose manifest does not match what it is asked to run
(another agent or encoder id, a missing file, a changed hash), with the reason.
`tspo_edge.export` writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tspo_edge.errors import ManifestError

MANIFEST = "manifest.json"
FORMAT = "tspo-edge-export"
FORMAT_VERSION = 1
# The files whose sha256 was checked, by file: [sha256, size, mtime_ns, ctime_ns, inode]. A file
# whose stat is unchanged since is not hashed again (a 90 MB text tower costs 0.2 s a start; a
# CLIP-L one 1 s): any write or replacement changes its ctime or inode, which no user can set.
VERIFIED = ".verified.json"
RACY_NS = 2_000_000_000  # a check this soon after a file's last change is not remembered (coarse clocks)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (not a `tspo-edge export` folder)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
    return manifest


def verify_files(model_dir: Path, entries: dict[str, dict]) -> None:
    """Every listed file exists and has the hash recorded at export time (hashed once; see VERIFIED)."""
    memo = _read_verified(Path(model_dir))
    changed = False
    for entry in entries.values():
        path = Path(model_dir) / entry["file"]
        if not path.is_file():
            raise ManifestError(f"{path}: listed in {MANIFEST} but missing")
        st = path.stat()
        stamp = [entry["sha256"], st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if memo.get(entry["file"]) == stamp:
            continue
        if sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{path}: sha256 differs from {MANIFEST} (file changed after export)")
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            memo[entry["file"]], changed = stamp, True
    if changed:
        _write_verified(Path(model_dir), memo)


def _read_verified(model_dir: Path) -> dict:
    try:
        memo = json.loads((model_dir / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_verified(model_dir: Path, memo: dict) -> None:
    """Best effort (a read-only export folder is hashed at every start), replaced in one step."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=VERIFIED, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(memo, f)
        os.replace(tmp, model_dir / VERIFIED)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def check_id(model_dir: Path, manifest: dict, part: str, want: str | None) -> dict:
    """The manifest's `agent`/`encoder` section, refusing a missing one or another id than `want`."""
    section = manifest.get(part)
    where = Path(model_dir) / MANIFEST
    if not section:
        raise ManifestError(f"{where}: the export holds no {part}")
    if want is not None and section["id"] != want:
        raise ManifestError(f"{where}: {part} id {section['id']!r} does not match the requested {want!r}")
    return section
