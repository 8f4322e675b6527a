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


@app.command("index")
def index_cmd(
    paths: List[Path] = typer.Argument(..., exists=True, help="Video files and/or folders (searched recursively by video extension)."),
    db: Path = DbOpt,
    encoder: str = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    fps: float = typer.Option(1.0, "--fps", help="Frames sampled per second of video (TSPO: 1)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="At most this many frames per video, spread uniformly."),
    decoder: str = typer.Option("pyav", "--decoder", help="pyav, or decord where installed."),
    force: bool = typer.Option(False, "--force", help="Re-index every file, even unchanged ones."),
    json_out: bool = JsonOpt,
) -> None:
    """Index videos into the SQLite file: decode -> embeddings -> event features. Incremental and resumable."""
    import json

    from index import index_paths
    from index.report import IndexProgress, print_summary

    try:
        with IndexProgress(err) as progress:
            summary = index_paths(paths, db=db, encoder=encoder, agent=agent, fps=fps, max_frames=max_frames,
                                  decoder=decoder, force=force, progress=progress)
    except KeyboardInterrupt:
        err.print("interrupted: the videos finished so far are saved; run the same command to resume")
        raise typer.Exit(130)
    except TspoError as e:
        fail(e)
    print_summary(err, summary)
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    raise typer.Exit(0 if summary.ok else 1)


@app.command("info")
def info_cmd(db: Path = DbOpt, json_out: bool = JsonOpt) -> None:
    """List the videos in an index: path, duration, frames, status, encoder."""
    import dataclasses
    import json

    from index.report import videos_table
    from tspo_edge.store import Store

    try:
        with Store(db, readonly=True) as store:
            rows, meta = store.videos(), {k: store.meta(k) for k in ("schema_version", "encoder_id", "agent_id", "agent_source")}
    except TspoError as e:
        fail(e)
    if json_out:
        typer.echo(json.dumps({"db": str(db), **meta, "videos": [dataclasses.asdict(r) for r in rows]}, indent=2))
    else:
        err.print(f"encoder: {meta['encoder_id']}  agent: {meta['agent_id']}  schema: {meta['schema_version']}", highlight=False)
        out.print(videos_table(rows, db=str(db)))


@app.command("export")
def export_cmd(
    ckpt: str = typer.Argument(..., help="Agent checkpoint (TSPO-0.4B folder, training or tspo-edge checkpoint), or similarity:<dim>."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to write agent.onnx, image.onnx, text.onnx, manifest.json."),
    encoder: str = typer.Option("lite", "--encoder", help="Encoder whose towers to export: 'lite', a CLIP/SigLIP hub id or folder, or 'none'."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 weights and math (inputs and outputs stay float32)."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build TensorRT engines (fp16; needs tensorrt and an NVIDIA GPU)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 or newer)."),
    heads: int = typer.Option(8, "--heads", help="Attention heads, for checkpoints that do not record them."),
    window: int = typer.Option(12, "--window", help="Attention window w, for checkpoints that do not record it."),
    json_out: bool = JsonOpt,
) -> None:
    """Export the agent's event encoder and the encoder's towers to ONNX (and TensorRT) for edge runtimes."""
    import json

    from export.api import export_model

    try:
        with err.status("exporting…"):
            manifest = export_model(ckpt, out_dir, encoder=encoder, fp16=fp16, tensorrt=tensorrt, opset=opset,
                                    heads=heads, window=window, log=lambda m: err.print(m, markup=False, highlight=False,
                                                                            soft_wrap=True))
    except TspoError as e:
        fail(e)
    for part, entry in manifest["models"].items():
        shapes = ", ".join(f"{v['name']}{v['shape']}" for v in entry["inputs"])
        err.print(f"{part:6s} {out_dir / entry['file']}  ({entry['bytes'] / 1e6:.1f} MB; {shapes})", markup=False, highlight=False, soft_wrap=True)
    for part, eng in ((manifest.get("tensorrt") or {}).get("engines") or {}).items():
        err.print(f"{part:6s} {out_dir / eng['file']}  (TensorRT, {eng['bytes'] / 1e6:.1f} MB)", markup=False, highlight=False, soft_wrap=True)
    err.print(f"manifest {out_dir / 'manifest.json'}", markup=False, highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(manifest, indent=2))


if __name__ == "__main__":  # pragma: no cover
    app()
