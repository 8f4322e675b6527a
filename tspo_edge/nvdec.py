"""NVIDIA GPU decoding (NVDEC) through torchcodec's CUDA decoder: `--decoder nvdec`.

Sampling follows `video.iter_frames` exactly (video.py plans it and calls `decode_sampled`): target times k / fps (or `max_frames` spread over the
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


def sample_indices(frame_times: np.ndarray, targets: np.ndarray, max_frames: int | None,
                   eps: float) -> np.ndarray:
    """Indices of the frames that serve `targets`: the first frame at or after each, each once."""
    idx = np.searchsorted(frame_times, targets - eps, side="left")
    idx = np.unique(idx[idx < len(frame_times)])
    return idx if max_frames is None else idx[:max_frames]


def decode_sampled(path, info, plan, *, max_frames: int | None, out_wh: tuple[int, int], chunk: int,
                   eps: float, device: str = "cuda") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(times, uint8 N×H×W×3 frames) chunks of the frames `plan(end_seconds) -> target times`
    asks for, decoded by NVDEC (rotation-free videos; a rotated one is refused). `tspo_edge.video`
    plans and probes (`info`), so both decoders sample alike; the file is read and planned now."""
    import torch  # optional: NVDEC needs torch and torchcodec's CUDA build
    import torch.nn.functional as F
    from torchcodec.decoders import VideoDecoder

    path = Path(path)
    if info.rotation % 360:
        raise VideoError(f"{path}: rotated video ({info.rotation}°): decode it with PyAV")
    times = _packet_times(path)
    end = info.duration if info.duration else float(times[-1])
    idx = sample_indices(times, plan(end), max_frames, eps)
    ow, oh = out_wh
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
            yield times[sel].astype(np.float64), batch.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    return chunks()
