"""What every command of the face shares: the consoles (tables and progress on stderr, --json on
stdout), the option declarations, printing helpers, and the note a command leaves for Ctrl-C.

Errors are not mapped here: commands raise, and cli.py's `Edge` turns them into one line and an
exit status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn, Optional

import typer

from tspo_edge.checks import json_safe
from tspo_edge.index.console import OutputConsole
from tspo_edge.paths import resolve_db
from tspo_edge.selection import METHODS
from tspo_edge.terminal import printable

# `train` and `export` import torch, so they are imported by their commands: an ask or a search
# with the ONNX runtime then starts without torch (tests/test_cli_startup.py checks it).
err = OutputConsole(stderr=True)  # in a pipe or a file: no wrapping, tables as tab-separated lines

out = OutputConsole()

METHOD_HELP = " | ".join(METHODS)


def _db(value: Optional[Path]) -> Path:
    """--db, else $TSPO_EDGE_DB, else the per-user index (tspo_edge.paths); a note when it is ./tspo-edge.db."""
    choice = resolve_db(value)
    if choice.note:
        err.print("note: " + choice.note, highlight=False, soft_wrap=True, markup=False)
    return choice.path


DbOpt = typer.Option(None, "--db", callback=_db, show_default=False,
                     help="SQLite index file (default: $TSPO_EDGE_DB, else one per user: "
                          "$XDG_DATA_HOME/tspo-edge/tspo-edge.db or ~/.local/share/tspo-edge/tspo-edge.db).")

EncoderOpt = typer.Option(None, "--encoder", help="'lite' (embedded, offline; the default), a Hugging Face CLIP/SigLIP hub id, or a folder (a TSPO-0.4B folder brings its agent).")

AgentOpt = typer.Option(None, "--agent", help="Agent checkpoint (TSPO-0.4B folder, training or tspo-edge checkpoint). Default: the encoder folder's TSPO-0.4B selector, else similarity.")

JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")

RuntimeOpt = typer.Option(None, "--runtime", help="torch; onnx (a `tspo-edge export` folder run by ONNX Runtime); auto (the per-user ONNX cache, which the first torch run writes, else torch). Default: onnx with --model-dir, else $TSPO_EDGE_RUNTIME, else auto for ask and search, torch for the others.")

ModelDirOpt = typer.Option(None, "--model-dir", help="The folder written by `tspo-edge export` (implies --runtime onnx).")

DeviceOpt = typer.Option(None, "--device", help="Where torch models run: cpu, cuda, cuda:1, mps (default: the accelerator if there is one).")

ServerOpt = typer.Option(None, "--server", envvar="TSPO_EDGE_SERVER", show_envvar=False,
                         help="Ask a running `tspo-edge serve` at this URL (default $TSPO_EDGE_SERVER); the token comes from $TSPO_EDGE_TOKEN.")

FpsOpt = typer.Option(1.0, "--fps", help="Frames sampled per second of video (TSPO: 1).")

MaxFramesOpt = typer.Option(None, "--max-frames", help="At most this many frames per video, spread uniformly.")


def examples(*lines: str) -> str:
    """A help epilog of examples, kept line by line."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


interrupt_note: list[str] = []  # a phase of the running command whose interrupt keeps something else


def on_interrupt(message: str) -> None:
    """From here on, Ctrl-C prints `message` (a phase whose interrupt keeps something else)."""
    interrupt_note[:] = [message]


def fail(e: BaseException, code: int | None = None) -> NoReturn:
    """Print a one-line error and exit with its code."""
    msg = printable(" ".join(str(e).split()) or type(e).__name__)
    err.print("error: " + msg, highlight=False, soft_wrap=True, markup=False, style="bold red")
    raise typer.Exit(code if code is not None else getattr(e, "exit_code", 2))


def interrupted(message: str = "interrupted") -> NoReturn:
    err.print(message, highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def cache_onnx(models, runtime: Optional[str]) -> None:
    """Write the per-user ONNX cache after a command that loaded its encoder with torch (once;
    later asks and searches load it with ONNX Runtime); one line says what happened. Not when
    the user chose torch (--runtime torch, $TSPO_EDGE_RUNTIME=torch)."""
    if not models.cache_wanted(runtime_given=runtime is not None):
        return  # cheap: no torch import unless there is something to write
    from tspo_edge.export.cache import describe, write_cache  # optional: the [torch] extra (export/ traces with torch)

    on_interrupt("interrupted while caching the ONNX towers: nothing was cached; the command's work is done")
    with err.status("caching the ONNX towers (once)…"):
        w = write_cache(models)
    if w is not None:
        say(printable(describe(w)))


def say(line: str) -> None:
    """One plain line on stderr (no markup, no wrapping)."""
    err.print(line, highlight=False, markup=False, soft_wrap=True)


def say_escaped(line: str) -> None:
    """A line a running command passes on (serve's start, its watch) on stderr, escaped."""
    err.print(printable(line), highlight=False, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"warning: {printable(message)}", highlight=False, markup=False, soft_wrap=True, style="yellow")


def warn_line(warning: Optional[str], where: str = "") -> None:
    if warning:
        err.print(f"warning: {where}{printable(warning)}", highlight=False, markup=False, soft_wrap=True,
                  style="yellow")


def dump(obj) -> None:
    """JSON on stdout; never bare NaN (invalid JSON): non-finite numbers become null."""
    typer.echo(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False))
