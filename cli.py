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
EncoderOpt = typer.Option(None, "--encoder", help="'lite' (embedded, offline; the default), a Hugging Face CLIP/SigLIP hub id, or a folder.")
AgentOpt = typer.Option(None, "--agent", help="Agent checkpoint (TSPO-0.4B folder, training or tspo-edge checkpoint). Default: see README.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")
RuntimeOpt = typer.Option("torch", "--runtime", help="torch, or onnx (models exported by `tspo-edge export`, run by ONNX Runtime).")
ModelDirOpt = typer.Option(None, "--model-dir", help="With --runtime onnx: the folder written by `tspo-edge export`.")


def load_models(runtime: str, model_dir: Optional[Path], encoder: Optional[str], agent: Optional[str]):
    """(encoder, agent) for --runtime: an Encoder object, and the agent (or its spec / None for the default)."""
    if runtime == "torch" and model_dir is None:
        from tspo_edge.encoders import load_encoder

        return load_encoder(encoder or "lite"), agent
    from export.runtime import load_runtime

    enc, ag = load_runtime(runtime, model_dir, encoder, agent)
    return enc, (ag if ag is not None else agent)


def fail(e: Exception, code: int = 2) -> None:
    """Print a one-line error and exit."""
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(getattr(e, "exit_code", code))


