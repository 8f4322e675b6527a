"""Per-step metrics: JSONL (always), TensorBoard (when installed), and the end-of-run PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LOG_FILE = "train_log.jsonl"


class MetricsLog:
    """Appends one JSON object per optimizer step to <out>/train_log.jsonl."""

    def __init__(self, out: Path, *, resume_step: int = 0, tensorboard: bool = True):
        self.path = Path(out) / LOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.exists():  # drop steps logged after the checkpoint
            keep = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= resume_step]
            self.path.write_text("".join(l + "\n" for l in keep))
        elif not resume_step:
            self.path.write_text("")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard (the [dev] extra)

                self.tb = SummaryWriter(str(Path(out) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
            except ImportError:  # tensorboard is optional
                self.tb = None

    def write(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None:
                    self.tb.add_scalar(f"train/{k}", v, rec["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(out: Path) -> list[dict]:
    p = Path(out) / LOG_FILE
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if len(y) < 3 or k < 2:
        return y
    k = min(k, len(y))
    pad = np.pad(y, (k // 2, k - 1 - k // 2), mode="edge")
    return np.convolve(pad, np.ones(k) / k, mode="valid")


def plot_run(records: list[dict], probe: dict | None, path: Path, title: str = "TSPO training") -> Path:
    """Reward curves over steps and, for one fixed sample, the agent's score curve over
    time (before and after training) with the ground-truth segment shaded."""
    import matplotlib  # optional: matplotlib (the [torch] extra), only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: as matplotlib above (after use("Agg"))

    moves = any(r.get("grad_norm") is not None for r in records)
    panels = 1 + bool(probe) + moves
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels), squeeze=False)
    ax = axes[0, 0]
    steps = np.array([r["step"] for r in records])
    k = max(1, len(records) // 20)
    for key, label in (("R_A", "$R_A$ (accuracy)"), ("R_T", "$R_T$ (temporal)"), ("reward_mean", "reward")):
        vals = np.array([np.nan if r.get(key) is None else r[key] for r in records], dtype=float)
        if len(vals) and np.isfinite(vals).any():
            ok = np.isfinite(vals)
            ax.plot(steps[ok], vals[ok], alpha=0.25)
            ax.plot(steps[ok], _smooth(vals[ok], k), label=label, color=ax.lines[-1].get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(True, linestyle="--", alpha=0.4)
    ax.legend(loc="best")
    if moves:  # what moves: the surrogate loss is 0 in value, the gradient and the entropy are not
        ax = axes[1, 0]
        for key, label, color in (("grad_norm", "|grad| (before clipping)", "tab:red"),
                                  ("entropy", "policy entropy (nats)", "tab:purple")):
            vals = np.array([np.nan if r.get(key) is None else r[key] for r in records], dtype=float)
            ok = np.isfinite(vals)
            if ok.any():
                ax.plot(steps[ok], vals[ok], alpha=0.25, color=color)
                ax.plot(steps[ok], _smooth(vals[ok], k), label=label, color=color)
        ax.set_xlabel("step")
        ax.grid(True, linestyle="--", alpha=0.4)
        ax.legend(loc="best")
    if probe:
        ax = axes[-1, 0]
        mask = np.asarray(probe["mask"], dtype=bool) if probe.get("mask") is not None else None
        t = np.arange(len(probe["before"]))
        if mask is not None:
            edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
            for a, b in zip(edges[::2], edges[1::2]):
                ax.axvspan(a - 0.5, b - 0.5, color="tab:green", alpha=0.15,
                           label="true segment" if a == edges[0] else None)
        ax.plot(t, probe["before"], label="score before training", color="tab:gray", alpha=0.8)
        ax.plot(t, probe["after"], label="score after training", color="tab:orange")
        ax.set_xlabel("position in the sample (frames)")
        ax.set_ylabel("s * tau  (cos z,q + cos x,q)")
        ax.set_title(probe.get("title", "one fixed sample"))
        ax.grid(True, linestyle="--", alpha=0.4)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
