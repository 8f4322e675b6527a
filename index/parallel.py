"""Index with several decoding processes feeding one encoder: `tspo-edge index --workers N`.

    worker processes (spawn)          main process
    decode_worker: video -> chunks -> bounded queue -> batches across videos -> ONE encoder
                                                    -> per video: agent events, one transaction

Decoding is the bottleneck of indexing (issue 14: the encoder idles about 95 % of the time behind
one decoding process), so N processes decode N videos at once while the main process encodes
their frames in batches that mix videos (frames of the same size form one encoder call) and alone
writes the index. The rules are the plain path's (`tspo_edge.pipeline.index_video`): an unchanged
file is skipped, a new agent recomputes event features without decoding, each video is written
in one transaction when its last frame is encoded, a bad file is recorded as failed with its
error and the run goes on, and a run stopped at any point resumes where it stopped.

Memory is bounded: the queue holds at most `2 N` chunks, each worker builds one more, and the main
process keeps only the embeddings of the videos in flight (T x D float32).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sqlite3
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from tspo_edge.media.decoding import DecodeJob, decode_worker, error_text
from tspo_edge.errors import IndexMismatchError, StoreError, TspoError
from tspo_edge.models import Models
from tspo_edge.pipeline import (FileResult, IndexEvent, Progress, Sampling, agent_events, index_video,
                                record_failed_file, start_run, stored_result)
from tspo_edge.storage.store import Store, canonical_path, fingerprint

from tspo_edge.index.engine import IndexSummary, run_engine

POLL_S = 0.2          # how long the main process waits for a message before it encodes a partial batch


def default_workers() -> int:
    """Decoding processes by default: the cores this process may use, less one for the encoder."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass
class ParallelSummary(IndexSummary):
    """An IndexSummary whose frames/s is the run's (videos overlap, so their times do not add up)."""
    workers: int = 1
    engine: str = "workers"

    @property
    def frames_per_s(self) -> float | None:
        return self.frames / self.seconds if self.seconds > 0 and self.frames else None


# ---- what needs decoding (the plain path's rules, for files handed to other processes) --------

@dataclass
class Pending:
    """A file that must be decoded: its identity as stat and fingerprint saw it before decoding."""
    order: int
    path: str
    size: int
    mtime: float
    fp: str
    t0: float = field(default_factory=time.perf_counter)
    info: tuple | None = None        # (duration, fps, width, height) from the worker's probe
    recorded: float | None = None    # the container's creation_time (epoch seconds), when it has one
    times: list = field(default_factory=list)
    xs: list = field(default_factory=list)
    queued: int = 0                  # frames waiting in the main process's batch
    ended: bool = False
    error: str | None = None


def plan_file(store: Store, order: int, path, models: Models, sampling: Sampling, force: bool,
              ) -> FileResult | Pending:
    """A file's result when nothing needs decoding (pipeline.stored_result: skipped, or events
    recomputed; or failed before decoding), else what the decoder needs."""
    key = canonical_path(path)
    t0 = time.perf_counter()
    size = mtime = fp = None
    try:
        st = os.stat(key)
        size, mtime = st.st_size, st.st_mtime
        fp = fingerprint(key, size)
        stored = stored_result(store, key, size, mtime, fp, models, sampling, force=force, t0=t0)
        return stored if stored is not None else Pending(order, key, size, mtime, fp)
    except (IndexMismatchError, StoreError, sqlite3.Error):
        raise
    except Exception as e:
        return record_failed(store, models, sampling, Pending(order, key, size, mtime, fp, t0=t0),
                             error_text(e))


def plan_files(store: Store, paths, skipped: dict[int, FileResult], models: Models, sampling: Sampling,
               force: bool, done) -> dict[int, Pending]:
    """Every file's `plan_file` (the skipped ones as they are): finished ones go to `done(order,
    result)`, the ones to decode come back by position."""
    pending: dict[int, Pending] = {}
    for i, path in enumerate(paths):
        r = skipped.get(i) or plan_file(store, i, path, models, sampling, force)
        if isinstance(r, FileResult):
            done(i, r)
        else:
            pending[i] = r
    return pending


def record_failed(store: Store, models: Models, sampling: Sampling, p: Pending, error: str) -> FileResult:
    error = error if p.path in error else f"{p.path}: {error}"
    return record_failed_file(store, p.path, p.size, p.mtime, p.fp, error, models, sampling, p.t0)


