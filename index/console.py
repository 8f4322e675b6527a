"""How `tspo-edge index` and `tspo-edge info` show themselves: rich progress and tables (stderr),
and how every command's output reads in a pipe (`OutputConsole`, `print_table`)."""

from __future__ import annotations

import time

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tspo_edge.pipeline import IndexEvent
from tspo_edge.terminal import printable

from tspo_edge.index.engine import IndexSummary


def shown(text) -> str:
    """Text for a rich markup string: printable and markup-escaped."""
    return escape(printable(text))


PIPE_WIDTH = 1 << 15  # columns of a console that is not a terminal: lines are never wrapped or cut


class OutputConsole(Console):
    """A rich console that knows when it writes to a pipe or a file rather than a terminal.

    In a terminal it is rich's console. Elsewhere (`tspo-edge info | cat`, a log file) its width
    is unbounded, so a long path or a progress line is never wrapped or cut with an ellipsis;
    tables printed through `print_table` become tab-separated lines."""

    @property
    def size(self) -> ConsoleDimensions:
        if self.is_terminal:
            return super().size
        return ConsoleDimensions(PIPE_WIDTH, super().size.height)

    @size.setter
    def size(self, new_size) -> None:
        Console.size.fset(self, new_size)


def table_rows(table: Table) -> list[list[str]]:
    """A rich table's header and rows as plain text (markup and styles dropped)."""
    def plain(cell) -> str:
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(cell).plain if isinstance(cell, str) else cell
        return printable(text).strip()

    columns = table.columns
    rows = [[plain(c.header) for c in columns]]
    rows += [list(r) for r in zip(*([plain(cell) for cell in c.cells] for c in columns))]
    return rows


def print_table(console: Console, table: Table, *, note: Console | None = None) -> None:
    """A table on `console`: boxed in a terminal; elsewhere one tab-separated line per row, a
    header line first (cells never wrap; tabs and newlines in them are shown escaped). The
    title and caption then go to `note` (default: the same console), as plain lines."""
    if console.is_terminal:
        console.print(table)
        return
    note = note or console
    for extra in (table.title, table.caption):
        if extra:
            note.print(Text.from_markup(extra).plain if isinstance(extra, str) else extra,
                       highlight=False, markup=False, soft_wrap=True)
    lines = "".join("\t".join(row) + "\n" for row in table_rows(table))
    console.file.write(lines)  # not console.print: rich would expand the tabs to spaces
    console.file.flush()


def bar(console: Console) -> list:
    """A progress bar column in a terminal; none in a pipe or a log file (counts and times stay)."""
    return [BarColumn()] if console.is_terminal else []


