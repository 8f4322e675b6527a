"""How `tspo-edge train` shows itself: a rich progress bar with the latest rewards (stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def format_step(rec: dict) -> str:
    """One step's metrics for people: rewards, what moves (gradient norm, policy entropy), rates.

    The surrogate loss is left out: it is 0 in value by construction, so it cannot show learning.
    R_T reads '-' on steps without a specific sample (no ground-truth segment to score)."""
    return (f"R_A {_fmt(rec.get('R_A'))}  R_T {_fmt(rec.get('R_T'))}  |grad| {_fmt(rec.get('grad_norm'), '.3g')}  "
            f"H {_fmt(rec.get('entropy'), '.2f')}  lr {_fmt(rec.get('lr'), '.2e')}  tau {_fmt(rec.get('tau'), '.4f')}  "
            f"{_fmt(rec.get('samples_per_s'), '.1f')} samples/s")


class TrainProgress:
    """on_step callback for Trainer: steps done and `format_step` of the latest step."""

    def __init__(self, console: Console):
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console)
        self.task = None

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, rec: dict, total: int) -> None:
        info = format_step(rec)
        if self.task is None:
            self.task = self.progress.add_task("train", total=total, completed=rec["step"] - 1, info="")
        self.progress.update(self.task, completed=rec["step"], info=info)


def summary_text(summary: dict) -> str | None:
    """The lines `tspo-edge train` ends with: steps and the last step, the agent, the plot (and the
    TSPO-0.4B layout when one was written); None when the run made no plot."""
    if not summary.get("plot"):
        return None
    return (f"{summary['steps']} steps; last step: {format_step(summary.get('last') or {})}\n"
            f"agent  {summary.get('agent')}\nplot   {summary['plot']}"
            + (f"\nTSPO-0.4B layout {summary['official']}" if summary.get("official") else ""))