def record_video(store: Store, models: Models, sampling: Sampling, p: Pending, times: np.ndarray,
                 x: np.ndarray) -> FileResult:
    """Events for the whole video, then its row and features in one transaction (a file's own
    fault is recorded as failed; faults of the index or the agent raise, as in the plain path)."""
    if len(x) == 0:
        return record_failed(store, models, sampling, p, f"{p.path}: no frames decoded")
    if not np.isfinite(x).all():
        return record_failed(store, models, sampling, p,
                             f"{p.path}: encoder {models.encoder.id} gave non-finite embeddings")
    z = agent_events(models, x, p.path)
    duration, fps, width, height = p.info or (None, None, None, None)
    try:
        row = store.put_video(path=p.path, size=p.size, mtime=p.mtime, fingerprint=p.fp, times=times, x=x, z=z,
                              encoder_id=models.encoder.id, agent_id=models.agent_id, duration=duration,
                              fps=fps, width=width, height=height, sample_fps=sampling.fps,
                              max_frames=sampling.max_frames, index_seconds=time.perf_counter() - p.t0,
                              recorded_at=p.recorded)
    except (IndexMismatchError, StoreError, sqlite3.Error):
        raise
    except (TspoError, ValueError) as e:
        return record_failed(store, models, sampling, p, error_text(e))
    return FileResult(p.path, "indexed", row.frame_count or 0, time.perf_counter() - p.t0, row.duration,
                      video_id=row.id)


# ---- the run ----------------------------------------------------------------------------------

class _Run:
    """The main process's side: messages in, batches encoded, videos written."""

    def __init__(self, store: Store, models: Models, sampling: Sampling, pending: dict[int, Pending],
                 progress: Progress | None, batch_frames: int, emit):
        self.store, self.models, self.sampling = store, models, sampling
        self.pending, self.progress, self.batch_frames, self.emit = pending, progress, batch_frames, emit
        self.batch: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.queued = 0

    def on_message(self, msg) -> None:
        kind, job = msg[0], msg[1]
        if kind == "warning":  # a decoding process's warning, raised here where it is reported
            warnings.warn(msg[2], stacklevel=2)
            return
        p = self.pending.get(job)
        if p is None:  # finished already (failed while its chunks were still coming)
            return
        if kind == "info":
            p.info = tuple(msg[2:6])
            p.recorded = msg[6] if len(msg) > 6 else None
        elif kind == "chunk":
            if p.error is None:
                self.batch.append((job, msg[2], msg[3]))
                p.queued += len(msg[2])
                self.queued += len(msg[2])
                if self.queued >= self.batch_frames:
                    self.flush()
        elif kind == "end":
            p.ended = True
            self.finish_ready()
        elif kind == "failed":
            p.error = p.error or msg[2]
            p.ended = True
            self.finish_ready()

    def flush(self) -> None:
        """Encode the batch: frames of one size in one encoder call, whichever videos they are from."""
        if not self.batch:
            return
        batch, self.batch, self.queued = self.batch, [], 0
        shapes: dict[tuple, list[int]] = {}
        for i, (_, _, frames) in enumerate(batch):
            shapes.setdefault(frames.shape[1:], []).append(i)
        for idx in shapes.values():
            try:
                x = np.asarray(self.models.encoder.encode_images(np.concatenate([batch[i][2] for i in idx])),
                               dtype=np.float32)
            except (IndexMismatchError, StoreError, sqlite3.Error):
                raise
            except Exception as e:  # as the plain path: the videos being encoded fail, the run goes on
                for i in idx:
                    p = self.pending[batch[i][0]]
                    p.queued -= len(batch[i][1])
                    p.error = p.error or error_text(e)
                continue
            at = 0
            for i in idx:
                job, times, frames = batch[i]
                p = self.pending[job]
                n = len(times)
                p.times.append(np.asarray(times, np.float64))
                p.xs.append(x[at:at + n])
                p.queued -= n
                at += n
                if self.progress is not None:
                    self.progress(IndexEvent("frames", p.path, frames=n))
        self.finish_ready()

    def finish_ready(self) -> None:
        for job in [j for j, p in self.pending.items() if p.ended and p.queued == 0]:
            p = self.pending.pop(job)
            if p.error is not None:
                r = record_failed(self.store, self.models, self.sampling, p, p.error)
            else:
                times = np.concatenate(p.times) if p.times else np.empty(0)
                x = np.concatenate(p.xs) if p.xs else np.empty((0, self.models.encoder.dim), np.float32)
                p.times = p.xs = []
                r = record_video(self.store, self.models, self.sampling, p, times, x)
            self.emit(p.order, r)

    def fail(self, job: int, error: str) -> None:
        """A job whose worker died: drop its frames, record it failed."""
        p = self.pending.get(job)
        if p is None:
            return
        self.batch = [b for b in self.batch if b[0] != job]
        self.queued = sum(len(b[1]) for b in self.batch)
        p.error, p.ended, p.queued = error, True, 0
        self.finish_ready()


