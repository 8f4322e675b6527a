"""JSON Lines files a user hands in (`ask --batch`, training data): the bytes read, the text
checked as UTF-8 (a BOM allowed), and each non-blank line parsed; a cause names file:line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tspo_edge.errors import TspoError


def read_jsonl(path: str | Path, error: type[TspoError]) -> Iterator[tuple[int, object | str]]:
    """(line number, the line's JSON value) for every non-blank line, or (line number, "file:line:
    not JSON (cause)") for a line that does not parse: the caller decides whether a bad line
    costs only itself. A file that cannot be read or is not UTF-8 raises `error` at once."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a JSON Lines file") from None
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            yield n, f"{path}:{n}: not JSON ({e.msg} at column {e.colno})"
        except RecursionError:
            yield n, f"{path}:{n}: not JSON (nested too deeply)"
