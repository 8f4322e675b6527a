"""How `tspo-edge train` shows itself: a rich progress bar with the latest rewards (stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


class TrainProgress:
    """on_step callback for Trainer: steps done, R_A, R_T, loss, tau, samples/s."""

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
        info = (f"R_A {_fmt(rec['R_A'])}  R_T {_fmt(rec['R_T'])}  loss {_fmt(rec['loss'], '+.3f')}  "
                f"tau {rec['tau']:.4f}  {_fmt(rec['samples_per_s'], '.1f')} samples/s")
        if self.task is None:
            self.task = self.progress.add_task("train", total=total, completed=rec["step"] - 1, info="")
        self.progress.update(self.task, completed=rec["step"], info=info)
