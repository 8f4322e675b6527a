"""The `tspo-edge` command line: argument parsing and printing only.

Each command checks its arguments, builds the library's objects (a ModelSpec, a Sampling),
makes one library call and prints the result: tables and progress on stderr, `--json` on
stdout. Commands raise; errors are mapped in one place (`Edge`, the app's group class) to one
line and an exit status:
0 success, 1 partial failure (some files or questions failed, the rest done),
2 bad usage, bad input or a bad environment, 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import warnings
from contextlib import closing
from pathlib import Path
from typing import List, NoReturn, Optional

import typer
import typer.core
from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import tspo_edge
from tspo_edge import doctor
from tspo_edge import limits as L
from tspo_edge.media import video
from tspo_edge.answers import format_result
from tspo_edge.ask import Asker, check_inputs, contact_sheet, process_seconds
from tspo_edge.question_batch import load_batch
from tspo_edge.checks import check_range, json_safe
from tspo_edge.serving.client import ask_remote
from tspo_edge.media.clip import cut_clip, format_time, parse_time
from tspo_edge.errors import InputError, TspoError
from tspo_edge.extras import require_torch
from tspo_edge.evaluation import report
from tspo_edge.evaluation.frames import export_frame_idx
from tspo_edge.evaluation.needle import BenchConfig, generate
from tspo_edge.evaluation.runner import budgets_from_options, run_needle_eval
from tspo_edge.index import check_engine, index_with_engine
from tspo_edge.index.watch import DEFAULT_SETTLE, WatchService, watch_until_signal
from tspo_edge.index.report import (IndexingProgress, IndexProgress, OutputConsole, bar, print_summary,
                                    print_table, videos_table, watch_line)
from tspo_edge.models.mllm import answerer_for
from tspo_edge.models import ModelSpec, load_models
from tspo_edge.paths import resolve_db
from tspo_edge.pipeline import Sampling
from tspo_edge.storage.removal import prune, remove
from tspo_edge.storage import search_view
from tspo_edge.storage.search_cache import refresh_after_index
from tspo_edge.storage.search import search
from tspo_edge.storage.search_filters import DEFAULT_MIN_SCORE, filters_from_options
from tspo_edge.selection import METHODS
from tspo_edge.storage.store import Store, existing_index, removed_if_left_empty
from tspo_edge.terminal import printable
from tspo_edge.train.progress import TrainProgress, summary_text

# What each command says when Ctrl-C stops it (exit 130): what was kept, how to go on.
INTERRUPTED = {
    "index": "interrupted: the videos finished so far are saved; run the same command to resume",
    "ask": "interrupted: nothing was changed by the question in flight",
    "rm": "interrupted: nothing was removed",
    "prune": "interrupted: nothing was removed",
    "clip": "interrupted: no clip was written",
    "train": "interrupted: run the same command with --resume to continue from the last checkpoint",
}
OUT_OF_MEMORY = {  # a memory cap below what the models and frames need
    "ask": "out of memory while answering (the index is unchanged); ask for fewer --frames or use a smaller model",
}
_interrupt_note: list[str] = []  # a phase of the running command whose interrupt keeps something else


class Edge(typer.core.TyperGroup):
    """The one place where errors become a line and an exit status: a TspoError its message and
    its exit_code, MemoryError exit 2, Ctrl-C exit 130 with the command's INTERRUPTED line."""

    def invoke(self, ctx):
        _interrupt_note.clear()
        try:
            return super().invoke(ctx)
        except TspoError as e:
            fail(e)
        except MemoryError:
            fail(InputError(OUT_OF_MEMORY.get(ctx.invoked_subcommand, "out of memory")))
        except KeyboardInterrupt:
            interrupted(next(iter(_interrupt_note), None) or INTERRUPTED.get(ctx.invoked_subcommand, "interrupted"))


def on_interrupt(message: str) -> None:
    """From here on, Ctrl-C prints `message` (a phase whose interrupt keeps something else)."""
    _interrupt_note[:] = [message]


app = typer.Typer(
    cls=Edge,
    name="tspo-edge",
    help="Ask questions about long videos: TSPO keyframe selection over a SQLite index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags read as flags, examples keep their lines
)
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


