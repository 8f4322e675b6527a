"""Index on a Ray cluster: `tspo-edge index --engine ray [--ray-address ADDRESS]`.

    Ray tasks (CPU, one per video)       encoder actors (a GPU each; one CPU actor without GPUs)
    decode_video -> chunks  ---------->  encode_images(chunk) -> x
    (the task keeps at most 3 chunks in flight and returns times, x: the embeddings only)
                         driver: agent events, then one transaction per video, alone writing SQLite

The driver decides what needs indexing with the plain path's rules (`index.parallel.plan_file`:
unchanged files skipped, a new agent recomputes events without decoding), hands the rest to Ray,
and writes each video as its result arrives; a bad file comes back as its one-line error and is
recorded as failed while the batch goes on; a run stopped at any point resumes where it stopped.
Video paths and model folders must be readable at the same paths on every node (a shared file
system), and tspo-edge installed there (docs/index.md shows a multi-node run).

Ray is optional (`pip install 'tspo-edge[ray]'`) and imported only here, when this engine runs.
Without an address a local Ray starts (and stops at the end) with this machine's cores.
"""

from __future__ import annotations

import importlib
import os
import time
import warnings
from pathlib import Path

import numpy as np

import tspo_edge
from tspo_edge.media.decoding import DecodeJob, decode_video, error_text
from tspo_edge.errors import IndexMismatchError, InputError, TspoError
from tspo_edge.models import ModelSpec, Models, load_models
from tspo_edge.pipeline import FileResult, IndexEvent, Progress, Sampling, start_run
from tspo_edge.storage.store import Store

from tspo_edge.index.engine import run_engine
from tspo_edge.index.parallel import ParallelSummary, plan_files, record_failed, record_video

CHUNKS_IN_FLIGHT = 3     # per task: chunks sent to the encoder and not yet encoded


def _ray():
    try:
        import ray  # optional: the [ray] extra
    except ImportError as e:
        raise InputError("--engine ray needs Ray, which is not installed: pip install 'tspo-edge[ray]'") from e
    return ray


class EncoderWorker:
    """A Ray actor holding the spec's image encoder (on its GPU when it has one)."""

    def __init__(self, spec: ModelSpec):
        self.encoder = load_models(spec).encoder

    def describe(self) -> tuple[str, int]:
        return self.encoder.id, self.encoder.image_size

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(self.encoder.encode_images(frames), dtype=np.float32)


def index_task(job: DecodeJob, encoder) -> tuple:
    """A Ray task: decode one video, have `encoder` (an actor) embed its chunks as they come.
    ("ok", job, (duration, fps, width, height), times, x, warnings) or ("failed", job, error,
    warnings): the warnings' texts, raised again by the driver."""
    ray = _ray()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            info, chunks = decode_video(job.path, fps=job.fps, max_frames=job.max_frames, size=job.size,
                                        chunk=job.chunk, decoder=job.decoder)
            times, refs = [], []
            for c in chunks:
                if not len(c.times):
                    continue
                times.append(np.asarray(c.times, np.float64))
                refs.append(encoder.encode.remote(c.frames))
                if len(refs) > CHUNKS_IN_FLIGHT:  # the actor runs calls in order: wait for an older one
                    ray.wait([refs[-CHUNKS_IN_FLIGHT - 1]], fetch_local=False)
            xs = ray.get(refs)
        except Exception as e:  # the file's fault (or its encoding's): recorded, the batch goes on
            err = error_text(e)
            xs, failed = None, err if job.path in err else f"{job.path}: {err}"
    said = [str(w.message) for w in caught]
    if xs is None:
        return ("failed", job.job, failed, said)
    if not xs:
        return ("failed", job.job, f"{job.path}: no frames decoded", said)
    return ("ok", job.job, (info.duration, info.fps, info.width, info.height),
            np.concatenate(times), np.concatenate(xs), said)


def worker_pythonpath() -> str:
    """Local Ray workers' PYTHONPATH: the folder holding the `tspo_edge` this driver runs, then the
    driver's own PYTHONPATH (packages carried there, Ray itself perhaps: replacing it left the
    workers unable to import ray, and Ray restarts them forever)."""
    entries = [str(Path(tspo_edge.__file__).resolve().parent.parent),
               *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(e for e in entries if e))


PROBE_SECONDS = 120.0


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to `address`, or start a local Ray; True when this call started it (stop it after)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath()}})
    except Exception as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise TspoError(f"cannot start {where}: {' '.join(str(e).split())[:300]}") from e
    try:
        probe_workers(ray)
    except TspoError:
        ray.shutdown()
        raise
    return True


def _import(module: str) -> str:
    return importlib.import_module(module).__name__


