"""One video into the index: decode -> encode -> events -> store, in one transaction.

    frames   tspo_edge.media.video.iter_frames: sampled at `fps`, resized while decoding, in chunks
    x[T,D]   models.encoder.encode_images, chunk by chunk (only the embeddings are kept)
    z[T,D]   models.agent.events(x), once per video (question-independent event features)
    store    Store.put_video: one transaction, so an interrupted run leaves nothing half-written

`index_video` brings one file up to date (skip, recompute events for a new agent without
decoding, or index) and records a file that fails as failed instead of raising; `index_videos`
does it for a list of files; `ensure_indexed` is what ask and train call for a video they are
given. Progress is reported as `IndexEvent`s to an optional callback.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from tspo_edge.media import video
from tspo_edge.checks import check_positive, check_range
from tspo_edge.errors import IndexMismatchError, InputError, TspoError
from tspo_edge.freshness import Freshness, is_current, models_stamp, record_models, recorded_models
from tspo_edge.limits import MAX_FPS, MAX_VIDEO_FRAMES, MIN_FPS
from tspo_edge.models import Models
from tspo_edge.storage.store import Store, StoreError, VideoRow, canonical_path, fingerprint

# ---- what a caller sees -----------------------------------------------------------------


@dataclass
class FileResult:
    path: str
    status: str                 # indexed | skipped | events (recomputed for a new agent) | failed
    frames: int = 0
    seconds: float = 0.0
    duration: float | None = None
    error: str | None = None
    video_id: int | None = None
    unchanged: bool = False     # failed: the failure recorded before, the file unchanged since (not retried)


@dataclass
class IndexEvent:
    """What a progress callback receives."""
    kind: str                       # start | file | frames | done
    path: str | None = None
    total_files: int = 0            # start
    expected_frames: int | None = None  # file: frames this video should give (from its probe)
    frames: int = 0                 # frames: how many were just encoded
    result: FileResult | None = None  # done
    encoder_id: str | None = None   # start
    agent_id: str | None = None     # start
    agent: str | None = None        # start: which agent, and why


Progress = Callable[[IndexEvent], None]


@dataclass(frozen=True)
class Sampling:
    """How frames are taken from a video: `fps` per second, at most `max_frames` (spread evenly)."""
    fps: float = 1.0
    max_frames: int | None = None
    decoder: str = "pyav"
    chunk: int = 32

    def __post_init__(self) -> None:
        check_positive(self.fps, "the sampling rate (frames per second)")
        check_range(self.fps, "the sampling rate (frames per second)", 0, MAX_FPS)
        check_range(self.max_frames, "the frame limit", 1, MAX_VIDEO_FRAMES, integer=True)
        check_positive(self.chunk, "the chunk size", integer=True)
        if self.decoder not in video.available_decoders():
            raise InputError(f"decoder {self.decoder!r} is not available here "
                             f"(available: {', '.join(video.available_decoders())})")

    @classmethod
    def from_options(cls, fps: float, max_frames: int | None = None, decoder: str = "pyav") -> "Sampling":
        """A command's --fps, --max-frames and --decoder, checked (InputError naming the option)."""
        check_range(fps, "--fps", MIN_FPS, MAX_FPS)
        check_range(max_frames, "--max-frames", 1, MAX_VIDEO_FRAMES, integer=True)
        if decoder not in video.available_decoders():
            raise InputError(f"--decoder {decoder}: not available here "
                             f"(available: {', '.join(video.available_decoders())})")
        return cls(fps=fps, max_frames=max_frames, decoder=decoder)

    def expected_frames(self, duration: float | None) -> int | None:
        if not duration:
            return None
        n = max(1, int(np.ceil(duration * self.fps - 1e-9)))
        return min(n, self.max_frames) if self.max_frames else n


# ---- decoding and encoding ------------------------------------------------------------------