@app.command("index")
def index_cmd(
    paths: List[Path] = typer.Argument(..., exists=True, help="Video files and/or folders (searched recursively by video extension)."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    fps: float = typer.Option(1.0, "--fps", help="Frames sampled per second of video (TSPO: 1)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="At most this many frames per video, spread uniformly."),
    decoder: str = typer.Option("pyav", "--decoder", help="pyav, or decord where installed."),
    force: bool = typer.Option(False, "--force", help="Re-index every file, even unchanged ones."),
    runtime: str = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Index videos into the SQLite file: decode -> embeddings -> event features. Incremental and resumable."""
    import json

    from index import index_paths
    from index.report import IndexProgress, print_summary

    try:
        enc, ag = load_models(runtime, model_dir, encoder, agent)
        with IndexProgress(err) as progress:
            summary = index_paths(paths, db=db, encoder=enc, agent=ag, fps=fps, max_frames=max_frames,
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
        err.print(f"schema {meta['schema_version']}; last agent {meta['agent_id']}: {meta['agent_source']}", highlight=False)
        out.print(videos_table(rows, db=str(db), encoder_id=meta["encoder_id"]))


@app.command("ask")
def ask_cmd(
    video: Optional[Path] = typer.Argument(None, help="The video (indexed first if it is not, or changed)."),
    question: Optional[str] = typer.Argument(None, help="The question; 'A. …' / '(A) …' lines are its options."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="An answer option (repeat: A, B, C …)."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    mllm: str = typer.Option(os.environ.get("TSPO_EDGE_MLLM", "lite"), "--mllm",
                             help="lite | none | openai:http://HOST:PORT/v1 | a hub id or folder of a video MLLM (default $TSPO_EDGE_MLLM or lite)."),
    mllm_model: Optional[str] = typer.Option(None, "--mllm-model", help="Model name on the openai: server (default: the one it serves)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Keyframes to pick (default 16; 64 for videos over 10 minutes)."),
    method: str = typer.Option("topk", "--method", help="topk | bin-max | aks | uniform."),
    json_out: bool = JsonOpt,
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a contact sheet of the chosen frames (JPEG/PNG)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="questions.jsonl: {question, video?, options?, frames?, method?, id?} a line; JSONL out."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub (transformers MLLMs)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for an openai: server."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Answer length limit (default 16 multiple-choice, longer open)."),
    runtime: str = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
) -> None:
    """Ask a question about a video: keyframes from the index in milliseconds, an answer from an MLLM."""
    import json

    from tspo_edge.ask import Asker, IndexingProgress, check_inputs, contact_sheet, format_result, read_batch
    from tspo_edge.mllm import load_answerer
    from tspo_edge.store import Store
    from tspo_edge.video import probe

    progress = None
    try:
        if batch is not None:
            if sheet is not None:
                raise TspoError("--sheet works with one question, not with --batch")
            items = read_batch(batch)
            for it in items:
                if not it.get("video") and video is None:
                    raise TspoError(f"{batch}: a line has no \"video\" and no VIDEO argument was given")
            check_inputs(video or items[0].get("video"), items[0]["question"], frames=frames, method=method)
        else:
            if video is None or question is None:
                raise TspoError("give VIDEO and QUESTION (or --batch questions.jsonl)")
            check_inputs(video, question, frames=frames, method=method)
            probe(video)  # an unreadable video fails here, before any model loads or index write
        kw = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
        if mllm.startswith("openai:"):
            kw["timeout"] = timeout
        if mllm.strip() in ("lite", ""):
            enc, agent = load_models(runtime, model_dir, encoder, agent)
            answerer = load_answerer(mllm, encoder=enc)
        else:  # a down server or a missing model fails before the encoder loads
            answerer = load_answerer(mllm, model=mllm_model, trust_remote_code=trust_remote_code, **kw)
            enc, agent = load_models(runtime, model_dir, encoder, agent)
        progress = IndexingProgress(err, encoder_id=enc.id)
        with Store(db) as store:
            asker = Asker(store=store, encoder=enc, answerer=answerer, agent=agent, progress=progress)
            if batch is None:
                r = asker.ask(video, question, options=option or None, frames=frames, method=method,
                              keep_pixels=sheet is not None)
                progress.close()
                if sheet is not None:
                    contact_sheet(r.pixels, [k.time for k in r.frames], sheet, scores=[k.score for k in r.frames])
                if json_out:
                    typer.echo(json.dumps(r.to_dict(), indent=2))
                else:
                    typer.echo(format_result(r))
                if sheet is not None:
                    err.print(f"contact sheet: {sheet}", highlight=False)
                return
            failed = 0
            for n, it in enumerate(items, 1):
                rid = it.get("id", n)
                try:
                    r = asker.ask(it.get("video") or video, it["question"], options=it.get("options") or option or None,
                                  frames=it.get("frames", frames), method=it.get("method", method))
                    progress.close()
                    typer.echo(json.dumps({"id": rid, **r.to_dict()}))
                except TspoError as e:
                    progress.close()
                    failed += 1
                    err.print(f"[red]failed[/] {rid}: {e}", highlight=False)
                    typer.echo(json.dumps({"id": rid, "video": str(it.get("video") or video),
                                           "question": it["question"], "error": str(e)}))
            if failed:
                err.print(f"{failed} of {len(items)} questions failed", highlight=False)
                raise typer.Exit(2 if failed == len(items) else 1)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    except TspoError as e:
        if progress is not None:
            progress.close()
        fail(e)


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


eval_app = typer.Typer(help="Measure keyframe selection: the generated needle benchmark, and frame_idx files for the paper's benchmarks.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _csv(value: str, kind=str) -> list:
    try:
        return [kind(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise TspoError(f"cannot read {value!r} as a comma-separated list") from None


def _step_progress(progress, description: str):
    """A progress callback (stage, done, total) drawing one rich task."""
    task = progress.add_task(description, total=None, rate="")  # rate: IndexProgress's column

    def update(_stage: str, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


@eval_app.command("needle")
def eval_needle_cmd(
    out_dir: Path = typer.Option(Path("tspo-edge-eval"), "--out", help="Folder for the benchmark videos, the index and the results."),
    videos: int = typer.Option(4, "--videos", help="Generated long videos."),
    minutes: float = typer.Option(10.0, "--minutes", help="Length of each video in minutes (10 to 60 is the intended range)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the benchmark (videos, needles, questions)."),
    needles: int = typer.Option(2, "--needles", help="Needles (questions) per video."),
    video_fps: int = typer.Option(2, "--video-fps", help="Native frame rate of the generated videos (sampling is 1 fps)."),
    frames: str = typer.Option("8,16,32,64", "--frames", help="Frame budgets, comma-separated."),
    methods: str = typer.Option("uniform,similarity,bin-max,aks,agent,oracle", "--methods",
                                help="Comma-separated: uniform, similarity, bin-max, aks, agent, oracle."),
    agent: Optional[str] = AgentOpt,
    encoder: Optional[str] = EncoderOpt,
    mllm: str = typer.Option("lite", "--mllm", help="Answerer: lite | none | openai:URL | a hub id or folder of a video MLLM."),
    db: Optional[Path] = typer.Option(None, "--db", help="Index for the benchmark videos (default OUT/index.db)."),
    json_out: bool = JsonOpt,
) -> None:
    """Needle-in-a-haystack benchmark: hit rate, needle recall and accuracy per method and frame budget."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from index.report import IndexProgress
    from tspo_edge.evaluation import report
    from tspo_edge.evaluation.needle import BenchConfig, generate
    from tspo_edge.evaluation.runner import check_methods, run_needle_eval

    try:
        frame_list, method_list = _csv(frames, int), _csv(methods)
        check_methods(method_list, frame_list)
        cfg = BenchConfig(videos=videos, minutes=minutes, seed=seed, fps=video_fps, needles=needles)
        cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*cols, console=err) as p:
            bench = generate(out_dir / "bench", cfg, progress=_step_progress(p, "generate frames"))
        with IndexProgress(err) as ip:  # one live display: the question bar joins the index bars
            result = run_needle_eval(bench, db=db or out_dir / "index.db", methods=method_list, frames=frame_list,
                                     encoder=encoder or "lite", agent=agent, mllm=mllm, index_progress=ip,
                                     progress=_step_progress(ip.progress, "questions"))
    except KeyboardInterrupt:
        raise typer.Exit(130)
    except TspoError as e:
        fail(e)
    report.write_json(out_dir / "needle.json", result)
    report.plot(result, out_dir / "needle.png")
    (out_dir / "needle.md").write_text(report.markdown_table(result) + "\n")
    err.print(report.summary_table(result))
    for e in result["errors"]:
        err.print(f"[red]failed[/] {e}", highlight=False)
    err.print(f"results: {out_dir / 'needle.json'}, {out_dir / 'needle.png'}, {out_dir / 'needle.md'} "
              f"({result['seconds']['total']:.0f} s)", highlight=False)
    if json_out:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "questions"}, indent=2))
    raise typer.Exit(1 if result["errors"] else 0)


