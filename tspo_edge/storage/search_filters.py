"""What a search is restricted to: folders, a recording-time window, and the relevance floor.

`make_filters` checks and normalises what a user typed (the CLI and the server call it alike);
`allowed_videos` turns the folder and time filters into the set of indexed videos a search
scores, so filtered-out videos cost nothing and a filtered search still returns `top` moments.

Recording time: `videos.recorded_at` (schema 4; the container's `creation_time`, else the file's
mtime when indexed); a video indexed before schema 4 has none and its `mtime` is used.

The relevance floor: a moment is listed only when its score (the agent's logit,
(cos(z,q) + cos(x,q)) / tau) is at least `min_score`. `DEFAULT_MIN_SCORE` (0: the frame's
event and clip embeddings point, on balance, away from the question) is what the CLI and the
API apply unless told otherwise; the library's own default is no floor.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from tspo_edge.errors import InputError
from tspo_edge.storage.store import canonical_path

DEFAULT_MIN_SCORE = 0.0

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WHEN_HELP = "expected a date or time (2026-11-01, 2026-11-01T08:00, 2026-11-01T08:00Z) or an age (7d, 12h, 30m)"


@dataclass(frozen=True)
class Filters:
    under: tuple[str, ...] = ()         # canonical folder (or file) paths; empty: everywhere
    since: float | None = None          # recorded at or after (epoch seconds)
    until: float | None = None          # recorded before (epoch seconds)
    min_score: float | None = None      # the relevance floor (logits); None: none

    @property
    def narrows(self) -> bool:
        """Restricts which videos are searched (folders or times)."""
        return bool(self.under) or self.since is not None or self.until is not None

    def to_dict(self) -> dict:
        return {"in": list(self.under), "since": _iso(self.since), "until": _iso(self.until),
                "min_score": self.min_score}

    def describe(self) -> str:
        """'floor s>=0; in /videos/dashcam; since 2026-11-01 00:00; before 2026-12-01 00:00' (local
        times; `until` is exclusive, so --until 2026-11-30 reads 'before 2026-12-01 00:00'); '' for none."""
        parts = [] if self.min_score is None else [f"floor s>={self.min_score:g}"]
        parts += [f"in {p}" for p in self.under]
        parts += [f"{k} {_local(v)}" for k, v in (("since", self.since), ("before", self.until)) if v is not None]
        return "; ".join(parts)


def parse_when(text: str | float | int, *, end: bool = False, now: float | None = None, what: str = "time") -> float:
    """Epoch seconds of an ISO 8601 date or time (local time when it names no zone) or of an age
    ('7d', '12h', '30m', '90s', '2w': that long before `now`). A number passes as epoch seconds.
    With `end`, a date alone means the end of that day (the start of the next). InputError else."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text):
            raise InputError(f"{what} {text}: not a finite time")
        return float(text)
    s = str(text).strip()
    m = _AGE.fullmatch(s)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2).lower()]
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            day = date.fromisoformat(s) + timedelta(days=1 if end else 0)
            return datetime(day.year, day.month, day.day).timestamp()  # local midnight
        return datetime.fromisoformat(s).timestamp()  # naive: local time
    except (ValueError, OverflowError, OSError):
        raise InputError(f"{what} {s[:60]!r}: {_WHEN_HELP}") from None


def make_filters(under=None, since=None, until=None, min_score: float | None = None, *,
                 now: float | None = None) -> Filters:
    """Checked filters from what a user gave (strings or numbers); InputError names the bad one."""
    folders = []
    for p in under or ():
        if not str(p).strip():
            raise InputError("in: an empty folder path")
        try:
            folders.append(canonical_path(p))
        except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a symlink loop
            raise InputError(f"in {str(p)[:200]!r}: not a usable path ({e})") from None
    t0 = None if since in (None, "") else parse_when(since, now=now, what="since")
    t1 = None if until in (None, "") else parse_when(until, end=True, now=now, what="until")
    if t0 is not None and t1 is not None and t0 >= t1:
        raise InputError(f"since {_local(t0)} is not before until {_local(t1)}: no recording can match")
    if min_score is not None:
        try:
            min_score = float(min_score)
        except (TypeError, ValueError):
            raise InputError(f"min_score {min_score!r}: not a number") from None
        if not math.isfinite(min_score):
            raise InputError(f"min_score {min_score}: not a finite number")
    return Filters(tuple(dict.fromkeys(folders)), t0, t1, min_score)


def filters_from_options(question: str, in_dirs=None, since=None, until=None,
                         min_score: float = DEFAULT_MIN_SCORE) -> Filters:
    """A search command's question and its --in, --since, --until, --min-score, checked before
    any model loads (InputError naming the option)."""
    if not math.isfinite(min_score):
        raise InputError(f"--min-score must be a finite number, got {min_score}")
    if not question.strip():
        raise InputError("the question is empty")
    for folder in in_dirs or ():
        if not Path(folder).expanduser().exists():
            raise InputError(f"{folder}: --in: no such folder")
    return make_filters(in_dirs, since, until, min_score)


def allowed_videos(db, filters: Filters) -> set[int] | None:
    """Ids of the indexed videos under the folders and recorded in the window (None: no such
    filter, every video). Reads only the `videos` table (no blob)."""
    if not filters.narrows:
        return None
    cols = {c.name for c in db["videos"].columns}
    when = "COALESCE(recorded_at, mtime)" if "recorded_at" in cols else "mtime"  # read-only, before schema 4
    rows = db.execute(f"SELECT id, path, {when} FROM videos WHERE status = 'indexed'").fetchall()
    prefixes = [(f, f.rstrip(os.sep) + os.sep) for f in filters.under]
    out = set()
    for vid, path, t in rows:
        if prefixes and not any(path == f or path.startswith(pre) for f, pre in prefixes):
            continue
        if filters.since is not None and (t is None or t < filters.since):
            continue
        if filters.until is not None and (t is None or t >= filters.until):
            continue
        out.add(int(vid))
    return out


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _local(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")