def fail(e: BaseException, code: int | None = None) -> NoReturn:
    """Print a one-line error and exit with its code."""
    msg = printable(" ".join(str(e).split()) or type(e).__name__)
    err.print("error: " + msg, highlight=False, soft_wrap=True, markup=False, style="bold red")
    raise typer.Exit(code if code is not None else getattr(e, "exit_code", 2))


def bad(message: str) -> NoReturn:
    fail(InputError(message))


def interrupted(message: str = "interrupted") -> NoReturn:
    err.print(message, highlight=False, soft_wrap=True)
    raise typer.Exit(130)


within = check_range              # the names serve_cmd and _ask_remote use until they move to
model_spec = ModelSpec.from_options  # tspo_edge/serving/ (bodies left as they are meanwhile)


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


def dump(obj) -> None:
    """JSON on stdout; never bare NaN (invalid JSON): non-finite numbers become null."""
    typer.echo(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tspo-edge {tspo_edge.__version__}")
        raise typer.Exit()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a file decoded by another decoder than asked, say) as one line, not source lines."""
    err.print(f"warning: {printable(' '.join(str(message).split()))}", highlight=False, markup=False,
              soft_wrap=True, style="yellow")


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Ask questions about long videos: TSPO keyframe selection over a SQLite index."""
    warnings.showwarning = _one_line_warning


@app.command("index", epilog=examples(
    "tspo-edge index ./lectures ./dashcam/2026-11-01.mp4",
    "tspo-edge index ./archive --encoder ./TSPO-0.4B --db archive.db --workers 8 --device cuda",
    "tspo-edge index /shared/archive --engine ray --ray-address ray://head:10001 --db /shared/archive.db"))