def probe_workers(ray, timeout: float = PROBE_SECONDS, module: str = "tspo_edge") -> None:
    """One task must start and import `module` within `timeout` seconds: a worker that cannot
    start (Ray restarts it forever) or a node without tspo-edge is one clear error, not a hang."""
    try:
        ray.get(ray.remote(num_cpus=0)(_import).remote(module), timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise TspoError(f"Ray workers did not start within {timeout:g} s (their log: "
                        "/tmp/ray/session_latest/logs/raylet.err)") from None
    except ray.exceptions.RayError as e:
        last = [line for line in str(e).splitlines() if line.strip()][-1:] or [type(e).__name__]
        raise TspoError(f"a Ray worker cannot import {module}: {' '.join(last[0].split())[:200]} "
                        "(install tspo-edge on every node)") from None


def _encoders(ray, spec: ModelSpec, expected_id: str) -> list:
    """One encoder actor per GPU of the cluster, or one CPU actor when it has none; their encoder
    must be the driver's (the index is bound to one encoder)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    remote = ray.remote(EncoderWorker)
    actors = ([remote.options(num_gpus=1, num_cpus=1).remote(spec) for _ in range(gpus)] if gpus
              else [remote.options(num_cpus=1).remote(spec)])
    for enc_id, _ in ray.get([a.describe.remote() for a in actors]):
        if enc_id != expected_id:
            raise IndexMismatchError(f"Ray encoder actors load encoder {enc_id}, the driver {expected_id}: "
                                     "the encoder spec must name the same model on every node")
    return actors


def run_ray(store: Store, paths, models: Models, sampling: Sampling, *, force: bool = False,
            retry_failed: bool = False, progress: Progress | None = None, in_flight: int | None = None,
            emit=None) -> list[FileResult]:
    """Index `paths` with Ray tasks; the driver (this process) writes. Results in the order of `paths`."""
    ray = _ray()
    skipped = start_run(store, paths, models, sampling, force=force, retry_failed=retry_failed, progress=progress)
    results: dict[int, FileResult] = {}

    def done(order: int, r: FileResult) -> None:
        results[order] = r
        if progress is not None:
            if r.status == "indexed":
                progress(IndexEvent("frames", r.path, frames=r.frames))
            progress(IndexEvent("done", r.path, result=r))
        if emit is not None:
            emit(order, r)

    pending = plan_files(store, paths, skipped, models, sampling, force, done)
    if not pending:
        return [results[i] for i in sorted(results)]
    encoder = models.encoder
    actors = _encoders(ray, models.spec, encoder.id)
    task = ray.remote(index_task).options(num_cpus=1, max_retries=1)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    limit = in_flight or max(2, 2 * cpus)   # videos decoding at once, bounded (their chunks are in flight)
    todo = list(pending.items())
    running: dict = {}
    try:
        while todo or running:
            while todo and len(running) < limit:
                job, p = todo.pop(0)
                p.t0 = time.perf_counter()
                ref = task.remote(DecodeJob(job, p.path, sampling.fps, sampling.max_frames, encoder.image_size,
                                            sampling.chunk, sampling.decoder), actors[job % len(actors)])
                running[ref] = job
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                job = running.pop(ref)
                p = pending.pop(job)
                try:
                    out = ray.get(ref)
                except Exception as e:  # the task itself died (worker crash, node lost) after its retry
                    if isinstance(getattr(e, "cause", None), ImportError):
                        raise TspoError(f"Ray workers cannot run tspo-edge ({e.cause}); install it on every node") from e
                    done(job, record_failed(store, models, sampling, p, error_text(e).splitlines()[0][:300]))
                    continue
                for text in out[-1]:  # the task's warnings, raised here where the run is reported
                    warnings.warn(text, stacklevel=2)
                if out[0] == "failed":
                    done(job, record_failed(store, models, sampling, p, out[2]))
                else:
                    p.info = out[2]
                    done(job, record_video(store, models, sampling, p, np.array(out[3]), np.array(out[4])))  # writable copies
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        for a in actors:
            ray.kill(a)
    return [results[i] for i in sorted(results)]


def index_paths_ray(paths, *, db, models: Models, sampling: Sampling = Sampling(), address: str | None = None,
                    force: bool = False, retry_failed: bool = False, progress: Progress | None = None,
                    num_cpus: int | None = None, in_flight: int | None = None) -> ParallelSummary:
    """`index.index_paths` on Ray: the same index and summary; this process alone writes `db`."""
    def run(store: Store, files, emit) -> None:
        run_ray(store, files, models, sampling, force=force, retry_failed=retry_failed, progress=progress,
                in_flight=in_flight, emit=emit)

    started = start_ray(address, num_cpus)
    try:
        return run_engine(paths, db=db, models=models, run=run, summary=ParallelSummary,
                          workers=num_cpus or 0, engine="ray")  # workers 0: the cluster's CPUs
    finally:
        if started:
            _ray().shutdown()
