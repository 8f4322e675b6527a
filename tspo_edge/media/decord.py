"""The decord decoder (`--decoder decord`: the ``decord`` or ``decord2`` wheel, when installed).

decord resizes while decoding and reads frames by index from its own frame table; a video with
a display rotation is decoded by PyAV instead (with a warning), as decord gets rotation wrong.

Where torch is installed it is imported before decord: the decord2 wheel loads NVIDIA's NVBLAS,
and when that library is loaded first it takes over the process's BLAS calls, so torch's first
CPU matrix product afterwards ends the process with a segmentation fault (`import decord, torch`
then any nn.Linear: reproduced with decord2 3.4 and torch 2.14; tests/test_video.py checks it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tspo_edge.errors import VideoError
from tspo_edge.media import pyav
from tspo_edge.media.base import EPS, FrameChunk, VideoInfo, output_size, targets


@contextlib.contextmanager
def _decord_errors(path: Path, doing: str):
    """decord raises its own DECORDError (also when its decoder thread times out under load)."""
    try:
        yield
    except VideoError:
        raise
    except Exception as e:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        raise VideoError(f"{path}: decord failed {doing} ({lines[0][:200]})") from e


def _decord_reader(path: Path, width: int = -1, height: int = -1):
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401  # optional: the [torch] extra, loaded before decord's NVBLAS (see the top)
    import decord  # optional: the decord / decord2 wheel (missing() says so first)

    with _decord_errors(path, "to open it"):
        return decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=0)


def _decord_plan(path: Path, stacklevel: int = 5) -> VideoInfo | None:
    """PyAV's description of a file decord should decode, or None for videos with a display
    rotation: decord2 3.4 rotates 180° itself but returns garbled arrays for 90°, decord 0.6
    ignores the rotation; PyAV decodes those instead. Bad files get PyAV's plain cause."""
    info = pyav.DECODER.probe(path)
    if info.rotation % 360:
        warnings.warn(f"{path}: rotated video ({info.rotation}°) decoded with PyAV, not decord",
                      stacklevel=stacklevel)
        return None
    return info


def _probe_decord(path: Path, info: VideoInfo) -> VideoInfo:
    vr = _decord_reader(path)
    with _decord_errors(path, "to probe it"):
        n = len(vr)
        end = float(vr.get_frame_timestamp([n - 1])[0, 1]) if n else None
        fps = float(vr.get_avg_fps())
    if not n:
        raise VideoError(f"{path}: no decodable video frames")
    return VideoInfo(path=path, duration=round(end, 6), fps=fps, width=info.width, height=info.height,
                     rotation=0, frame_count=n, codec=info.codec, container=info.container,
                     creation_time=info.creation_time)


def _decord_setup(path: Path, info: VideoInfo, size: int | None):
    ow, oh = output_size(info.width, info.height, size)
    vr = _decord_reader(path, ow, oh)  # decord resizes while decoding
    with _decord_errors(path, "to read its frame index"):
        n = len(vr)
        # decord keeps float32 seconds: round back to the microsecond
        starts = np.round(vr.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64), 6) if n else None
        end = float(vr.get_frame_timestamp([n - 1])[0, 1]) if n else None
    if not n:
        raise VideoError(f"{path}: no decodable video frames")
    return vr, starts, end


def _decord_batch(path: Path, vr, idx: np.ndarray) -> np.ndarray:
    with _decord_errors(path, "to decode it"):
        return vr.get_batch(idx.tolist()).asnumpy()


def _decord_indices(starts: np.ndarray, end: float, fps: float, max_frames: int | None) -> np.ndarray:
    spread = targets(end, fps, max_frames)
    last_k = math.ceil(end * fps - EPS)
    if spread is None and last_k + 1 > len(starts):
        # more targets than frames: per frame, whether some target k / fps falls on it (the first
        # frame at or after k / fps serves target k), without listing every target
        k_hi = np.floor((starts + EPS) * fps)
        prev = np.concatenate([[-1.0], k_hi[:-1]])
        idx = np.flatnonzero((k_hi > prev) & (prev + 1 <= last_k))
        return idx if max_frames is None else idx[:max_frames]
    if spread is None:
        spread = np.arange(math.ceil(end * fps - EPS) + 1, dtype=np.float64) / fps
    idx = np.searchsorted(starts, spread - EPS, side="left")
    idx = np.unique(idx[idx < len(starts)])
    return idx if max_frames is None else idx[:max_frames]


def _iter_decord(path: Path, vr, starts: np.ndarray, idx: np.ndarray, chunk: int) -> Iterator[FrameChunk]:
    for a in range(0, len(idx), chunk):
        sel = idx[a:a + chunk]
        yield FrameChunk(starts[sel].copy(), _decord_batch(path, vr, sel))


def _read_decord(path: Path, info: VideoInfo, times: np.ndarray, size: int | None) -> np.ndarray:
    vr, starts, _ = _decord_setup(path, info, size)
    idx = np.minimum(np.searchsorted(starts, times - EPS, side="left"), len(starts) - 1)
    uniq, inverse = np.unique(idx, return_inverse=True)
    return _decord_batch(path, vr, uniq)[inverse]


class DecordDecoder:
    name, title, fallback = "decord", "decord", None

    def missing(self) -> str | None:
        if importlib.util.find_spec("decord") is None:
            return "decoder 'decord' is not installed: pip install decord2 (or decord)"
        return None

    def cannot_run(self) -> str | None:
        return None

    def status(self) -> str:
        return "ok" if importlib.util.find_spec("decord") is not None else "not installed (pip install decord2)"

    def probe(self, path: Path) -> VideoInfo:
        info = _decord_plan(path)
        return _probe_decord(path, info) if info is not None else pyav.DECODER.probe(path)

    def iter_frames(self, path: Path, *, fps: float, max_frames: int | None, size: int | None,
                    chunk: int) -> Iterator[FrameChunk]:
        info = _decord_plan(path)  # planned now, so that a bad file fails here rather than at the first next()
        if info is None:
            return pyav.DECODER.iter_frames(path, fps=fps, max_frames=max_frames, size=size, chunk=chunk)
        vr, starts, end = _decord_setup(path, info, size)
        return _iter_decord(path, vr, starts, _decord_indices(starts, end, fps, max_frames), chunk)

    def read_frames_at(self, path: Path, times: np.ndarray, size: int | None) -> np.ndarray:
        info = _decord_plan(path)
        if info is None:
            return pyav.DECODER.read_frames_at(path, times, size)
        return _read_decord(path, info, times, size)


DECODER = DecordDecoder()