def index_cmd(
    paths: List[Path] = typer.Argument(..., exists=True, help="Video files and/or folders (searched recursively by video extension)."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    fps: float = FpsOpt,
    max_frames: Optional[int] = MaxFramesOpt,
    decoder: str = typer.Option("pyav", "--decoder", help="pyav, decord where installed, or nvdec (NVIDIA GPU decoding: PyNvVideoCodec or torchcodec; PyAV when it cannot run, with the reason)."),
    force: bool = typer.Option(False, "--force", help="Re-index every file, even unchanged ones."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again the files that failed before, even unchanged ones (a changed file is always tried)."),
    runtime: Optional[str] = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
    device: Optional[str] = DeviceOpt,
    json_out: bool = JsonOpt,
    watch: bool = typer.Option(False, "--watch", help="Keep running: index new and changed videos under PATHS once they settle, mark removed ones missing (Ctrl-C or SIGTERM stops)."),
    settle: Optional[float] = typer.Option(None, "--settle", help="With --watch: seconds a file's size and mtime must hold before it is indexed (default 5)."),
    poll: bool = typer.Option(False, "--poll", help="With --watch: poll the folders instead of file-system events (network mounts)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes feeding one encoder (default: the cores less one; 1: decode and encode in turn in this process)."),
    engine: str = typer.Option("local", "--engine", help="local (this machine), or ray (Ray tasks decode, encoder actors on the GPUs; this process writes the index)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --engine ray: the cluster to join (default: start a local Ray)."),
) -> None:
    """Index videos into the SQLite file: decode -> embeddings -> event features. Incremental and resumable."""
    check_range(settle, "--settle", 0, L.MAX_SECONDS)
    decoder, note = video.choose_decoder(decoder)  # NVDEC without a GPU: PyAV, and why
    if note:
        say(f"--decoder {printable(note)}")
    s = Sampling.from_options(fps, max_frames, decoder)
    spec = ModelSpec.from_options(encoder, agent, runtime, model_dir, device)
    check_engine(engine, workers, ray_address)
    if watch or poll or settle is not None:
        index_watch(paths, db=db, spec=spec, s=s, watch=watch, settle=settle, poll=poll, force=force or retry_failed,
                    json_out=json_out)
    models = load_models(spec)
    with IndexProgress(err) as progress:
        summary = index_with_engine(paths, db=db, models=models, sampling=s, force=force, retry_failed=retry_failed,
                                    progress=progress, engine=engine, workers=workers, ray_address=ray_address)
    print_summary(err, summary)
    for line in refresh_after_index(db):  # the search cache brought up to date
        say(printable(line))
    if summary.stopped:
        say(f"stopped: {printable(summary.stopped)} (the videos finished so far are saved; rerun to resume)")
    for m in summary.missing:
        err.print(f"[red]missing[/] {m}: no such file or folder", highlight=False, markup=True)
    if not summary.files and not summary.missing:
        err.print("no video files found (looked for: " + ", ".join(sorted(video.VIDEO_EXTENSIONS)) + ")",
                  highlight=False)
    if json_out:
        dump(summary.to_dict())
    cache_onnx(models, runtime)
    raise typer.Exit(0 if summary.ok else 1)


def index_watch(paths: List[Path], *, db: Path, spec: ModelSpec, s: Sampling, watch: bool, settle: Optional[float],
                poll: bool, force: bool, json_out: bool) -> NoReturn:
    """`index --watch`: run until SIGTERM (exit 0: a service stopped as asked) or Ctrl-C (exit 130,
    the shell's code for an interrupt); either stops between videos. A second Ctrl-C stops at once
    (the video in flight is not saved)."""
    if not watch:
        raise InputError("--settle and --poll go with --watch")
    if force:
        raise InputError("--force and --retry-failed do not combine with --watch (run `tspo-edge index` with them first)")
    settle = DEFAULT_SETTLE if settle is None else settle

    def on_result(r) -> None:
        say(watch_line(r))
        if json_out:
            typer.echo(json.dumps(json_safe(dataclasses.asdict(r))))

    def on_ready() -> None:
        say(f"watching {', '.join(printable(p) for p in paths)} (settle {settle:g} s"
            f"{', polling' if poll else ''}); Ctrl-C or SIGTERM stops")

    on_interrupt("interrupted: the video in flight was not saved; the others are")
    summary, stopped_by = watch_until_signal(paths, db=db, models=load_models(spec), sampling=s, settle=settle,
                                             poll=poll, on_result=on_result, on_ready=on_ready)
    say(summary.stopped_line())
    raise typer.Exit(130 if stopped_by == signal.SIGINT else 0)


@app.command("info", epilog=examples("tspo-edge info", "tspo-edge info --db archive.db --json"))
def info_cmd(db: Path = DbOpt, json_out: bool = JsonOpt) -> None:
    """List the videos in an index: path, duration, frames, status, the agent of their event features."""
    with Store(existing_index(db), readonly=True) as store:
        rows, meta = store.videos(), store.described()
    if json_out:
        dump({"db": str(db), **meta, "videos": [dataclasses.asdict(r) for r in rows]})
    else:
        say(f"schema {meta['schema_version']}; last agent {meta['agent_id']}: {meta['agent_source']}")
        print_table(out, videos_table(rows, db=str(db), encoder_id=meta["encoder_id"]), note=err)


def warn(message: str) -> None:
    err.print(f"warning: {printable(message)}", highlight=False, markup=False, soft_wrap=True, style="yellow")


@app.command("rm", epilog=examples(
    "tspo-edge rm ./dashcam/2026-11-01.mp4 ./dashcam/2026-11-02.mp4",
    "tspo-edge rm 12 15 --db archive.db              # by id, as `tspo-edge info` lists them",
    "tspo-edge rm ./dashcam/old/                     # every indexed video under a folder"))
def rm_cmd(refs: List[str] = typer.Argument(..., metavar="PATH_OR_ID...", help="Indexed video paths, folders (every indexed video under them) or ids."),
           db: Path = DbOpt, json_out: bool = JsonOpt) -> None:
    """Remove videos from the index: their rows, features and search data. The files stay on disk."""
    with Store(existing_index(db)) as store:
        r = remove(store, refs)
    for ref in r.not_found:
        warn(f"{ref}: not in the index {db}")
    if json_out:
        dump(r.to_dict())
    else:
        for row in r.removed:
            typer.echo(f"removed {printable(row.path)}")
    raise typer.Exit(1 if r.not_found else 0)


@app.command("prune", epilog=examples(
    "tspo-edge prune --dry-run          # list what would go, change nothing",
    "tspo-edge prune --db archive.db --json"))
def prune_cmd(db: Path = DbOpt,
              dry_run: bool = typer.Option(False, "--dry-run", help="List the videos that would be removed; change nothing."),
              json_out: bool = JsonOpt) -> None:
    """Remove videos whose files are gone (marked missing, or no file at their path) from the index."""
    with Store(existing_index(db), readonly=dry_run) as store:
        r = prune(store, dry_run=dry_run)
    if json_out:
        dump(r.to_dict())
    else:
        for row, why in r.videos:
            typer.echo(f"{'would remove' if dry_run else 'removed'} {printable(row.path)} ({why})")
    say(f"{len(r.videos)} videos {'would be removed' if dry_run else 'removed'} from {printable(db)}")


@app.command("clip", epilog=examples(
    "tspo-edge clip dashcam.mp4 --at 03:09 -o gate.mp4            # 10 s, stream copy",
    "tspo-edge clip lecture.mkv --at 1:02:03 --seconds 30 -o proof.mkv",
    "tspo-edge clip dashcam.mp4 --at 189.5 --seconds 4 --reencode -o exact.mp4 --force"))
def clip_cmd(
    video_path: Path = typer.Argument(..., metavar="VIDEO", help="The video to cut from (indexed or not)."),
    at: str = typer.Option(..., "--at", help="Where the clip starts: 03:09, 1:02:03, 189 or 189.5 (as search and ask print times)."),
    seconds: float = typer.Option(10.0, "--seconds", help="How long the clip is."),
    out_path: Path = typer.Option(..., "-o", "--out", help="The clip to write: .mp4, .m4v, .mov or .mkv."),
    reencode: bool = typer.Option(False, "--reencode", help="Start exactly at --at (decode and encode the video); default: stream copy from the keyframe at or before --at."),
    force: bool = typer.Option(False, "--force", help="Replace an existing -o file."),
    json_out: bool = JsonOpt,
) -> None:
    """Cut a clip out of a video around a moment: stream copy (fast, lossless) or --reencode (frame-exact)."""
    t = parse_time(at, what="--at")
    if out_path.exists() and not force:
        raise InputError(f"{out_path}: already exists (--force replaces it)")
    c = cut_clip(video_path, out_path, at=t, seconds=seconds, reencode=reencode, overwrite=force)
    if json_out:
        dump(c.to_dict())
        return
    how = "re-encoded" if c.reencoded else f"stream copy from the keyframe {c.at - c.start:.1f} s before {format_time(c.at)}"
    typer.echo(f"{printable(c.path)}: {format_time(c.start)} to {format_time(c.end)} of {printable(c.source)} "
               f"({c.duration:.1f} s, {how})")


@app.command("check", epilog=examples("tspo-edge check", "tspo-edge check --db archive.db --json"))
def check_cmd(db: Path = DbOpt, json_out: bool = JsonOpt) -> None:
    """Verify the index: SQLite's integrity check and every video's stored arrays. Exit 1 when something is damaged."""
    with Store(existing_index(db), readonly=True) as store:
        report = store.check()
    if json_out:
        dump(report.to_dict())
    else:
        for line in report.lines():
            say(printable(line))
    raise typer.Exit(0 if report.ok else 1)


@app.command("doctor", epilog=examples("tspo-edge doctor", "tspo-edge doctor --json > machine.json"))
def doctor_cmd(json_out: bool = JsonOpt) -> None:
    """What this machine can run: Python, torch and its GPUs, PyAV, the decoders (and why one cannot run), ONNX Runtime's providers, TensorRT, the lite profile."""
    facts = doctor.report()
    if json_out:
        dump(facts)
    else:
        for line in doctor.lines(facts):
            out.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command("ask", epilog=examples(
    'tspo-edge ask talk.mp4 "What does she hold up? A. a phone B. a book"',
    'tspo-edge ask talk.mp4 "When does the demo start?" --mllm none --sheet moments.jpg',
    "tspo-edge ask --batch questions.jsonl --json > answers.jsonl"))
def ask_cmd(
    video_path: Optional[Path] = typer.Argument(None, metavar="VIDEO", help="The video (indexed first if it is not, or changed)."),
    question: Optional[str] = typer.Argument(None, help="The question; 'A. …' / '(A) …' lines are its options."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="An answer option (repeat: A, B, C …)."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = typer.Option(None, "--agent", help="Score with this agent for this ask (events computed from the stored embeddings; the index is not changed)."),
    mllm: str = typer.Option(os.environ.get("TSPO_EDGE_MLLM", "lite"), "--mllm",
                             help="lite | none | openai:http://HOST:PORT/v1 | a hub id or folder of a video MLLM (default $TSPO_EDGE_MLLM or lite)."),
    mllm_model: Optional[str] = typer.Option(None, "--mllm-model", help="Model name on the openai: server (default: the one it serves)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Keyframes to pick (default 16; 64 for videos over 10 minutes)."),
    method: str = typer.Option("topk", "--method", help=METHOD_HELP + "."),
    json_out: bool = JsonOpt,
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a contact sheet of the chosen frames (.jpg/.jpeg/.png)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="questions.jsonl: {question, video?, options?, frames?, method?, id?} a line; JSONL out."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub (transformers MLLMs)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for an openai: server's answer."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Answer length limit (default 16 multiple-choice, longer open)."),
    runtime: Optional[str] = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
    device: Optional[str] = DeviceOpt,
    server: Optional[str] = ServerOpt,
) -> None:
    """Ask a question about a video: keyframes from the index in milliseconds, an answer from an MLLM."""
    check_range(frames, "--frames", 1, L.MAX_ASK_FRAMES, integer=True)
    check_range(timeout, "--timeout", 0.001, L.MAX_SECONDS)
    if server:  # a running `tspo-edge serve` answers: no model loads here
        return _ask_remote(server, video_path, question, option=option, frames=frames, method=method, mllm=mllm,
                           json_out=json_out, timeout=timeout,
                           local_only={"--batch": batch, "--sheet": sheet, "--agent": agent, "--encoder": encoder,
                                       "--runtime": runtime, "--model-dir": model_dir, "--mllm-model": mllm_model,
                                       "--device": device})
    # Everything is checked before a model loads or the index is touched.
    spec = ModelSpec.from_options(encoder, None, runtime, model_dir, device, default="auto")
    check_range(max_new_tokens, "--max-new-tokens", 1, L.MAX_TOKENS, integer=True)
    questions = _ask_inputs(video_path, question, option=option, frames=frames, method=method, sheet=sheet,
                            batch=batch)
    models = load_models(spec)
    answerer = answerer_for(mllm, models, model=mllm_model, trust_remote_code=trust_remote_code,
                            max_new_tokens=max_new_tokens, timeout=timeout)  # a down server fails before the encoder loads
    with removed_if_left_empty(db, enabled=batch is None), Store(db) as store:  # a failed first ask: no empty index
        progress = IndexingProgress(err, encoder_id=models.encoder.id)
        asker = Asker(store=store, models=models, answerer=answerer, agent=agent, progress=progress)
        with closing(progress):
            if questions is not None:
                failed = _print_batch(asker.ask_batch(questions, video_path, options=option, frames=frames,
                                                      method=method), progress)
            else:
                started = process_seconds()  # interpreter, imports, models: what the user waited before the ask
                r = asker.ask(video_path, question, options=option or None, frames=frames, method=method,
                              keep_pixels=sheet is not None)
                r.add_start(started)
                progress.close()
                _print_answer(r, sheet, json_out)
    if questions is not None and failed:  # exit 1 when some lines failed, 2 when all did
        say(f"{failed} of {questions.lines} questions failed")
        raise typer.Exit(2 if failed == questions.lines else 1)
    cache_onnx(models, runtime)


def _ask_inputs(video_path: Optional[Path], question: Optional[str], *, option, frames, method, sheet, batch):
    """The ask's input checked before a model loads or the index is touched: the --batch file
    loaded (returned), or the one question and its video (an unreadable video fails here)."""
    if method not in METHODS:
        raise InputError(f"--method {method}: choose from {METHOD_HELP}")
    if sheet is not None and sheet.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise InputError(f"{sheet}: --sheet writes .jpg, .jpeg or .png")
    if batch is not None:
        if sheet is not None:
            raise InputError("--sheet works with one question, not with --batch")
        return load_batch(batch)
    if video_path is None or question is None:
        raise InputError("give VIDEO and QUESTION (or --batch questions.jsonl)")
    check_inputs(video_path, question, frames=frames, method=method, options=option)
    video.probe(video_path)
    return None


def _print_answer(r, sheet: Optional[Path], json_out: bool) -> None:
    _warn(r.warning)
    if sheet is not None:
        contact_sheet(r.pixels, [k.time for k in r.frames], sheet, scores=[k.score for k in r.frames])
    if json_out:
        dump(r.to_dict())
    else:
        typer.echo(format_result(r))
    if sheet is not None:
        say(f"contact sheet: {sheet}")


def _print_batch(answers, progress) -> int:
    """One JSON line per line of the batch file, in its order; the failed ones also on stderr.
    Returns how many failed."""
    failed = 0
    for a in answers:
        progress.close()
        if a.error is not None:
            failed += 1
            say(f"{'skipped' if a.skipped else 'failed'} {printable(a.error)}")
        else:
            _warn(a.warning, f"{a.where}: ")
        typer.echo(json.dumps(json_safe(a.record), allow_nan=False))
    return failed


def _warn(warning: Optional[str], where: str = "") -> None:
    if warning:
        err.print(f"warning: {where}{printable(warning)}", highlight=False, markup=False, soft_wrap=True,
                  style="yellow")


def _ask_remote(server: str, video_path: Optional[Path], question: Optional[str], *, option, frames, method, mllm,
                json_out: bool, timeout: float, local_only: dict) -> None:
    """`ask --server URL`: the question goes to a running server; the same output as a local ask."""
    try:
        d, r = ask_remote(server, video_path, question, options=option, frames=frames, method=method, mllm=mllm,
                          token=os.environ.get("TSPO_EDGE_TOKEN"), timeout=timeout, local_only=local_only)
    except KeyboardInterrupt:
        interrupted()
    except TspoError as e:
        fail(e)
    _warn(r.warning)
    if json_out:
        dump(d)
    else:
        typer.echo(format_result(r))


@app.command("search", epilog=examples(
    'tspo-edge search "a red truck at the gate"',
    'tspo-edge search "a red truck" --in ~/dashcam --since 7d --top 20 --json',
    'tspo-edge search "a dog on the beach" --since 2026-11-01 --until 2026-11-30 --paths | xargs mpv'))
def search_cmd(
    question: str = typer.Argument(..., metavar="QUESTION", help="What to look for, in words."),
    top: int = typer.Option(10, "--top", help="Moments to list."),
    per_video: int = typer.Option(3, "--per-video", help="At most this many moments of one video."),
    nms_seconds: float = typer.Option(30.0, "--nms-seconds", help="Moments of one video at least this far apart."),
    in_dirs: Optional[List[Path]] = typer.Option(None, "--in", metavar="FOLDER", help="Only videos under FOLDER (repeat for several)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only videos recorded at or after this: 2026-11-01, 2026-11-01T08:00 (local time unless a zone is given), or an age: 7d, 12h, 30m."),
    until: Optional[str] = typer.Option(None, "--until", help="Only videos recorded before this (a date alone: up to the end of that day); forms as --since."),
    min_score: float = typer.Option(DEFAULT_MIN_SCORE, "--min-score", help="The relevance floor: list only moments scoring at least this (the agent's logit; see docs/search.md)."),
    paths_out: bool = typer.Option(False, "--paths", help="Print only the paths of the best videos, one a line, best first (for pipes)."),
    db: Path = DbOpt,
    encoder: Optional[str] = EncoderOpt,
    runtime: Optional[str] = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
    device: Optional[str] = DeviceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Search every indexed video: the best moments (video, time, score) and the videos that match best."""
    check_range(top, "--top", 1, L.MAX_TOP, integer=True)
    check_range(per_video, "--per-video", 1, L.MAX_TOP, integer=True)
    check_range(nms_seconds, "--nms-seconds", 0, L.MAX_SECONDS)
    if paths_out and json_out:
        raise InputError("--paths and --json: choose one")
    filters = filters_from_options(question, in_dirs, since, until, min_score)
    existing_index(db, " (run `tspo-edge index` first)")
    models = load_models(ModelSpec.from_options(encoder, None, runtime, model_dir, device, default="auto"))
    with Store(db) as store:  # writable: videos indexed since the last search are brought in first
        store.check_encoder(models.encoder.id)
        res = search(store, models.encoder.encode_texts([question]), top=top, per_video=per_video,
                     nms_seconds=nms_seconds, filters=filters)
    for line in res.warnings:  # a damaged video skipped, a cache rebuilt or read around: one line each
        say(f"warning: {printable(line)}")
    waited = process_seconds()  # start-up and the text encoder included
    if json_out:
        dump(search_view.to_json(question, res, waited))
    else:
        say(printable(search_view.header(question, res, db)))
        if paths_out:  # exact paths for a pipe; escaped on a terminal, as every other listing
            for v in res.videos:
                typer.echo(printable(v.path) if out.is_terminal else v.path)
        else:
            for line in search_view.moment_lines(res):
                typer.echo(line)
            if search_view.timing(res, waited):
                say(search_view.timing(res, waited))
    cache_onnx(models, runtime)


@app.command("serve", epilog=examples(
    "tspo-edge serve                                   # http://127.0.0.1:8008/",
    "tspo-edge serve --db archive.db --mllm openai:http://localhost:8000/v1",
    "TSPO_EDGE_TOKEN=$(openssl rand -hex 16) tspo-edge serve --host 0.0.0.0"))
def serve_cmd(
    db: Path = DbOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback needs $TSPO_EDGE_TOKEN."),
    port: int = typer.Option(8008, "--port", help="TCP port."),
    encoder: Optional[str] = EncoderOpt,
    agent: Optional[str] = AgentOpt,
    mllm: str = typer.Option(os.environ.get("TSPO_EDGE_MLLM", "lite"), "--mllm",
                             help="The answerer of /api/ask: lite | none | openai:URL | a hub id or folder (default $TSPO_EDGE_MLLM or lite)."),
    mllm_model: Optional[str] = typer.Option(None, "--mllm-model", help="Model name on the openai: server."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow model code from the hub (transformers MLLMs)."),
    index_root: Optional[List[Path]] = typer.Option(None, "--index-root", help="Let an ask index new videos under this folder (repeat; opens the index for writing)."),
    allow_host: Optional[List[str]] = typer.Option(None, "--allow-host", help="Also answer requests for this host name (repeat), e.g. the name of a reverse proxy in front; by default only loopback names and the --host address."),
    threads: int = typer.Option(8, "--threads", help="Request threads (each keeps its own SQLite connection and its last 8 videos' features)."),
    torch_threads: int = typer.Option(1, "--torch-threads", help="Threads of one torch model call (1: concurrent requests share the cores better)."),
    watch_dirs: Optional[List[Path]] = typer.Option(None, "--watch", help="Also keep DIR indexed in this process, as `index --watch` does (repeat); new recordings become searchable as they are indexed."),
    settle: float = typer.Option(DEFAULT_SETTLE, "--settle", help="With --watch: seconds a file must stay unchanged before it is indexed."),
    runtime: Optional[str] = RuntimeOpt,
    model_dir: Optional[Path] = ModelDirOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Serve the index: a JSON API (/docs), a web page at /, models loaded once."""
    # fastapi and uvicorn take ~0.5 s to import: only this command pays for them
    from tspo_edge.serving.serve import ServeOptions, serve  # deferred: fastapi + uvicorn, ~0.5 s; only serve needs them (tests/test_cli_startup.py)

    if not 0 < port < 65536:
        bad(f"--port {port}: must be 1 to 65535")
    within(threads, "--threads", 1, L.MAX_WORKERS, integer=True)
    within(torch_threads, "--torch-threads", 1, L.MAX_WORKERS, integer=True)
    within(settle, "--settle", 0, L.MAX_SECONDS)
    if not db.is_file():
        bad(f"{db}: no such index (run `tspo-edge index` first)")
    for root in index_root or []:
        if not root.is_dir():
            bad(f"{root}: --index-root is not a folder")
    spec = model_spec(encoder, agent, runtime, model_dir, device)
    for folder in watch_dirs or []:
        if not folder.exists():
            bad(f"{folder}: --watch needs an existing file or folder")
    options = ServeOptions(db=db, spec=spec, host=host, port=port, token=os.environ.get("TSPO_EDGE_TOKEN"),
                           mllm=mllm, mllm_model=mllm_model, trust_remote_code=trust_remote_code,
                           index_roots=index_root or (), allow_hosts=allow_host or (), threads=threads,
                           torch_threads=torch_threads, watch=watch_dirs or (), settle=settle)
    try:  # until one mapping of TspoError at the app level lands
        serve(options, watcher=WatchService, say=_say)
    except KeyboardInterrupt:
        interrupted()
    except TspoError as e:
        fail(e)


def _say(line: str) -> None:
    """A line of a running command (serve's start, its watch) on stderr, escaped."""
    err.print(printable(line), highlight=False, markup=False, soft_wrap=True)


@app.command("export", epilog=examples(
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


eval_app = typer.Typer(help="Measure keyframe selection: the generated needle benchmark, and frame_idx files for the paper's benchmarks.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(eval_app, name="eval")


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


@app.command("train", epilog=examples(
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


if __name__ == "__main__":  # `python cli.py`, and `python -m tspo_edge` (tspo_edge/__main__.py runs this file)
    app(prog_name="tspo-edge")
