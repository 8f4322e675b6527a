"""NVIDIA GPU decoding (NVDEC): `--decoder nvdec`.

Two backends, tried in this order: NVIDIA's PyNvVideoCodec (`pip install pynvvideocodec`: its
wheel carries the FFmpeg demuxer it needs; x86-64 and Jetson) and torchcodec's CUDA decoder (a
CUDA build of torchcodec beside the system's FFmpeg). `TSPO_EDGE_NVDEC=pynvvideocodec|torchcodec`
picks one.

Sampling follows PyAV's exactly (`NvdecDecoder` plans it and calls `decode_sampled`):
target times k / fps (or `max_frames` spread over the duration), each served by the first frame
at or after it, each frame once. Frame times come from the container's packet timestamps, read
without decoding (PyAV demuxing); the frames at those indices are decoded on the GPU, resized
there (bilinear, antialiased) so the short side is `size`, and handed over as uint8 RGB like
PyAV's: equal to PyAV's within decoder and resampling rounding (tests/test_index_parallel.py
compares them where a GPU is lent).

`nvdec_unavailable()` says in one line why NVDEC cannot run here (None when it can); the command
line then decodes with PyAV and prints that line. A file NVDEC refuses (`NvdecRefused`: a
rotation, a frame count it disagrees on, a stream it cannot open) is decoded by PyAV with a
warning naming the file and the reason.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from tspo_edge.errors import NvdecRefused, first_line
from tspo_edge.media import pyav
from tspo_edge.media.base import EPS, FrameChunk, VideoInfo, output_size, sample_times

# backend name -> the module it imports (tried in this order)
BACKENDS = {"pynvvideocodec": "PyNvVideoCodec", "torchcodec": "torchcodec.decoders"}
CHOICE_ENV = "TSPO_EDGE_NVDEC"


def installed_backends() -> list[str]:
    """NVDEC backends whose package is installed (whether or not a GPU is here)."""
    return [name for name, module in BACKENDS.items()
            if importlib.util.find_spec(module.split(".")[0]) is not None]


@functools.lru_cache(maxsize=None)
def _backend_unavailable(name: str) -> str | None:
    """Why backend `name` cannot decode here, or None."""
    if importlib.util.find_spec(BACKENDS[name].split(".")[0]) is None:
        return f"{name} is not installed"
    try:
        import torch  # optional: the [torch] extra
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:  # a CPU-only build, a missing driver library (libnvcuvid, libnvidia-encode) or FFmpeg
        importlib.import_module(BACKENDS[name])
    except Exception as e:
        return f"{name} cannot load ({first_line(e)})"
    return None


def choose_backend() -> tuple[str | None, str | None]:
    """(the backend NVDEC decodes with, None) or (None, why none can run here)."""
    wanted = os.environ.get(CHOICE_ENV, "").strip().lower()
    if wanted and wanted not in BACKENDS:
        return None, f"{CHOICE_ENV}={wanted!r}: choose {' or '.join(BACKENDS)}"
    names = [wanted] if wanted else installed_backends()
    if not names:
        return None, "no NVDEC backend is installed (pip install pynvvideocodec, or a CUDA build of torchcodec)"
    reasons = []
    for name in names:
        why = _backend_unavailable(name)
        if why is None:
            return name, None
        reasons.append(why)
    return None, "; ".join(dict.fromkeys(reasons))


def nvdec_unavailable() -> str | None:
    """Why `--decoder nvdec` cannot run on this machine, or None."""
    return choose_backend()[1]


def _packet_times(path: Path) -> np.ndarray:
    """Presentation times (s from the stream start) of every frame, sorted, from demuxing alone."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        tb = float(s.time_base)
        pts = [p.pts for p in c.demux(s) if p.size and p.pts is not None]
    if not pts:
        raise NvdecRefused(f"{path}: no timestamped video packets (NVDEC needs them)")
    return (np.sort(np.asarray(pts, np.int64)) - start) * tb


def sample_indices(frame_times: np.ndarray, targets: np.ndarray, max_frames: int | None,
                   eps: float) -> np.ndarray:
    """Indices of the frames that serve `targets`: the first frame at or after each, each once."""
    idx = np.searchsorted(frame_times, targets - eps, side="left")
    idx = np.unique(idx[idx < len(frame_times)])
    return idx if max_frames is None else idx[:max_frames]


