"""NVIDIA GPU decoding (NVDEC) through torchcodec's CUDA decoder: `--decoder nvdec`.

Sampling follows `video.iter_frames` exactly: target times k / fps (or `max_frames` spread over the
duration), each served by the first frame at or after it, each frame once. Frame times come
from the container's packet timestamps, read without decoding (PyAV demuxing); the frames at
those indices are decoded on the GPU, resized there (bilinear, antialiased) so the short side is
`size`, and handed over as uint8 RGB like PyAV's: equal to PyAV's within decoder and resampling
rounding (tests/test_index_parallel.py compares them where a GPU is lent).

`nvdec_unavailable()` says in one line why NVDEC cannot run here (None when it can); the command
line then decodes with PyAV and prints that line.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import VideoError


def nvdec_unavailable() -> str | None:
    """Why `--decoder nvdec` cannot run on this machine, or None."""
    if importlib.util.find_spec("torchcodec") is None:
        return "torchcodec is not installed (pip install torchcodec, a CUDA build)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as e:  # a CPU-only build, or FFmpeg libraries it cannot find
        return f"torchcodec cannot load ({' '.join(str(e).split())[:160]})"
    return None


def _packet_times(path: Path) -> np.ndarray:
    """Presentation times (s from the stream start) of every frame, sorted, from demuxing alone."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        tb = float(s.time_base)
        pts = [p.pts for p in c.demux(s) if p.size and p.pts is not None]
    if not pts:
        raise VideoError(f"{path}: no timestamped video packets (NVDEC needs them; decode it with PyAV)")
    return (np.sort(np.asarray(pts, np.int64)) - start) * tb


def sample_indices(frame_times: np.ndarray, duration: float | None, fps: float,
                   max_frames: int | None) -> np.ndarray:
    """Indices of the frames `video.iter_frames` samples: the first frame at or after each target."""
    from .video import EPS, _targets

    end = duration if duration else float(frame_times[-1])
    spread = _targets(end, fps, max_frames)
    if spread is None:
        spread = np.arange(math.ceil(end * fps - EPS) + 1, dtype=np.float64) / fps
    idx = np.searchsorted(frame_times, spread - EPS, side="left")
    idx = np.unique(idx[idx < len(frame_times)])
    return idx if max_frames is None else idx[:max_frames]


def iter_frames_nvdec(path, *, fps: float, max_frames: int | None, size: int | None, chunk: int,
                      device: str = "cuda") -> Iterator:
    """`video.iter_frames` decoded by NVDEC (rotation-free videos; a rotated one is refused)."""
    import torch
    import torch.nn.functional as F
    from torchcodec.decoders import VideoDecoder

    from .video import FrameChunk, output_size, probe

    path = Path(path)
    info = probe(path)
    if info.rotation % 360:
        raise VideoError(f"{path}: rotated video ({info.rotation}°): decode it with PyAV")
    times = _packet_times(path)
    idx = sample_indices(times, info.duration, fps, max_frames)
    ow, oh = output_size(info.width, info.height, size)
    try:
        dec = VideoDecoder(str(path), device=device, seek_mode="exact")
    except Exception as e:
        raise VideoError(f"{path}: NVDEC cannot open it ({' '.join(str(e).split())[:200]})") from e

    def chunks():
        for a in range(0, len(idx), chunk):
            sel = idx[a:a + chunk]
            batch = dec.get_frames_at(indices=sel.tolist()).data  # N x 3 x H x W uint8 on the GPU
            if batch.shape[-2:] != (oh, ow):
                batch = F.interpolate(batch.float(), size=(oh, ow), mode="bilinear", antialias=True,
                                      align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
            yield FrameChunk(times[sel].astype(np.float64), batch.permute(0, 2, 3, 1).contiguous().cpu().numpy())

    return chunks()
