"""How a needle run shows itself: a rich table, a JSON file, a PNG plot (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:5.1f}"


def summary_table(result: dict) -> Table:
    """Methods x frames: hit fraction, needle recall, accuracy (percent)."""
    b = result["benchmark"]
    t = Table(title=f"needle benchmark: {b['videos']} videos, {b['questions']} questions", title_justify="left",
              caption=f"encoder {result['encoder']}\nagent {result['agent_id']}\nanswerer {result['answerer']}",
              caption_justify="left")
    for col in ("method", "frames", "hit %", "recall %", "accuracy %"):
        t.add_column(col, justify="left" if col == "method" else "right")
    prev = None
    for r in result["summary"]:
        t.add_row(r["method"] if r["method"] != prev else "", str(r["frames"]), _pct(r["hit"]),
                  _pct(r["recall"]), _pct(r["accuracy"]))
        prev = r["method"]
    return t


def markdown_table(result: dict) -> str:
    """The summary as a markdown table (for docs)."""
    frames = result["frames"]
    lines = ["| method | " + " | ".join(f"{n} frames: hit / recall / acc" for n in frames) + " |",
             "| --- | " + " | ".join("---" for _ in frames) + " |"]
    by = {(r["method"], r["frames"]): r for r in result["summary"]}
    for m in result["methods"]:
        cells = []
        for n in frames:
            r = by.get((m, n))
            cells.append("-" if r is None else f"{_pct(r['hit']).strip()} / {_pct(r['recall']).strip()} / "
                                               f"{_pct(r['accuracy']).strip()}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str | Path, result: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path


def plot(result: dict, path: str | Path) -> Path:
    """Hit fraction, needle recall and accuracy against frames, one line per method."""
    import matplotlib  # optional: the [torch] extra (matplotlib; only the plot needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: as above

    panels = [("hit", "hit fraction (chosen frames in needle)"), ("recall", "needle recall (>= 1 frame in)"),
              ("accuracy", "answer accuracy")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for ax, (key, title) in zip(axes, panels):
        for i, m in enumerate(result["methods"]):
            rows = [r for r in result["summary"] if r["method"] == m and r[key] is not None]
            if rows:  # distinct markers and dashes: methods that choose alike overlap exactly
                ax.plot([r["frames"] for r in rows], [r[key] for r in rows], label=m, alpha=0.85,
                        marker="osv^Dx*"[i % 7], markersize=9 - i, linestyle=["-", "--", ":", "-."][i % 4])
        ax.set_xscale("log", base=2)
        ax.set_xticks(result["frames"], [str(n) for n in result["frames"]])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("frames chosen")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    b = result["benchmark"]
    fig.suptitle(f"needle benchmark ({b['videos']} videos x {b['config']['minutes']:g} min, seed "
                 f"{b['config']['seed']}; {result['encoder']}; answerer {result['answerer']})", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(result: dict, out_dir: str | Path) -> list[Path]:
    """The run's files in `out_dir`: needle.json (the whole result), needle.png (the plot),
    needle.md (the summary as markdown); returns their paths in that order."""
    out = Path(out_dir)
    files = [write_json(out / "needle.json", result), plot(result, out / "needle.png"), out / "needle.md"]
    files[2].write_text(markdown_table(result) + "\n")
    return files
