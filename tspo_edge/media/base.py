"""What every decoder shares: the video's description, frame chunks, the decoder interface,
output geometry and the sampling plan (target times k / fps, or `max_frames` spread).

Frames come out as uint8 RGB, upright (display-matrix rotation applied), resized while decoding
so that their short side is ``size`` (aspect kept, even dimensions). Times are seconds from the
start of the video stream, taken from frame timestamps (pts), so variable frame rate works.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tspo_edge.errors import VideoError

EPS = 1e-6                 # seconds: tolerance when comparing a frame time with a target time


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    duration: float | None      # seconds, of the video stream (estimated when not stored)
    fps: float | None           # native (average) frame rate
    width: int                  # display size: sample aspect ratio and rotation applied
    height: int
    rotation: int               # degrees counter-clockwise applied to decoded frames
    frame_count: int | None
    codec: str
    container: str | None = None  # the demuxer's name (PyAV's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2")
    creation_time: float | None = None  # when recorded (epoch seconds), from the container's metadata


@dataclass
class FrameChunk:
    times: np.ndarray           # float64[N], seconds
    frames: np.ndarray          # uint8[N,H,W,3], RGB

    def __len__(self) -> int:
        return len(self.times)


# File extensions taken for video when folders are searched (a file named directly is tried whatever its name).
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts",
    ".mts", ".m2ts", ".3gp", ".ogv", ".vob", ".y4m",
})


class Decoder(Protocol):
    """One decoding backend (pyav.py, decord.py, nvdec.py), registered by name in registry.py.

    Paths are `Path`s; `times` are finite, non-negative and not empty; sampling values
    are checked by the caller (tspo_edge.media.video)."""

    name: str               # as `--decoder` takes it
    title: str              # as a message names it
    fallback: str | None    # the decoder used instead where this one cannot run (cannot_run)

    def missing(self) -> str | None:
        """Why it cannot be chosen at all (its package is not installed, with the install line), or None."""

    def cannot_run(self) -> str | None:
        """Why it cannot decode on this machine although installed (no GPU, say), or None."""

    def status(self) -> str:
        """'ok' (with the detail), or why not: a line of `tspo-edge doctor`."""

    def probe(self, path: Path) -> VideoInfo: ...

    def iter_frames(self, path: Path, *, fps: float, max_frames: int | None, size: int | None,
                    chunk: int) -> Iterator[FrameChunk]: ...

    def read_frames_at(self, path: Path, times: np.ndarray, size: int | None) -> np.ndarray: ...


# ---------------------------------------------------------------- geometry

def even(x: float) -> int:
    return max(2, 2 * int(round(x / 2)))


def output_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """Display (width, height) after resizing so the short side is `size` (None: unchanged)."""
    if size is None:
        return width, height
    if width <= height:
        return even(size), even(size * height / width)
    return even(size * width / height), even(size)


def rotate_frames(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate H×W×C frames (or N×H×W×C) counter-clockwise by `rotation` degrees (multiple of 90)."""
    k = (int(round(rotation / 90.0))) % 4
    if k == 0:
        return frames
    axes = (0, 1) if frames.ndim == 3 else (1, 2)
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=axes))


# ---------------------------------------------------------------- sampling plan

def sample_times(end: float, fps: float, max_frames: int | None) -> np.ndarray:
    """The target times of a video that ends at `end` seconds: k / fps, or `max_frames` spread."""
    spread = targets(end, fps, max_frames)
    return spread if spread is not None else np.arange(math.ceil(end * fps - EPS) + 1, dtype=np.float64) / fps


def targets(duration: float | None, fps: float, max_frames: int | None) -> np.ndarray | None:
    """Either a finite array of target times (spread by max_frames) or None (k / fps, open-ended)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if max_frames is not None and duration:
        n_at_fps = math.ceil(duration * fps - EPS)
        if n_at_fps > max_frames:
            return np.arange(max_frames, dtype=np.float64) * (duration / max_frames)
    return None


def check_path(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