_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run iterator `it` in a background thread, at most `depth` items ahead (PyAV decodes
    without the GIL, so decoding the next chunk overlaps encoding this one)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    th = threading.Thread(target=run, name="tspo-edge-decode", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        th.join(timeout=10)


def overlap_decoding(encoder) -> bool:
    """Decode in a background thread only when the encoder runs on an accelerator: on a CPU-only
    machine decoding and encoding compete for the same cores, and overlapping them measured
    slower (docs/index.md), so chunks are then decoded and encoded in turn."""
    return str(getattr(encoder, "device", "cpu")).split(":")[0] not in ("cpu", "")


def encode_video(path, encoder, sampling: Sampling = Sampling(), *, threaded: bool | None = None,
                 on_frames: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(times float64[T], x float32[T,D]): decode in chunks, encode each, keep only x.
    `threaded`: decode the next chunk in a background thread (None: `overlap_decoding(encoder)`)."""
    chunks = video.iter_frames(path, fps=sampling.fps, max_frames=sampling.max_frames, size=encoder.image_size,
                               chunk=sampling.chunk, decoder=sampling.decoder)
    if overlap_decoding(encoder) if threaded is None else threaded:
        chunks = prefetch(chunks)
    times, xs = [], []
    for c in chunks:
        if len(c.times) == 0:
            continue
        x = np.asarray(encoder.encode_images(c.frames), dtype=np.float32)
        if not np.isfinite(x).all():
            raise TspoError(f"{path}: encoder {encoder.id} gave non-finite embeddings")
        times.append(np.asarray(c.times, dtype=np.float64))
        xs.append(x)
        if on_frames is not None:
            on_frames(len(x))
    if not xs:
        raise TspoError(f"{path}: no frames decoded")
    return np.concatenate(times), np.concatenate(xs)


def agent_events(models: Models, x: np.ndarray, where: str) -> np.ndarray:
    """z = agent.events(x) as float32, refused when not finite (nothing non-finite is stored)."""
    z = np.asarray(models.agent.events(x), dtype=np.float32)
    if not np.isfinite(z).all():
        raise IndexMismatchError(f"{models.agent.source}: the agent gives non-finite event features "
                                 f"(for {where}); the checkpoint is unusable")
    return z


# ---- one video ------------------------------------------------------------------------------


def _error_text(e: BaseException) -> str:
    msg = str(e) if isinstance(e, TspoError) else f"{type(e).__name__}: {e}"
    return " ".join(msg.split()) or type(e).__name__


def stored_result(store: Store, key: str, size: int, mtime: float, fp: str, models: Models, sampling: Sampling,
                  *, force: bool = False, t0: float | None = None) -> FileResult | None:
    """The file's result when the stored row serves it as it is — skipped, or its event features
    recomputed from the stored embeddings for another agent (no decoding) — else None: decode it.
    Every engine (plain, worker processes, Ray) decides through this one function."""
    t0 = time.perf_counter() if t0 is None else t0
    old = store.find_video(key)
    if force or not is_current(old, size, mtime, fp, sampling):
        return None
    if old.agent_id == models.agent_id:
        return FileResult(key, "skipped", old.frame_count or 0, time.perf_counter() - t0, old.duration,
                          video_id=old.id)
    feats = store.load_features(old.id)
    row = store.update_events(old.id, agent_events(models, feats.x, key), models.agent_id)
    return FileResult(key, "events", row.frame_count or 0, time.perf_counter() - t0, row.duration, video_id=row.id)


def index_video(store: Store, path, models: Models, sampling: Sampling = Sampling(), *, force: bool = False,
                progress: Progress | None = None, threaded: bool | None = None,
                record_failure: bool = True) -> FileResult:
    """Bring one file up to date in the store. A file that fails is recorded as failed and
    the error returned, not raised (with `record_failure=False`: raised, nothing written);
    KeyboardInterrupt passes through with nothing half-written. Faults of the index itself
    (another encoder, storage) are raised: they stop a run."""
    key = canonical_path(path)
    t0 = time.perf_counter()
    size = mtime = fp = None
    encoder = models.encoder
    try:
        st = os.stat(key)
        size, mtime = st.st_size, st.st_mtime
        fp = fingerprint(key, size)
        stored = stored_result(store, key, size, mtime, fp, models, sampling, force=force, t0=t0)
        if stored is not None:
            return stored
        info = video.probe(key, decoder=sampling.decoder)
        on_frames = None
        if progress is not None:
            progress(IndexEvent("file", key, expected_frames=sampling.expected_frames(info.duration)))
            on_frames = lambda n: progress(IndexEvent("frames", key, frames=n))  # noqa: E731
        times, x = encode_video(key, encoder, sampling, threaded=threaded, on_frames=on_frames)
        z = agent_events(models, x, key)
        row = store.put_video(
            path=key, size=size, mtime=mtime, fingerprint=fp, times=times, x=x, z=z,
            encoder_id=encoder.id, agent_id=models.agent_id, duration=info.duration, fps=info.fps,
            width=info.width, height=info.height, sample_fps=sampling.fps, max_frames=sampling.max_frames,
            index_seconds=time.perf_counter() - t0, container=info.container,
            recorded_at=info.creation_time)
        return FileResult(key, "indexed", row.frame_count or 0, time.perf_counter() - t0, row.duration,
                          video_id=row.id)
    except (IndexMismatchError, StoreError, sqlite3.Error):
        raise  # about the index or the models, not the file: stop the run
    except Exception as e:
        err = _error_text(e)
        if not record_failure:
            raise TspoError(err if key in err else f"{key}: {err}") from e
        return record_failed_file(store, key, size, mtime, fp, err, models, sampling, t0)


def record_failed_file(store: Store, key: str, size, mtime, fp, error: str, models: Models, sampling: Sampling,
                       t0: float) -> FileResult:
    """Record a file that failed, with its error. A file whose stored row is indexed and that has
    not changed since keeps that row and its features: what failed is this run's way of reading
    it (another sampling or decoder), not the file, so the run cannot cost the index a video."""
    old = store.find_video(key)
    if (old is not None and old.status == "indexed" and size is not None
            and (old.size, old.mtime, old.fingerprint) == (size, mtime, fp)):
        return FileResult(key, "failed", 0, time.perf_counter() - t0, error=error, video_id=old.id)
    row = store.put_failed(path=key, size=size, mtime=mtime, fingerprint=fp, error=error,
                           encoder_id=models.encoder.id, agent_id=models.agent_id, sample_fps=sampling.fps)
    return FileResult(key, "failed", 0, time.perf_counter() - t0, error=error, video_id=row.id)


def bind_models(store: Store, models: Models, stamp: dict | None = None) -> None:
    """Tie the index to the encoder (refused when it holds another encoder's videos), record the
    agent, and record which ids the spec gave (`stamp`: `models_stamp(models.spec)` taken before
    the models loaded), so that a later run can skip unchanged files without loading them."""
    if store.readonly:
        store.check_encoder(models.encoder.id)
        return
    stamp = models_stamp(models.spec) if stamp is None else stamp
    store.bind_encoder(models.encoder.id, getattr(models.encoder, "source", None))
    if store.meta("agent_id") != models.agent_id:
        store.set_meta("agent_id", models.agent_id)
        store.set_meta("agent_source", models.agent_source)
    record_models(store, stamp, models.encoder.id, models.agent_id, models.agent_source)


def run_model_ids(store: Store, models: Models) -> tuple[str | None, str | None, str | None]:
    """(encoder id, agent id, agent source) of a run: the loaded models' or, when a run needed
    none loaded, what the index recorded for their spec (no model loads here)."""
    if models.loaded:
        return models.encoder.id, models.agent_id, models.agent_source
    rec = recorded_models(store, models_stamp(models.spec))
    if rec is not None:
        return rec.encoder_id, rec.agent_id, rec.agent_source
    return store.encoder_id, store.meta("agent_id"), store.meta("agent_source")


def start_run(store: Store, paths: Sequence, models: Models, sampling: Sampling, *, force: bool = False,
              retry_failed: bool = False, progress: Progress | None = None) -> dict[int, FileResult]:
    """The start of every engine's run: each file checked against the store without loading a
    model (`Freshness`); the models load (and the index is bound to them) only when some file
    needs work. Returns the files that need none, by position: "skipped" results for the current
    ones, and "failed" ones (`unchanged`, with the stored error) for files that failed before and
    have not changed since (tried again with `retry_failed` or `force`)."""
    t0 = time.perf_counter()
    fresh = Freshness(store, models.spec, sampling)
    skipped: dict[int, FileResult] = {}
    for i, p in enumerate([] if force else paths):
        row = fresh.current(p)
        if row is not None:
            skipped[i] = FileResult(row.path, "skipped", row.frame_count or 0, 0.0, row.duration, video_id=row.id)
        elif not retry_failed and (row := fresh.failed_unchanged(p)) is not None:
            skipped[i] = FileResult(row.path, "failed", 0, 0.0, error=row.error, video_id=row.id, unchanged=True)
    if len(skipped) < len(paths):
        bind_models(store, models, fresh.stamp)  # the models load here, and only here
        ids = models.encoder.id, models.agent_id, models.agent_source
    else:
        ids = (fresh.recorded.encoder_id, fresh.recorded.agent_id,
               fresh.recorded.agent_source) if fresh.recorded else (None, None, None)
    if skipped:  # the check's time, spread over the files it skipped
        per = (time.perf_counter() - t0) / len(paths)
        for r in skipped.values():
            r.seconds = per
    if progress is not None:
        progress(IndexEvent("start", total_files=len(paths), encoder_id=ids[0], agent_id=ids[1], agent=ids[2]))
    return skipped


def iter_index_videos(store: Store, paths: Sequence, models: Models, sampling: Sampling = Sampling(), *,
                      force: bool = False, retry_failed: bool = False, progress: Progress | None = None,
                      threaded: bool | None = None) -> Iterator[FileResult]:
    """Index the given video files, in order, yielding each one's result as it is committed
    (failures recorded, not raised); a fault of the index itself raises between videos.

    Every file is first checked against the store without loading a model (`Freshness`); the
    models load only when some file needs work, so a run with nothing to do loads none."""
    skipped = start_run(store, paths, models, sampling, force=force, retry_failed=retry_failed, progress=progress)
    for i, p in enumerate(paths):
        r = skipped.get(i)
        if r is None:
            r = index_video(store, p, models, sampling, force=force, progress=progress, threaded=threaded)
        if progress is not None:
            progress(IndexEvent("done", r.path, result=r))
        yield r


def index_videos(store: Store, paths: Sequence, models: Models, sampling: Sampling = Sampling(), **kw) -> list[FileResult]:
    """Every result of `iter_index_videos`."""
    return list(iter_index_videos(store, paths, models, sampling, **kw))


def ensure_indexed(store: Store, video_path, models: Models, sampling: Sampling | None = None, *,
                   progress: Progress | None = None, record_failure: bool = True) -> VideoRow:
    """The video's row, indexing it first if it is not (or no longer) up to date.

    Ask and train call this for a video they are given; without `sampling`, a video indexed
    before keeps the sampling it was indexed with. A video that cannot be indexed raises a
    TspoError naming the file and the cause (and is recorded as failed with `record_failure`).
    """
    if not Path(video_path).is_file():
        raise InputError(f"{video_path}: no such file")
    if sampling is None:
        before = store.find_video(canonical_path(video_path))
        sampling = (Sampling(fps=before.sample_fps, max_frames=before.max_frames)
                    if before is not None and before.sample_fps else Sampling())
    bind_models(store, models)
    r = index_video(store, video_path, models, sampling, progress=progress, record_failure=record_failure)
    if r.status == "failed":
        raise TspoError(r.error if r.error and r.path in r.error else f"{r.path}: {r.error}")
    return store.get_video(r.video_id)
