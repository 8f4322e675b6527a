"""The `tspo-edge` command line: argument parsing and printing only.

Each command checks its arguments, builds the library's objects (a ModelSpec, a Sampling),
makes one library call and prints the result: tables and progress on stderr, `--json` on
stdout. Commands raise; errors are mapped in one place (`Edge`, the app's group class) to one
line and an exit status:
0 success, 1 partial failure (some files or questions failed, the rest done),
2 bad usage, bad input or a bad environment, 130 interrupted (rerun to resume).

Here: the app, its error mapping and the everyday commands (index, ask, search, serve); the
others live beside it in commands/ (manage.py: info, check, rm, prune, clip, doctor;
learning.py: export, train, eval), sharing the option declarations and printing helpers of
commands/face.py, and join the app at the bottom of this file.
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

import tspo_edge
from tspo_edge import limits as L
from tspo_edge.answers import format_result
from tspo_edge.ask import Asker, check_inputs, contact_sheet, process_seconds
from tspo_edge.checks import check_range, json_safe
from tspo_edge.commands import learning, manage
from tspo_edge.commands.face import (AgentOpt, DbOpt, DeviceOpt, EncoderOpt, FpsOpt, JsonOpt, MaxFramesOpt, METHOD_HELP,
                                     ModelDirOpt, RuntimeOpt, ServerOpt, interrupt_note, cache_onnx, dump, err,
                                     examples, fail, interrupted, on_interrupt, out, say, say_escaped, warn_line)
from tspo_edge.errors import InputError, TspoError
from tspo_edge.index import check_engine, index_with_engine
from tspo_edge.index.console import IndexingProgress, IndexProgress, print_summary, watch_line
from tspo_edge.index.watch import DEFAULT_SETTLE, WatchService, watch_until_signal
from tspo_edge.media import video
from tspo_edge.models import ModelSpec, load_models
from tspo_edge.models.mllm import answerer_for
from tspo_edge.pipeline import Sampling
from tspo_edge.question_batch import load_batch
from tspo_edge.selection import METHODS
from tspo_edge.serving.client import ask_remote
from tspo_edge.storage import search_view
from tspo_edge.storage.search import search
from tspo_edge.storage.search_cache import refresh_after_index
from tspo_edge.storage.search_filters import DEFAULT_MIN_SCORE, filters_from_options
from tspo_edge.storage.store import Store, existing_index, removed_if_left_empty
from tspo_edge.terminal import printable

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


class Edge(typer.core.TyperGroup):
    """The one place where errors become a line and an exit status: a TspoError its message and
    its exit_code, MemoryError exit 2, Ctrl-C exit 130 with the command's INTERRUPTED line."""

    def invoke(self, ctx):
        interrupt_note.clear()
        try:
            return super().invoke(ctx)
        except TspoError as e:
            fail(e)
        except MemoryError:
            fail(InputError(OUT_OF_MEMORY.get(ctx.invoked_subcommand, "out of memory")))
        except KeyboardInterrupt:
            interrupted(next(iter(interrupt_note), None) or INTERRUPTED.get(ctx.invoked_subcommand, "interrupted"))


app = typer.Typer(
    cls=Edge,
    name="tspo-edge",
    help="Ask questions about long videos: TSPO keyframe selection over a SQLite index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags read as flags, examples keep their lines
)


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
    warn_line(r.warning)
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
            warn_line(a.warning, f"{a.where}: ")
        typer.echo(json.dumps(json_safe(a.record), allow_nan=False))
    return failed


def _ask_remote(server: str, video_path: Optional[Path], question: Optional[str], *, option, frames, method, mllm,
                json_out: bool, timeout: float, local_only: dict) -> None:
    """`ask --server URL`: the question goes to a running server; the same output as a local ask."""
    d, r = ask_remote(server, video_path, question, options=option, frames=frames, method=method, mllm=mllm,
                      token=os.environ.get("TSPO_EDGE_TOKEN"), timeout=timeout, local_only=local_only)
    warn_line(r.warning)
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
    from tspo_edge.serving.serve import ServeOptions, serve  # deferred: fastapi + uvicorn, ~0.5 s; only serve needs them (tests/test_cli_startup.py)

    spec = ModelSpec.from_options(encoder, agent, runtime, model_dir, device)
    options = ServeOptions(db=db, spec=spec, host=host, port=port, token=os.environ.get("TSPO_EDGE_TOKEN"),
                           mllm=mllm, mllm_model=mllm_model, trust_remote_code=trust_remote_code,
                           index_roots=index_root or (), allow_hosts=allow_host or (), threads=threads,
                           torch_threads=torch_threads, watch=watch_dirs or (), settle=settle)
    serve(options.check(), watcher=WatchService, say=say_escaped)


app.add_typer(manage.commands)     # info, check, rm, prune, clip, doctor
app.add_typer(learning.commands)   # export, train
app.add_typer(learning.eval_app, name="eval")


if __name__ == "__main__":  # `python cli.py`, and `python -m tspo_edge` (tspo_edge/__main__.py runs this file)
    app(prog_name="tspo-edge")
