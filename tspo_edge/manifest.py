"""DIR/manifest.json of an export folder: the format, and how a runtime reads and checks it.

The runtime refuses a folder whose manifest does not match what it is asked to run
(another agent or encoder id, a missing file, a changed hash), with the reason.
`tspo_edge.export` writes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import ManifestError

MANIFEST = "manifest.json"
FORMAT = "tspo-edge-export"
FORMAT_VERSION = 1


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
    """Every listed file exists and has the hash recorded at export time."""
    for entry in entries.values():
        path = Path(model_dir) / entry["file"]
        if not path.is_file():
            raise ManifestError(f"{path}: listed in {MANIFEST} but missing")
        if sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{path}: sha256 differs from {MANIFEST} (file changed after export)")


def check_id(model_dir: Path, manifest: dict, part: str, want: str | None) -> dict:
    """The manifest's `agent`/`encoder` section, refusing a missing one or another id than `want`."""
    section = manifest.get(part)
    where = Path(model_dir) / MANIFEST
    if not section:
        raise ManifestError(f"{where}: the export holds no {part}")
    if want is not None and section["id"] != want:
        raise ManifestError(f"{where}: {part} id {section['id']!r} does not match the requested {want!r}")
    return section
