"""The `tspo-edge` command line: argument parsing and printing only.

Every command calls one library function (tspo_edge, index, train, export) and prints
its result: tables and progress on stderr, `--json` output on stdout.
Exit status: 0 success, 1 partial failure, 2 bad usage or input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from tspo_edge.errors import TspoError

app = typer.Typer(
    name="tspo-edge",
    help="Ask questions about long videos: TSPO keyframe selection over a SQLite index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

DEFAULT_DB = os.environ.get("TSPO_EDGE_DB", "tspo-edge.db")

DbOpt = typer.Option(Path(DEFAULT_DB), "--db", help="SQLite index file (default ./tspo-edge.db or $TSPO_EDGE_DB).")
EncoderOpt = typer.Option("lite", "--encoder", help="'lite' (embedded, offline), a Hugging Face hub id, or a folder.")
AgentOpt = typer.Option(None, "--agent", help="Agent checkpoint (TSPO-0.4B folder, training or tspo-edge checkpoint). Default: see README.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")


def fail(e: Exception, code: int = 2) -> None:
    """Print a one-line error and exit."""
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    raise typer.Exit(getattr(e, "exit_code", code))


if __name__ == "__main__":  # pragma: no cover
    app()
