"""Index video files into the store: decode -> encode -> event features -> one transaction per video.

Streaming: frames arrive from `tspo_edge.video.iter_frames` in bounded chunks (decoded in a
background thread while the previous chunk is encoded when the encoder runs on an accelerator),
only the embeddings x[T,D] are kept,
and the agent's `events` runs once per video. Nothing is written for a video until it is
complete, so an interrupted run leaves the index consistent and the next run resumes by
skipping the files already done.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tspo_edge.errors import CheckpointError, IndexMismatchError, TspoError
from tspo_edge.store import Store, StoreError, VideoRow, canonical_path, fingerprint

from .files import find_videos

# ---- results and progress -------------------------------------------------------------------


@dataclass
class FileResult:
    path: str
    status: str                 # indexed | skipped | events (recomputed for a new agent) | failed
    frames: int = 0
    seconds: float = 0.0
    duration: float | None = None
    error: str | None = None
    video_id: int | None = None


@dataclass
class IndexSummary:
    db: str
    encoder_id: str
    agent_id: str
    agent_source: str
    files: list[FileResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def frames(self) -> int:
        """Frames decoded and encoded in this run (skipped files count none)."""
        return sum(f.frames for f in self.files if f.status == "indexed")

    @property
    def frames_per_s(self) -> float | None:
        """Frames per second of indexing work (decode + encode + events + write)."""
        busy = sum(f.seconds for f in self.files if f.status == "indexed")
        return self.frames / busy if busy > 0 and self.frames else None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(indexed=self.count("indexed"), skipped=self.count("skipped"),
                 events_recomputed=self.count("events"), failed=len(self.failed), frames=self.frames,
                 frames_per_s=self.frames_per_s, ok=self.ok)
        return d


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

# ---- agent choice -------------------------------------------------------------------------


def _spec_of(encoder) -> str | None:
    for attr in ("folder", "spec", "source", "path", "name_or_path"):
        v = getattr(encoder, attr, None)
        if isinstance(v, (str, os.PathLike)):
            return str(v)
    return None


def _has_selector(folder: Path) -> bool:
    """Whether a folder may hold TSPO-0.4B's `selector.*`: a cheap look at safetensors keys
    (a folder of .bin weights only cannot be looked into cheaply: the loader decides)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return any(folder.glob("*.bin"))
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                if any(k.startswith("selector.") for k in st.keys()):
                    return True
        except Exception:  # a broken file is the agent loader's business, not the guess's
            continue
    return False


def resolve_agent(agent, encoder, *, encoder_spec: str | None = None):
    """(agent, description). Default: TSPO-0.4B's selector when the encoder spec is a
    TSPO-0.4B folder (CLIP ViT-L/14 + `selector.*`) that loads, else the similarity-initialised
    agent of the encoder's width."""
    from tspo_edge.agent import load_agent

    if agent is None:
        spec = encoder_spec or _spec_of(encoder)
        if spec and Path(spec).is_dir() and encoder.dim == 768 and _has_selector(Path(spec)):
            try:
                a = load_agent(spec)
                if a.dim == encoder.dim:
                    return a, f"TSPO-0.4B selector from {spec}"
            except CheckpointError:
                pass
        return (load_agent(f"similarity:{encoder.dim}"),
                f"similarity:{encoder.dim} (untrained, similarity-initialised; no TSPO-0.4B weights with this encoder)")
    desc = str(agent) if isinstance(agent, (str, os.PathLike)) else getattr(agent, "source", "given agent")
    if isinstance(agent, (str, os.PathLike)):
        agent = load_agent(agent)
    if agent.dim != encoder.dim:
        raise IndexMismatchError(f"{desc}: agent width {agent.dim} does not match encoder {encoder.id} "
                                 f"width {encoder.dim}")
    return agent, str(desc)


# ---- streaming ------------------------------------------------------------------------------

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


# ---- one video ------------------------------------------------------------------------------


@dataclass
class _Options:
    fps: float = 1.0
    max_frames: int | None = None
    decoder: str = "pyav"
    force: bool = False
    chunk: int = 32
    threaded: bool | None = None


def _error_text(e: BaseException) -> str:
    msg = str(e) if isinstance(e, TspoError) else f"{type(e).__name__}: {e}"
    return " ".join(msg.split()) or type(e).__name__