@eval_app.command("frames")
def eval_frames_cmd(
    annotations: Path = typer.Argument(..., help="lvb_val.json, videomme.json, mlvu.json, or a benchmark TSV."),
    benchmark: str = typer.Option(..., "--benchmark", help="lvb | videomme | mlvu | lvbench (TSV only)."),
    out_file: Path = typer.Option(..., "--out", help="The frame_idx JSON to write."),
    video_root: Optional[Path] = typer.Option(None, "--video-root", help="Folder holding the videos (default: the annotation file's folder)."),
    frames: int = typer.Option(64, "--frames", help="Keyframes per question (paper: 64)."),
    method: Optional[str] = typer.Option(None, "--method", help="topk | bin-max | aks | uniform (default: bin-max for videomme, topk otherwise)."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    fps: float = typer.Option(1.0, "--fps", help="Frames sampled per second when indexing (paper: 1)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="At most this many frames per video when indexing."),
    json_out: bool = JsonOpt,
) -> None:
    """Choose keyframes for every question of a benchmark and write the paper's frame_idx JSON."""
    import json

    from index.report import IndexProgress
    from tspo_edge.evaluation.frames import export_frame_idx

    try:
        with IndexProgress(err) as ip:
            r = export_frame_idx(annotations, benchmark, out_file, db=db, video_root=video_root, frames=frames,
                                 method=method, encoder=encoder or "lite", agent=agent, fps=fps, max_frames=max_frames,
                                 index_progress=ip, progress=_step_progress(ip.progress, "questions"))
    except KeyboardInterrupt:
        raise typer.Exit(130)
    except TspoError as e:
        fail(e)
    for v in r.missing_videos:
        err.print(f"[yellow]missing video[/] {v}", highlight=False)
    for v in r.failed_videos:
        err.print(f"[red]failed[/] {v}", highlight=False)
    err.print(f"{r.written} of {r.questions} questions have frame_idx ({r.method}, {r.frames} frames) -> {r.out}",
              highlight=False)
    if json_out:
        typer.echo(json.dumps(r.to_dict(), indent=2))
    raise typer.Exit(0 if r.ok else 1)


@app.command("train")
def train_cmd(
    data: Optional[Path] = typer.Argument(None, help="TSPO-10K style JSONL (video, original_question, problem, solution, type)."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="Folder the rows' video paths are relative to."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    mllm: str = typer.Option("lite", "--mllm", help="Frozen MLLM of the rollouts: 'lite', a hub id or folder, or openai:URL."),
    mllm_model: Optional[str] = typer.Option(None, "--mllm-model", help="Model name served at openai:URL."),
    out_dir: Path = typer.Option(Path("tspo-train"), "--out", help="Run folder: checkpoints, agent/, train_log.jsonl, train.png."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: --epochs over the data)."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the data when --steps is not given."),
    group: int = typer.Option(8, "--group", help="G: rollouts per sample."),
    lr: float = typer.Option(5e-4, "--lr", help="AdamW learning rate (linear decay to 0)."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Samples per process per optimizer step."),
    save_every: int = typer.Option(100, "--save-every", help="Checkpoint every N steps (and at the end)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order, the splicing and the rollouts."),
    strict: bool = typer.Option(False, "--strict", help="Fail on a missing video instead of skipping its rows."),
    toy: bool = typer.Option(False, "--toy", help="The paper's toy experiment, offline (lite encoder and answerer)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 … (default: accelerate's choice)."),
    runtime: str = typer.Option("torch", "--runtime", help="torch, or onnx for the frozen encoder (the agent always trains in torch)."),
    model_dir: Optional[Path] = ModelDirOpt,
    json_out: bool = JsonOpt,
) -> None:
    """TSPO reinforcement learning of the temporal agent (GRPO-style; only the agent learns)."""
    import json

    from train.progress import TrainProgress
    from train.run import RunOptions, train_from_options

    log = lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    try:
        if toy:
            from train.toy import toy_options

            opts = toy_options(out_dir, steps=steps or 30, group=group, lr=lr, seed=seed,
                               save_every=save_every, resume=resume, device=device or "cpu")
        else:
            if data is None or videos is None:
                raise TspoError("give DATA.jsonl and --videos DIR (or --toy)")
            from train.loop import TrainConfig

            enc = load_models(runtime, model_dir, encoder, None)[0] if (runtime != "torch" or model_dir) else (encoder or "lite")
            opts = RunOptions(data=data, videos=videos, db=db, encoder=enc, agent=agent, mllm=mllm,
                              mllm_model=mllm_model, out=out_dir, strict=strict, resume=resume, device=device,
                              cfg=TrainConfig(steps=steps, epochs=epochs, group=group, lr=lr, grad_accum=grad_accum,
                                              save_every=save_every, seed=seed))
        with TrainProgress(err) as progress:
            summary = train_from_options(opts, log=log, on_step=progress)
    except KeyboardInterrupt:
        err.print("interrupted: run the same command with --resume to continue from the last checkpoint")
        raise typer.Exit(130)
    except TspoError as e:
        fail(e)
    last = summary.get("last") or {}
    if summary.get("plot"):
        err.print(f"{summary['steps']} steps; last R_A {last.get('R_A')}, R_T {last.get('R_T')}\n"
                  f"agent  {summary.get('agent')}\nplot   {summary['plot']}"
                  + (f"\nTSPO-0.4B layout {summary['official']}" if summary.get("official") else ""), highlight=False)
    if json_out:
        typer.echo(json.dumps(summary, indent=2, default=str))
    raise typer.Exit(1 if summary.get("missing_videos") or summary.get("failed_videos") else 0)


if __name__ == "__main__":  # pragma: no cover
    app()
