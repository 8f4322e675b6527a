"""Commands that make and measure agents: train, export, and eval (needle, frames). train and
export need the [torch] extra; each imports its torch modules when it runs, so no other command
pays for torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tspo_edge import limits as L
from tspo_edge.checks import check_range
from tspo_edge.errors import InputError
from tspo_edge.evaluation import report
from tspo_edge.evaluation.frames import export_frame_idx
from tspo_edge.evaluation.needle import BenchConfig, generate
from tspo_edge.evaluation.runner import budgets_from_options, run_needle_eval
from tspo_edge.extras import require_torch
from tspo_edge.index.console import IndexProgress, bar, print_table
from tspo_edge.models import ModelSpec, load_models
from tspo_edge.pipeline import Sampling
from tspo_edge.selection import METHODS
from tspo_edge.train.progress import TrainProgress, summary_text

from tspo_edge.commands.face import (AgentOpt, DbOpt, DeviceOpt, EncoderOpt, FpsOpt, JsonOpt, MaxFramesOpt, METHOD_HELP,
                                     ModelDirOpt, RuntimeOpt, dump, err, examples, say)

commands = typer.Typer(rich_markup_mode=None)


@commands.command("export", epilog=examples(
    "tspo-edge export --out edge/                                   # lite towers + its agent",
    "tspo-edge export --encoder ./TSPO-0.4B --out edge-l14/ --fp16 --tensorrt",
    "tspo-edge export runs/clip/agent --encoder openai/clip-vit-large-patch14 --out edge/"))
def export_cmd(
    ckpt: Optional[str] = typer.Argument(None, metavar="[AGENT]", help="Agent checkpoint (default: the encoder's default agent, e.g. a TSPO-0.4B folder's selector), or similarity:<dim>."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to write agent.onnx, image.onnx, text.onnx, manifest.json."),
    encoder: str = typer.Option("lite", "--encoder", help="Encoder whose towers to export: 'lite', a CLIP/SigLIP hub id or folder, or 'none' (agent only)."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 weights and math (inputs and outputs stay float32)."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build TensorRT engines (fp16; needs tensorrt and an NVIDIA GPU)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 or newer)."),
    json_out: bool = JsonOpt,
) -> None:
    """Export the agent's event encoder and the encoder's towers to ONNX (and TensorRT) for edge runtimes."""
    check_range(opset, "--opset", 17, L.MAX_OPSET, integer=True)
    require_torch("tspo-edge export", ("torch", "onnx"))
    from tspo_edge.export import export_model  # optional: the [torch] extra (export/ traces with torch)
    from tspo_edge.export.manifest import manifest_lines  # optional: the [torch] extra (export/ imports torch)

    with_encoder = encoder.strip().lower() != "none"
    if not with_encoder and ckpt is None:
        raise InputError("--encoder none exports the agent alone: give the AGENT checkpoint")
    # traced on the CPU in fp32
    spec = ModelSpec.from_options(encoder if with_encoder else None, ckpt, "torch", None, "cpu")
    with err.status("exporting…"):
        manifest = export_model(load_models(spec), out_dir, with_encoder=with_encoder, fp16=fp16,
                                tensorrt=tensorrt, opset=opset, log=say)
    for line in manifest_lines(manifest, out_dir):
        say(line)
    if json_out:
        dump(manifest)


@commands.command("train", epilog=examples(
    "tspo-edge train --toy",
    "tspo-edge train tspo10k.jsonl --videos videos/ --encoder openai/clip-vit-large-patch14 --mllm openai:http://localhost:8000/v1 --out runs/clip",
    "tspo-edge train tspo10k.jsonl --videos videos/ --out runs/clip --resume"))
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
    group: int = typer.Option(8, "--group", help="G: rollouts per sample (at least 2)."),
    lr: float = typer.Option(5e-4, "--lr", help="AdamW learning rate (linear decay)."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Samples per process per optimizer step."),
    save_every: int = typer.Option(100, "--save-every", help="Checkpoint every N steps (and at the end)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order, the splicing and the rollouts."),
    strict: bool = typer.Option(False, "--strict", help="Fail on a missing video instead of skipping its rows."),
    toy: bool = typer.Option(False, "--toy", help="The paper's toy experiment, offline (lite encoder and answerer)."),
    features: Optional[Path] = typer.Option(None, "--features", help="Precomputed frame embeddings (.npz, docs/train.md): rows name its entries; no video is read (--mllm lite)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 … (default: accelerate's choice)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="torch, or onnx for the frozen encoder (the agent always trains in torch)."),
    model_dir: Optional[Path] = ModelDirOpt,
    json_out: bool = JsonOpt,
) -> None:
    """TSPO reinforcement learning of the temporal agent (GRPO-style; only the agent learns)."""
    require_torch("tspo-edge train", ("torch", "accelerate", "skvideo"))
    from tspo_edge.train.loop import TrainConfig  # optional: the [torch] extra (train/ needs torch)
    from tspo_edge.train.run import RunOptions, train_from_options  # optional: the [torch] extra
    from tspo_edge.train.toy import toy_options  # optional: the [torch] extra

    cfg = TrainConfig.from_options(steps=steps, epochs=epochs, group=group, lr=lr, grad_accum=grad_accum,
                                   save_every=save_every, seed=seed)
    if toy:
        opts = toy_options(out_dir, steps=steps or 30, group=group, lr=lr, seed=seed,
                           save_every=save_every, resume=resume, device=device or "cpu")
    else:
        if data is None or (videos is None and features is None):
            raise InputError("give DATA.jsonl and --videos DIR or --features FILE.npz (or --toy)")
        opts = RunOptions(data=data, videos=videos or Path("."), features=features, db=db,
                          models=ModelSpec.from_options(encoder, agent, runtime, model_dir, device), mllm=mllm,
                          mllm_model=mllm_model, out=out_dir, strict=strict, resume=resume, device=device, cfg=cfg)
    with TrainProgress(err) as progress:
        summary = train_from_options(opts, log=say, on_step=progress)
    if summary_text(summary):
        err.print(summary_text(summary), highlight=False, markup=False)
    if json_out:
        dump(summary)
    raise typer.Exit(1 if summary.get("missing_videos") or summary.get("failed_videos") else 0)


eval_app = typer.Typer(help="Measure keyframe selection: the generated needle benchmark, and frame_idx files for the paper's benchmarks.",
                       no_args_is_help=True, rich_markup_mode=None)


def _step_progress(progress, description: str):
    """A progress callback (stage, done, total) drawing one rich task."""
    task = progress.add_task(description, total=None, rate="")  # rate: IndexProgress's column

    def update(_stage: str, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


@eval_app.command("needle", epilog=examples(
    "tspo-edge eval needle --out tspo-edge-eval",
    "tspo-edge eval needle --videos 2 --minutes 5 --frames 8,16 --methods similarity,agent --mllm none",
    "tspo-edge eval needle --encoder ./TSPO-0.4B --json"))
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
    runtime: Optional[str] = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
    device: Optional[str] = DeviceOpt,
    mllm: str = typer.Option("lite", "--mllm", help="Answerer: lite | none | openai:URL | a hub id or folder of a video MLLM."),
    db: Optional[Path] = typer.Option(None, "--db", help="Index for the benchmark videos (default OUT/index.db)."),
    json_out: bool = JsonOpt,
) -> None:
    """Needle-in-a-haystack benchmark: hit rate, needle recall and accuracy per method and frame budget."""
    frame_list, method_list = budgets_from_options(frames, methods)
    cfg = BenchConfig.from_options(videos=videos, minutes=minutes, seed=seed, needles=needles, fps=video_fps)
    spec = ModelSpec.from_options(encoder, agent, runtime, model_dir, device)
    cols = (TextColumn("[bold]{task.description}"), *bar(err), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=err) as p:
        bench = generate(out_dir / "bench", cfg, progress=_step_progress(p, "generate frames"))
    with IndexProgress(err) as ip:  # one live display: the question bar joins the index bars
        result = run_needle_eval(bench, db=db or out_dir / "index.db", methods=method_list, frames=frame_list,
                                 models=load_models(spec), mllm=mllm, index_progress=ip,
                                 progress=_step_progress(ip.progress, "questions"))
    files = report.write_reports(result, out_dir)
    print_table(err, report.summary_table(result))
    for e in result["errors"]:
        err.print(f"[red]failed[/] {e}", highlight=False, markup=True)
    err.print(f"results: {', '.join(map(str, files))} ({result['seconds']['total']:.0f} s)", highlight=False,
              markup=False)
    if json_out:
        dump({k: v for k, v in result.items() if k != "questions"})
    raise typer.Exit(1 if result["errors"] else 0)


@eval_app.command("frames", epilog=examples(
    "tspo-edge eval frames lvb_val.json --benchmark lvb --video-root videos/ --encoder ./TSPO-0.4B --out TSPO_LongVideoBench_frameIdx.json",
    "tspo-edge eval frames videomme.json --benchmark videomme --out frame_idx.json --frames 32"))
def eval_frames_cmd(
    annotations: Path = typer.Argument(..., help="lvb_val.json, videomme.json, mlvu.json, or a benchmark TSV."),
    benchmark: str = typer.Option(..., "--benchmark", help="lvb | videomme | mlvu | lvbench (TSV only)."),
    out_file: Path = typer.Option(..., "--out", help="The frame_idx JSON to write."),
    video_root: Optional[Path] = typer.Option(None, "--video-root", help="Folder holding the videos (default: the annotation file's folder)."),
    frames: int = typer.Option(64, "--frames", help="Keyframes per question (paper: 64)."),
    method: Optional[str] = typer.Option(None, "--method", help=METHOD_HELP + " (default: bin-max for videomme, topk otherwise)."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    runtime: Optional[str] = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
    device: Optional[str] = DeviceOpt,
    fps: float = FpsOpt,
    max_frames: Optional[int] = MaxFramesOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Choose keyframes for every question of a benchmark and write the paper's frame_idx JSON."""
    check_range(frames, "--frames", 1, L.MAX_ASK_FRAMES, integer=True)
    s, spec = Sampling.from_options(fps, max_frames), ModelSpec.from_options(encoder, agent, runtime, model_dir, device)
    if method is not None and method not in METHODS:
        raise InputError(f"--method {method}: choose from {METHOD_HELP}")
    with IndexProgress(err) as ip:
        r = export_frame_idx(annotations, benchmark, out_file, db=db, video_root=video_root, frames=frames,
                             method=method, models=load_models(spec), sampling=s,
                             index_progress=ip, progress=_step_progress(ip.progress, "questions"))
    for v in r.missing_videos:
        err.print(f"[yellow]missing video[/] {v}", highlight=False, markup=True)
    for v in r.failed_videos:
        err.print(f"[red]failed[/] {v}", highlight=False, markup=True)
    err.print(f"agent: {r.agent} ({r.agent_id})", highlight=False, markup=False)
    err.print(f"{r.written} of {r.questions} questions have frame_idx ({r.method}, {r.frames} frames) -> {r.out}",
              highlight=False, markup=False)
    if json_out:
        dump(r.to_dict())
    raise typer.Exit(0 if r.ok else 1)
