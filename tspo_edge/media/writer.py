"""Writing a video from uint8 RGB frames (PyAV): the test clips, the needle benchmark, the toy data."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tspo_edge.errors import TspoError


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], *, fps: float,
                codec: str = "libx264", times: Sequence[float] | None = None, rotation: int = 0,
                options: dict[str, str] | None = None,
                container_options: dict[str, str] | None = None) -> Path:
    """Encode uint8 RGB frames (H×W×3, even H and W) to a video file.

    `times` (seconds, increasing) gives each frame its own timestamp (variable frame rate);
    `rotation` stores a display matrix (degrees counter-clockwise, as readers apply it).
    `options` go to the encoder (e.g. {"preset": "veryfast", "g": "30"}), `container_options`
    to the muxer (e.g. {"movflags": "faststart"}).
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    tb = Fraction(1, 90000) if times is not None else None
    count = 0
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = None
        for img in frames:
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"{path}: frames must be uint8 H×W×3, got {img.dtype} {img.shape}")
            if stream is None:
                h, w = img.shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"{path}: frame size {w}x{h} must be even for yuv420p")
                stream = container.add_stream(codec, rate=rate, options=options or {})
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                if tb is not None:
                    stream.codec_context.time_base = tb
                if rotation:
                    if not hasattr(stream, "set_display_rotation"):  # PyAV 17.0 reads it only
                        raise TspoError(f"{path}: writing a display rotation needs PyAV >= 17.1 "
                                        f"(this is PyAV {av.__version__})")
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if times is not None:
                if count >= len(times):
                    raise ValueError(f"{path}: more frames than times")
                frame.pts, frame.time_base = int(round(times[count] / tb)), tb
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return path