class IndexProgress:
    """A progress callback for `index_paths` drawing files, frames and frames/s on a console."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), *bar(console), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            console=console, transient=False)
        self.files = self.frames = None
        self.n_frames = 0
        self.t0 = time.perf_counter()

    def __enter__(self) -> "IndexProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, ev: IndexEvent) -> None:
        p = self.progress
        if ev.kind == "start":
            self.console.print(f"encoder: {shown(ev.encoder_id or '?')}\nagent:   {shown(ev.agent or '?')} "
                               f"[dim]({shown(ev.agent_id or '?')})[/]", highlight=False, soft_wrap=True)
            self.files = p.add_task("files", total=ev.total_files, rate="")
            self.frames = p.add_task("frames", total=None, rate="")
            self.t0 = time.perf_counter()
        elif ev.kind == "file":
            name = ev.path.rsplit("/", 1)[-1] if ev.path else ""
            p.reset(self.frames, total=ev.expected_frames, description=f"frames {shown(name[:40])}",
                    rate=self._rate())
        elif ev.kind == "frames":
            self.n_frames += ev.frames
            p.advance(self.frames, ev.frames)
            p.update(self.frames, rate=self._rate())
        elif ev.kind == "done":
            p.advance(self.files, 1)
            r = ev.result
            if r is not None and r.status == "failed":
                p.console.print(f"[red]failed[/] {shown(r.error or '')}", highlight=False)

    def _rate(self) -> str:
        dt = time.perf_counter() - self.t0
        return f"{self.n_frames / dt:6.1f} frames/s" if dt > 0 and self.n_frames else ""


def print_summary(console: Console, s: IndexSummary) -> None:
    t = Table(title=f"index {s.db}", title_justify="left")
    for col in ("indexed", "events recomputed", "skipped", "failed", "frames", "frames/s", "seconds"):
        t.add_column(col, justify="right")
    fps = f"{s.frames_per_s:.1f}" if s.frames_per_s else "-"
    t.add_row(str(s.count("indexed")), str(s.count("events")), str(s.count("skipped")),
              str(len(s.failed)), str(s.frames), fps, f"{s.seconds:.1f}")
    print_table(console, t)
    if s.failed:
        f = Table(title="failed files", title_justify="left", show_lines=False)
        f.add_column("file", overflow="fold")
        f.add_column("error", overflow="fold")
        for r in s.failed:
            err = r.error or ""
            if err.startswith(r.path + ": "):
                err = err[len(r.path) + 2:]
            f.add_row(shown(r.path), shown(err))
        print_table(console, f)
        unchanged = sum(r.unchanged for r in s.failed)
        if unchanged:
            console.print(f"{unchanged} of them failed before and are unchanged since: not tried again "
                          "(--retry-failed tries them)", highlight=False, markup=False)


def videos_table(rows, *, db: str, encoder_id: str | None = None) -> Table:
    """The videos of an index. All indexed rows share the index's encoder (shown in the title)."""
    t = Table(title=f"{db}: {len(rows)} videos, encoder {encoder_id or '-'}", title_justify="left")
    t.add_column("id", justify="right")
    t.add_column("path", overflow="fold", ratio=3)
    t.add_column("duration", justify="right", no_wrap=True)
    t.add_column("frames", justify="right")
    t.add_column("status")
    t.add_column("agent", no_wrap=True)
    t.add_column("error", overflow="fold", ratio=2)
    for r in rows:
        status = "[green]indexed[/]" if r.status == "indexed" else f"[red]{shown(r.status)}[/]"
        err = r.error or ""
        if err.startswith(r.path + ": "):
            err = err[len(r.path) + 2:]
        t.add_row(str(r.id), shown(r.path), "-" if r.duration is None else f"{r.duration:.1f}s",
                  "-" if r.frame_count is None else str(r.frame_count), status,
                  shown((r.agent_id or "-").rsplit(":", 1)[-1]), shown(err))
    return t


class IndexingProgress:
    """Progress for an ask that must index its video first: silent unless indexing happens."""

    def __init__(self, console, *, encoder_id: str | None = None):
        self.console = console
        self.encoder_id = encoder_id
        self.agent_id: str | None = None  # set by Asker before indexing
        self._bar = None

    def __call__(self, ev) -> None:
        if self._bar is None:
            self.console.print(f"indexing {printable(ev.path)} first (once; later questions reuse the index)",
                               highlight=False, markup=False)
            self._bar = IndexProgress(self.console).__enter__()
            self._bar(IndexEvent("start", total_files=1, encoder_id=self.encoder_id,
                                 agent_id=self.agent_id, agent="the ask's agent"))
        self._bar(ev)

    def close(self) -> None:
        if self._bar is not None:
            self._bar(IndexEvent("done"))
            self._bar.__exit__(None, None, None)
            self._bar = None


def watch_line(r) -> str:
    """`index --watch`'s line for one file's result: status, path, and frames and time or the error."""
    what = f"{r.frames} frames, {r.seconds:.1f} s" if r.status in ("indexed", "events", "restored") else r.error
    return f"{r.status} {printable(r.path)}" + (f" ({printable(what)})" if what else "")
