"""What `tspo-edge search` shows of a SearchResult: a header line (what was found where, or why
nothing was), a line per moment, a timing line, and the --json object."""

from __future__ import annotations

from tspo_edge.terminal import printable
from tspo_edge.timestamps import mmss


def header(question: str, res, db) -> str:
    """One line before the list: what was found where, or why nothing was."""
    f = res.filters
    where = "; ".join(part for part in f.describe().split("; ") if not part.startswith("floor"))
    if not res.searched:
        return (f"no moments: no indexed video matches ({where})" if f.narrows
                else f"no moments: nothing is indexed in {db}")
    if not res.moments:
        return (f'no moments for "{question}" score s>={f.min_score:g} in {res.searched} videos'
                + (f" ({where})" if f.narrows else "") + " (--min-score lowers the floor)")
    n = len(res.moments)
    return (f'{n} moment{"s" * (n != 1)} in {len({m.video_id for m in res.moments})} of {res.searched} videos '
            f'for "{question}" ({f.describe()})')


def moment_lines(res) -> list[str]:
    """Rank, time, score and path of each moment (the path escaped for a terminal)."""
    return [f"{rank:3d}  {mmss(m.time):>8s}  s={m.score:6.1f}  {printable(m.path)}"
            for rank, m in enumerate(res.moments, 1)]


def timing(res, waited: float) -> str | None:
    """How long the search and the whole command took (None when nothing was found)."""
    if not res.moments:
        return None
    return (f"{res.frames} frames searched in {res.timings.get('total_ms', 0):.1f} ms; "
            f"{waited:.2f} s in all (start-up and the text encoder included)")


def to_json(question: str, res, waited: float) -> dict:
    """The --json object: the result, each moment with its mm:ss, the seconds since start."""
    d = res.to_dict()
    for m in d["moments"]:
        m["timestamp"] = mmss(m["time"])
    return {"question": question, **d, "seconds_since_start": round(waited, 3)}
