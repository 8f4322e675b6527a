"""One video's sampled frames, decoded as a job another process can run.

    decode_video(path, sampling fields, size)  ->  (VideoInfo, chunks of FrameChunk)
    decode_worker(jobs, results, worker)        the loop a worker process runs

Functions over paths and plain values: this module imports neither torch nor the store, so a
decoding process (a `multiprocessing` spawn child, a Ray task) starts in well under a second and
holds no model. The consumer (index/parallel.py, index/ray_engine.py) encodes the frames and
alone writes the index.

Messages a worker puts on `results`, in order for each job:
    ("start",  job, worker)
    ("info",   job, duration, fps, width, height, creation_time)
    ("chunk",  job, times float64[N], frames uint8[N,H,W,3])   (zero or more)
    ("warning", job, text)          (zero or more: raised again by the consumer)
    ("end",    job)                 or    ("failed", job, one-line error naming the file)
and ("exit", None, worker) when it stops.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

from tspo_edge.media import video
from tspo_edge.errors import TspoError


@dataclass(frozen=True)
class DecodeJob:
    """What a worker needs to decode one video (plain values: pickled to another process)."""
    job: int
    path: str
    fps: float
    max_frames: int | None
    size: int | None
    chunk: int
    decoder: str = "pyav"


def error_text(e: BaseException) -> str:
    """One line: a TspoError's own message (it names the file), else the exception's type and text."""
    msg = str(e) if isinstance(e, TspoError) else f"{type(e).__name__}: {e}"
    return " ".join(msg.split()) or type(e).__name__


def decode_video(path, *, fps: float, max_frames: int | None, size: int | None, chunk: int = 32,
                 decoder: str = "pyav") -> tuple[video.VideoInfo, Iterator[video.FrameChunk]]:
    """The video's description and its sampled frames in chunks (as `video.iter_frames` gives them;
    the same frames the plain index path encodes). A bad file raises here or while iterating."""
    info = video.probe(path, decoder=decoder)
    return info, video.iter_frames(path, fps=fps, max_frames=max_frames, size=size, chunk=chunk,
                                   decoder=decoder)


def run_job(job: DecodeJob, put, worker: int = 0) -> None:
    """Decode one job, sending its messages through `put` (a file's failure is a message, not raised;
    so is a warning, which the consumer raises again where it reports)."""
    put(("start", job.job, worker))
    last = ("end", job.job)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            info, chunks = decode_video(job.path, fps=job.fps, max_frames=job.max_frames, size=job.size,
                                        chunk=job.chunk, decoder=job.decoder)
            put(("info", job.job, info.duration, info.fps, info.width, info.height, info.creation_time))
            for c in chunks:
                if len(c.times):
                    put(("chunk", job.job, c.times, c.frames))
        except Exception as e:  # the file's fault: reported, and the worker takes the next job
            err = error_text(e)
            last = ("failed", job.job, err if job.path in err else f"{job.path}: {err}")
    for w in caught:
        put(("warning", job.job, str(w.message)))
    put(last)


def decode_worker(jobs, results, worker: int = 0) -> None:
    """A worker process's loop: take DecodeJobs from `jobs` until None, put messages on `results`
    (a bounded queue: a worker waits while the consumer is behind, so memory stays bounded)."""
    try:
        while True:
            job = jobs.get()
            if job is None:
                break
            run_job(job, results.put, worker)
    except KeyboardInterrupt:  # the consumer stops the run; nothing here is written anywhere
        pass
    finally:
        try:
            results.put(("exit", None, worker), timeout=1.0)
        except Exception:
            pass
