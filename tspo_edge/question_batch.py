"""Question batches (`ask --batch questions.jsonl`): read and validate every line.

One JSON object a line: `question` (required, a non-empty string of at most 4000 characters) and
optional `video` (a non-empty string), `options` (a list of at most 8 non-empty strings), `frames`
(a whole number from 1 to 256),
`method` (one of tspo_edge.selection.METHODS) and `id` (a string or a whole number); other keys are
kept as they are. `null` means absent. Blank lines are skipped.

`load_batch` keeps the good lines and lists one "file:line: cause" per bad line, so a bad line costs
only itself; `entries` holds both, in the file's order. Only a file that cannot be read at all
(missing, not UTF-8, no questions) raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tspo_edge.errors import BatchError
from tspo_edge.jsonl import read_jsonl
from tspo_edge.limits import MAX_ASK_FRAMES, MAX_OPTIONS, MAX_QUESTION_CHARS
from tspo_edge.selection import METHODS


@dataclass
class Batch:
    path: Path
    items: list[dict] = field(default_factory=list)   # validated lines; each has "line" (1-based)
    errors: list[str] = field(default_factory=list)   # "file:line: cause", one per bad line
    entries: list[tuple[int, dict | str]] = field(default_factory=list)  # (line, item or error), in order

    @property
    def lines(self) -> int:
        return len(self.items) + len(self.errors)

    def bad(self, line: int, error: str) -> None:
        self.errors.append(error)
        self.entries.append((line, error))


def _kind(v) -> str:
    return "null" if v is None else {bool: "true/false", int: "a number", float: "a number", str: "a string",
                                     list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def validate_item(obj, where: str) -> dict:
    """One decoded line -> a clean dict (nulls dropped); BatchError naming `where` otherwise."""
    if not isinstance(obj, dict):
        raise BatchError(f"{where}: expected a JSON object, got {_kind(obj)}")
    d = {k: v for k, v in obj.items() if v is not None}
    q = d.get("question")
    if not isinstance(q, str) or not q.strip():
        raise BatchError(f"{where}: \"question\" must be a non-empty string"
                         + ("" if "question" not in d else f", got {_kind(q)}"))
    opts = d.get("options")
    length = len(q) + (sum(len(o) for o in opts if isinstance(o, str)) if isinstance(opts, list) else 0)
    if length > MAX_QUESTION_CHARS:
        raise BatchError(f"{where}: the question has {length} characters with its options, "
                         f"at most {MAX_QUESTION_CHARS} are taken")
    if "video" in d and (not isinstance(d["video"], str) or not d["video"].strip()):
        raise BatchError(f"{where}: \"video\" must be a non-empty string (a path), got {_kind(d['video'])}")
    if "frames" in d:
        n = d["frames"]
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0 or n > MAX_ASK_FRAMES:
            shown = json.dumps(n)[:40] if isinstance(n, (int, float, str)) else _kind(n)
            raise BatchError(f"{where}: \"frames\" must be a positive whole number, got {shown} "
                             f"(at most {MAX_ASK_FRAMES})")
    if "method" in d and d["method"] not in METHODS:
        shown = json.dumps(d["method"]) if isinstance(d["method"], str) else _kind(d["method"])
        raise BatchError(f"{where}: \"method\" must be one of {', '.join(METHODS)}, got {shown}")
    if "options" in d:
        opts = d["options"]
        if not isinstance(opts, list) or not all(isinstance(o, str) and o.strip() for o in opts):
            raise BatchError(f"{where}: \"options\" must be a list of non-empty strings")
        if len(opts) > MAX_OPTIONS:
            raise BatchError(f"{where}: \"options\" has {len(opts)} entries, at most {MAX_OPTIONS} are supported")
    if "id" in d and (isinstance(d["id"], bool) or not isinstance(d["id"], (str, int))):
        raise BatchError(f"{where}: \"id\" must be a string or a whole number, got {_kind(d['id'])}")
    return d


def load_batch(path) -> Batch:
    """Every line validated; good lines in `items`, bad ones in `errors` ("file:line: cause")."""
    batch = Batch(Path(path))
    for n, obj in read_jsonl(path, BatchError):
        try:
            if isinstance(obj, str):  # the line's error: it is not JSON
                raise BatchError(obj)
            item = validate_item(obj, f"{path}:{n}")
        except BatchError as e:
            batch.bad(n, str(e))
            continue
        item["line"] = n
        batch.items.append(item)
        batch.entries.append((n, item))
    if not batch.items and not batch.errors:
        raise BatchError(f"{path}: no questions")
    return batch


def read_batch(path) -> list[dict]:
    """All-or-nothing form of load_batch: the first bad line raises BatchError (with the count of others)."""
    batch = load_batch(path)
    if batch.errors:
        more = len(batch.errors) - 1
        raise BatchError(batch.errors[0] + (f" (and {more} more bad line{'s' * (more > 1)})" if more else ""))
    return batch.items
