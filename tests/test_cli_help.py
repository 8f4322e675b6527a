"""Every command's --help, as a user sees it: two or three examples, each running the command
itself, and flags that read as flags (no `<bool>`, no `--json true`). Torch-free."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from tspo_edge.cli import app


def commands(group, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):  # a group (typer's own, or click's)
            yield from commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


ALL = list(commands(typer.main.get_command(app)))


def test_every_command_is_listed():
    assert {"index", "info", "ask", "search", "serve", "export", "train", "doctor"} <= {c[0] for c in ALL}
    assert ("eval", "needle") in ALL and ("eval", "frames") in ALL


@pytest.mark.parametrize("cmd", ALL, ids=" ".join)
def test_help_shows_examples_and_plain_flags(cmd):
    r = CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    text = r.output
    assert "Examples:" in text
    example_lines = [ln.strip() for ln in text.split("Examples:", 1)[1].splitlines() if ln.strip()]
    assert 2 <= len(example_lines) <= 3, example_lines
    assert all(f"tspo-edge {' '.join(cmd)}" in ln for ln in example_lines), example_lines
    assert "<bool>" not in text and "BOOLEAN" not in text