def _needs_reindex(old: VideoRow, size: int, mtime: float, fp: str, o: _Options) -> bool:
    # the fingerprint samples 3 MiB, so an edit elsewhere shows only in mtime: all three must match
    if o.force or old.status != "indexed" or old.size != size or old.mtime != mtime or old.fingerprint != fp:
        return True
    if old.sample_fps is None or abs(old.sample_fps - o.fps) > 1e-9:
        return True
    return old.max_frames != o.max_frames


def overlap_decoding(encoder) -> bool:
    """Decode in a background thread only when the encoder runs on an accelerator: on a CPU-only
    machine decoding and encoding compete for the same cores, and overlapping them measured
    slower (docs/index.md), so chunks are then decoded and encoded in turn."""
    return str(getattr(encoder, "device", "cpu")).split(":")[0] not in ("cpu", "")


def encode_video(path, encoder, *, fps: float = 1.0, max_frames: int | None = None, decoder: str = "pyav",
                 chunk: int = 32, threaded: bool | None = None, on_frames: Callable[[int], None] | None = None):
    """(times float64[T], x float32[T,D]): decode in chunks, encode each, keep only x.
    `threaded`: decode the next chunk in a background thread (None: `overlap_decoding(encoder)`)."""
    from tspo_edge import video

    chunks = video.iter_frames(path, fps=fps, max_frames=max_frames, size=encoder.image_size,
                               chunk=chunk, decoder=decoder)
    if overlap_decoding(encoder) if threaded is None else threaded:
        chunks = prefetch(chunks)
    times, xs = [], []
    for c in chunks:
        if len(c.times) == 0:
            continue
        x = np.asarray(encoder.encode_images(c.frames), dtype=np.float32)
        times.append(np.asarray(c.times, dtype=np.float64))
        xs.append(x)
        if on_frames is not None:
            on_frames(len(x))
    if not xs:
        raise TspoError(f"{path}: no frames decoded")
    x = np.concatenate(xs)
    if not np.isfinite(x).all():
        raise TspoError(f"{path}: encoder {encoder.id} gave non-finite embeddings")
    return np.concatenate(times), x


def _expected_frames(info, o: _Options) -> int | None:
    d = getattr(info, "duration", None)
    if not d:
        return None
    n = max(1, int(np.ceil(d * o.fps - 1e-9)))
    return min(n, o.max_frames) if o.max_frames else n


def index_file(store: Store, path, encoder, agent, agent_id: str, o: _Options,
               progress: Progress | None = None) -> FileResult:
    """Bring one file up to date in the store. A file that fails is recorded as failed and
    the error returned, not raised; KeyboardInterrupt passes through with nothing half-written."""
    from tspo_edge import video

    key = canonical_path(path)
    t0 = time.perf_counter()
    size = mtime = fp = None
    try:
        st = os.stat(key)
        size, mtime = st.st_size, st.st_mtime
        fp = fingerprint(key, size)
        old = store.find_video(key)
        if old is not None and not _needs_reindex(old, size, mtime, fp, o):
            if old.agent_id == agent_id:
                return FileResult(key, "skipped", old.frame_count or 0, time.perf_counter() - t0,
                                  old.duration, video_id=old.id)
            # another agent: recompute event features from the stored embeddings, no decoding
            feats = store.load_features(old.id)
            row = store.update_events(old.id, np.asarray(agent.events(feats.x), dtype=np.float32), agent_id)
            return FileResult(key, "events", row.frame_count or 0, time.perf_counter() - t0, row.duration,
                              video_id=row.id)
        info = video.probe(key, decoder=o.decoder)
        on_frames = None
        if progress is not None:
            progress(IndexEvent("file", key, expected_frames=_expected_frames(info, o)))
            on_frames = lambda n: progress(IndexEvent("frames", key, frames=n))  # noqa: E731
        times, x = encode_video(key, encoder, fps=o.fps, max_frames=o.max_frames, decoder=o.decoder,
                                chunk=o.chunk, threaded=o.threaded, on_frames=on_frames)
        z = np.asarray(agent.events(x), dtype=np.float32)
        row = store.put_video(
            path=key, size=size, mtime=mtime, fingerprint=fp, times=times, x=x, z=z,
            encoder_id=encoder.id, agent_id=agent_id, duration=getattr(info, "duration", None),
            fps=getattr(info, "fps", None), width=getattr(info, "width", None),
            height=getattr(info, "height", None), sample_fps=o.fps, max_frames=o.max_frames,
            index_seconds=time.perf_counter() - t0)
        return FileResult(key, "indexed", row.frame_count or 0, time.perf_counter() - t0, row.duration,
                          video_id=row.id)
    except (IndexMismatchError, StoreError, sqlite3.Error):
        raise  # about the index, not the file: stop the run
    except Exception as e:
        err = _error_text(e)
        row = store.put_failed(path=key, size=size, mtime=mtime, fingerprint=fp, error=err,
                               encoder_id=encoder.id, agent_id=agent_id, sample_fps=o.fps)
        return FileResult(key, "failed", 0, time.perf_counter() - t0, error=err, video_id=row.id)


