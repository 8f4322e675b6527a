"""Which files an index run looks at: video files, given directly or found in folders."""

from __future__ import annotations

import os
from pathlib import Path

from tspo_edge.video import VIDEO_EXTENSIONS


def find_videos(paths, *, extensions=VIDEO_EXTENSIONS) -> tuple[list[Path], list[Path]]:
    """(videos, missing): files given explicitly are kept whatever their extension; folders are
    walked recursively for files with a video extension (hidden entries skipped). Sorted, unique."""
    found: dict[str, Path] = {}
    missing: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.setdefault(str(p.resolve()), p)
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                        f = Path(root) / name
                        found.setdefault(str(f.resolve()), f)
        else:
            missing.append(p)
    return [found[k] for k in sorted(found)], missing