def _open_pynvvideocodec(path: Path, info, n_frames: int, device: str) -> Callable:
    """frames_at(indices) -> uint8 N x 3 x H x W on the GPU, by PyNvVideoCodec's SimpleDecoder."""
    import PyNvVideoCodec as nvc  # optional: an NVDEC backend (choose_backend found it loads)
    import torch  # optional: the [torch] extra (choose_backend found it)

    # a container without a frame count in its header (Matroska, WebM) needs the decoder's own scan
    dec = nvc.SimpleDecoder(str(path), gpu_id=torch.device(device).index or 0, use_device_memory=True,
                            need_scanned_stream_metadata=not info.frame_count,
                            output_color_type=nvc.OutputColorType.RGB)
    if len(dec) != n_frames:  # its frame numbers must be the demuxer's, or the times would be wrong
        raise NvdecRefused(f"{path}: NVDEC counts {len(dec)} frames where demuxing finds {n_frames}")

    def frames_at(indices: list[int]):
        frames = dec.get_batch_frames_by_index(indices)  # H x W x 3 each, in GPU memory
        return torch.stack([torch.from_dlpack(f) for f in frames]).permute(0, 3, 1, 2)

    return frames_at


def _open_torchcodec(path: Path, info, n_frames: int, device: str) -> Callable:
    """frames_at(indices) -> uint8 N x 3 x H x W on the GPU, by torchcodec's CUDA decoder."""
    from torchcodec.decoders import VideoDecoder  # optional: an NVDEC backend (choose_backend found it loads)

    dec = VideoDecoder(str(path), device=device, seek_mode="exact")
    return lambda indices: dec.get_frames_at(indices=indices).data


OPENERS = {"pynvvideocodec": _open_pynvvideocodec, "torchcodec": _open_torchcodec}


def decode_sampled(path, info, plan, *, max_frames: int | None, out_wh: tuple[int, int], chunk: int,
                   eps: float, device: str = "cuda") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(times, uint8 N×H×W×3 frames) chunks of the frames `plan(end_seconds) -> target times`
    asks for, decoded by NVDEC (rotation-free videos; a rotated one is refused). `NvdecDecoder`
    plans and probes (`info`) as PyAV does, so both decoders sample alike; the file is read and planned now."""
    import torch  # optional: NVDEC needs torch and a backend
    import torch.nn.functional as F  # optional: as torch above

    path = Path(path)
    backend, why = choose_backend()
    if backend is None:
        raise NvdecRefused(f"{path}: NVDEC cannot run here: {why}")
    if info.rotation % 360:
        raise NvdecRefused(f"{path}: rotated video ({info.rotation}°): NVDEC leaves rotation to PyAV")
    times = _packet_times(path)
    end = info.duration if info.duration else float(times[-1])
    idx = sample_indices(times, plan(end), max_frames, eps)
    ow, oh = out_wh
    try:
        frames_at = OPENERS[backend](path, info, len(times), device)
    except NvdecRefused:
        raise
    except Exception as e:
        raise NvdecRefused(f"{path}: NVDEC ({backend}) cannot open it ({first_line(e, 200)})") from e

    def chunks():
        for a in range(0, len(idx), chunk):
            sel = idx[a:a + chunk]
            batch = frames_at(sel.tolist())  # N x 3 x H x W uint8 on the GPU
            if batch.shape[-2:] != (oh, ow):
                batch = F.interpolate(batch.float(), size=(oh, ow), mode="bilinear", antialias=True,
                                      align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
            yield times[sel].astype(np.float64), batch.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    return chunks()


class NvdecDecoder:
    """Samples on the GPU; probing and a few frames at given times are PyAV's (no GPU decoder to
    start for them), and so is a file NVDEC refuses (with a warning)."""

    name, title, fallback = "nvdec", "NVDEC", "pyav"

    def missing(self) -> str | None:
        if not installed_backends():
            return "decoder 'nvdec' needs PyNvVideoCodec or torchcodec: pip install pynvvideocodec"
        return None

    def cannot_run(self) -> str | None:
        return nvdec_unavailable()

    def status(self) -> str:
        backend, why = choose_backend()
        return f"ok ({backend})" if why is None else why

    def probe(self, path: Path) -> VideoInfo:
        return pyav.DECODER.probe(path)  # probing needs no GPU

    def iter_frames(self, path: Path, *, fps: float, max_frames: int | None, size: int | None,
                    chunk: int) -> Iterator[FrameChunk]:
        info = pyav.DECODER.probe(path)
        # targets are listed for NVDEC: above the video's own rate (4x its average, for variable
        # rates) more targets would only list times between the same frames
        rate = min(fps, 4 * info.fps) if info.fps and math.isfinite(info.fps) and info.fps > 0 else fps
        try:
            chunks = decode_sampled(path, info, lambda end: sample_times(end, rate, max_frames),
                                    max_frames=max_frames, out_wh=output_size(info.width, info.height, size),
                                    chunk=chunk, eps=EPS)
            return (FrameChunk(t, f) for t, f in chunks)
        except NvdecRefused as e:  # PyAV decodes it (the frames agree within decoder rounding)
            warnings.warn(f"{e}; decoded with PyAV", stacklevel=3)
        return pyav.DECODER.iter_frames(path, fps=fps, max_frames=max_frames, size=size, chunk=chunk, info=info)

    def read_frames_at(self, path: Path, times, size: int | None):
        return pyav.DECODER.read_frames_at(path, times, size)


DECODER = NvdecDecoder()