# ---- runs -----------------------------------------------------------------------------------


def _load_encoder(encoder):
    if encoder is None or isinstance(encoder, (str, os.PathLike)):
        from tspo_edge.encoders import load_encoder

        return load_encoder(None if encoder is None else str(encoder)), (None if encoder is None else str(encoder))
    return encoder, None


def _prepare(store: Store, encoder, agent):
    encoder, spec = _load_encoder(encoder)
    if store.readonly:
        store.check_encoder(encoder.id)
    else:
        store.bind_encoder(encoder.id)  # raises IndexMismatchError if it holds another encoder's videos
    agent, source = resolve_agent(agent, encoder, encoder_spec=spec)
    agent_id = agent.id  # hashes the weights: compute once per run
    return encoder, agent, agent_id, source


def index_paths(paths, *, db, encoder, agent=None, fps: float = 1.0, max_frames: int | None = None,
                decoder: str = "pyav", force: bool = False, progress: Progress | None = None,
                chunk: int = 32, threaded: bool | None = None) -> IndexSummary:
    """Index files and folders (recursively, by video extension) into the SQLite file `db`.

    `encoder`: an Encoder or a spec ("lite", hub id, folder). `agent`: a TemporalAgent, a
    checkpoint path, or None for the default (see `resolve_agent`). Raises IndexMismatchError
    when `db` was built with another encoder; per-file failures are recorded and reported.
    """
    if fps <= 0:
        raise TspoError(f"--fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise TspoError(f"--max-frames must be at least 1, got {max_frames}")
    from tspo_edge.video import available_decoders

    if decoder not in available_decoders():
        raise TspoError(f"decoder {decoder!r} is not available here (available: {', '.join(available_decoders())})")
    t0 = time.perf_counter()
    files, missing = find_videos(paths)
    o = _Options(fps=float(fps), max_frames=max_frames, decoder=decoder, force=force, chunk=chunk,
                 threaded=threaded)
    with Store(db) as store:
        encoder, agent, agent_id, source = _prepare(store, encoder, agent)
        store.set_meta("agent_id", agent_id)
        store.set_meta("agent_source", source)
        summary = IndexSummary(str(db), encoder.id, agent_id, source, missing=[str(m) for m in missing])
        if progress is not None:
            progress(IndexEvent("start", total_files=len(files), encoder_id=encoder.id, agent_id=agent_id,
                                agent=source))
        for f in files:
            r = index_file(store, f, encoder, agent, agent_id, o, progress)
            summary.files.append(r)
            summary.seconds = time.perf_counter() - t0
            if progress is not None:
                progress(IndexEvent("done", r.path, result=r))
    summary.seconds = time.perf_counter() - t0
    return summary


def ensure_indexed(video_path, *, store: Store, encoder, agent=None, fps: float = 1.0,
                   max_frames: int | None = None, decoder: str = "pyav", force: bool = False,
                   progress: Progress | None = None) -> VideoRow:
    """Index one video if it is not (or no longer) up to date, and return its row.

    Ask and train call this for a video they are given. A video that cannot be indexed is
    recorded as failed and its error raised (a TspoError naming the file and the cause).
    """
    encoder, agent, agent_id, _ = _prepare(store, encoder, agent)
    if not Path(video_path).is_file():
        raise TspoError(f"{video_path}: no such file")
    o = _Options(fps=float(fps), max_frames=max_frames, decoder=decoder, force=force)
    r = index_file(store, video_path, encoder, agent, agent_id, o, progress)
    if r.status == "failed":
        raise TspoError(r.error if r.error and r.path in r.error else f"{r.path}: {r.error}")
    return store.get_video(r.video_id)
