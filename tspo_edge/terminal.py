"""Text bound for a terminal: what a file name, a batch line, a server or an MLLM says is shown,
never obeyed. Every such string is printed through `printable` (one helper, every command)."""

from __future__ import annotations


def printable(text) -> str:
    """Control and format characters (escape sequences, NUL, bidi overrides) shown escaped, as
    Python writes them (\\x1b, \\u202e); newlines too, so one item stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))