def run_workers(store: Store, paths, models: Models, sampling: Sampling, *, workers: int, force: bool = False,
                retry_failed: bool = False, progress: Progress | None = None, batch_frames: int | None = None,
                emit=None) -> list[FileResult]:
    """Index `paths` with `workers` decoding processes; results in the order of `paths`.
    `emit(order, result)` is called as each file is done (committed or recorded as failed)."""
    skipped = start_run(store, paths, models, sampling, force=force, retry_failed=retry_failed, progress=progress)
    results: dict[int, FileResult] = {}

    def done(order: int, r: FileResult) -> None:
        results[order] = r
        if progress is not None:
            progress(IndexEvent("done", r.path, result=r))
        if emit is not None:
            emit(order, r)

    pending = plan_files(store, paths, skipped, models, sampling, force, done)
    if len(pending) == 1:  # one video to decode: no process to start, the plain path does it
        (i, p), = pending.items()
        r = index_video(store, p.path, models, sampling, force=force, progress=progress)
        done(i, r)
    elif pending:
        _decode_and_encode(store, models, sampling, pending, workers=workers, progress=progress,
                           batch_frames=batch_frames or max(64, 2 * sampling.chunk), emit=done)
    return [results[i] for i in sorted(results)]


def _decode_and_encode(store, models, sampling, pending: dict[int, Pending], *, workers: int, progress,
                       batch_frames: int, emit) -> None:
    ctx = mp.get_context("spawn")  # no fork: the main process holds torch threads and an open SQLite file
    n = max(1, min(workers, len(pending)))
    jobs_q = ctx.Queue()
    results_q = ctx.Queue(maxsize=2 * n)
    for job, p in pending.items():
        jobs_q.put(DecodeJob(job, p.path, sampling.fps, sampling.max_frames, models.encoder.image_size,
                             sampling.chunk, sampling.decoder))
    for _ in range(n):
        jobs_q.put(None)
    run = _Run(store, models, sampling, pending, progress, batch_frames, emit)
    procs: dict[int, mp.process.BaseProcess] = {}
    current: dict[int, int] = {}        # worker -> job it decodes
    started: set[int] = set()

    def spawn(wid: int) -> None:
        p = ctx.Process(target=decode_worker, args=(jobs_q, results_q, wid), name=f"tspo-edge-decode-{wid}",
                        daemon=True)
        p.start()
        procs[wid] = p

    for wid in range(n):
        spawn(wid)
    live = set(procs)
    try:
        while live:
            try:
                msg = results_q.get(timeout=POLL_S)
            except queue.Empty:
                msg = None
                run.flush()  # nothing arriving: encode what is there rather than wait for a full batch
            if msg is not None:
                kind = msg[0]
                if kind == "exit":
                    live.discard(msg[2])
                    current.pop(msg[2], None)
                else:
                    if kind == "start":
                        current[msg[2]] = msg[1]
                        started.add(msg[1])
                    run.on_message(msg)
            if msg is None:
                # the queue is empty, so whatever a dead worker sent has been read: a worker that is
                # gone now without its "exit" died (a crash inside FFmpeg, killed)
                for wid in [w for w in live if not procs[w].is_alive()]:
                    live.discard(wid)
                    job = current.pop(wid, None)
                    if job is not None:
                        path = pending[job].path if job in pending else "?"
                        run.fail(job, f"{path}: the decoding process died (exit code {procs[wid].exitcode})")
                    if any(j not in started for j in run.pending):  # jobs left: a replacement takes them
                        jobs_q.put(None)  # in case the dead one had taken a stop sentinel
                        nid = max(procs) + 1
                        spawn(nid)
                        live.add(nid)
        run.flush()
        for job in list(run.pending):  # never reached by a worker (should not happen): say so
            run.fail(job, f"{run.pending[job].path}: not decoded (the decoding processes stopped)")
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        for p in procs.values():
            p.join(timeout=5)
        for q in (jobs_q, results_q):
            q.cancel_join_thread()
            q.close()


def index_paths_parallel(paths, *, db, models: Models, sampling: Sampling = Sampling(), workers: int | None = None,
                         force: bool = False, retry_failed: bool = False, progress: Progress | None = None,
                         batch_frames: int | None = None) -> ParallelSummary:
    """`index.index_paths` with `workers` decoding processes (None: `default_workers()`) feeding one
    encoder in this process; the same index, incremental and resumable, the same summary."""
    workers = default_workers() if workers is None else workers

    def run(store: Store, files, emit) -> None:
        run_workers(store, files, models, sampling, workers=workers, force=force, retry_failed=retry_failed,
                    progress=progress, batch_frames=batch_frames, emit=emit)

    return run_engine(paths, db=db, models=models, run=run, summary=ParallelSummary, workers=workers,
                      engine="workers")
