"""Video decoding, as the rest of the code meets it: probe, streamed sampling at a target fps,
frames at given times, writing. The backends live in tspo_edge/media/ (one module each, one
interface, one registry); this module checks the arguments and hands each call to the decoder
named (`decoder="pyav"`, the default; "decord"; "nvdec").

Frames come out as uint8 RGB, upright (display-matrix rotation applied), resized while decoding
so that their short side is ``size`` (aspect kept, even dimensions). Times are seconds from the
start of the video stream, taken from frame timestamps (pts), so variable frame rate works.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from tspo_edge.errors import VideoError
from tspo_edge.media import registry
from tspo_edge.media.base import (EPS, VIDEO_EXTENSIONS, FrameChunk, VideoInfo, output_size, rotate_frames,
                                  sample_times)
from tspo_edge.media.writer import write_video

__all__ = [
    "VideoInfo", "FrameChunk", "VideoError", "VIDEO_EXTENSIONS", "EPS", "probe", "iter_frames",
    "read_frames_at", "write_video", "available_decoders", "resolve_decoder", "choose_decoder", "decoder_title",
    "output_size", "rotate_frames", "sample_times",
]

available_decoders = registry.available   # names installed here
resolve_decoder = registry.resolve        # name -> (name to decode with here, why not the one asked)
choose_decoder = registry.choose          # name -> (name to decode with here, the line saying why not)
decoder_title = registry.title            # "pyav" -> "PyAV"


def probe(path: str | os.PathLike, decoder: str = "pyav") -> VideoInfo:
    """Describe a video: duration, native fps, display size, rotation, frame count, codec."""
    return registry.get(decoder).probe(Path(path))


def iter_frames(path: str | os.PathLike, *, fps: float = 1.0, max_frames: int | None = None,
                size: int | None = 224, chunk: int = 32, decoder: str = "pyav") -> Iterator[FrameChunk]:
    """Stream frames sampled at `fps`, in chunks of at most `chunk` frames.

    Target times are k / fps; each is served by the first frame at or after it (one frame is
    never emitted twice, so times strictly increase). When the video holds more than
    `max_frames` targets, `max_frames` targets are spread uniformly over the duration instead.
    The file is probed and planned now, so that a bad file fails here rather than at the first next().
    """
    backend = registry.get(decoder)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return backend.iter_frames(Path(path), fps=fps, max_frames=max_frames, size=size, chunk=chunk)


def read_frames_at(path: str | os.PathLike, times: Sequence[float] | np.ndarray, *,
                   size: int | None = None, decoder: str = "pyav") -> np.ndarray:
    """Frames at the given times (first frame at or after each), in the order of `times`.

    Seeks to the keyframe before a target only when that skips decoding (a keyframe lies
    between the current position and the target); nearby targets share one seek. Times past
    the end give the last frame.
    """
    backend = registry.get(decoder)
    path = Path(path)
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    if len(t) == 0:
        info = backend.probe(path)
        w, h = output_size(info.width, info.height, size)
        return np.empty((0, h, w, 3), np.uint8)
    return backend.read_frames_at(path, np.maximum(t, 0.0), size)
