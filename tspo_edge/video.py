"""Video decoding: probe, streamed sampling at a target fps, frames at given times, writing.

PyAV is the default decoder; decord (the ``decord`` or ``decord2`` wheel) is used when asked
for and installed. Frames come out as uint8 RGB, upright (display-matrix rotation applied),
resized while decoding so that their short side is ``size`` (aspect kept, even dimensions).
Times are seconds from the start of the video stream, taken from frame timestamps (pts), so
variable frame rate works.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tspo_edge import nvdec
from tspo_edge.errors import NvdecRefused, TspoError, VideoError

__all__ = [
    "VideoInfo", "FrameChunk", "VideoError", "probe", "iter_frames", "read_frames_at",
    "write_video", "available_decoders", "output_size", "rotate_frames",
]

EPS = 1e-6                 # seconds: tolerance when comparing a frame time with a target time
_MAX_BAD_PACKETS = 16      # corrupt packets skipped before a video is declared undecodable
_NO_INDEX_SEEK_GAP = 2.0   # seconds: without a keyframe index, seek only across gaps this long
                           # (or twice the longest keyframe interval seen, if longer)


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


def available_decoders() -> list[str]:
    names = ["pyav"]
    if importlib.util.find_spec("decord") is not None:
        names.append("decord")
    if nvdec.installed_backends():  # usable only with CUDA: nvdec.nvdec_unavailable
        names.append("nvdec")
    return names


def _check_decoder(decoder: str) -> None:
    if decoder == "pyav":
        return
    if decoder == "decord":
        if importlib.util.find_spec("decord") is None:
            raise TspoError("decoder 'decord' is not installed: pip install decord2 (or decord)")
        return
    if decoder == "nvdec":
        if not nvdec.installed_backends():
            raise TspoError("decoder 'nvdec' needs PyNvVideoCodec or torchcodec: pip install pynvvideocodec")
        return
    raise TspoError(f"unknown decoder {decoder!r}: choose one of {', '.join(available_decoders())}")


# ---------------------------------------------------------------- geometry

def _even(x: float) -> int:
    return max(2, 2 * int(round(x / 2)))


def output_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """Display (width, height) after resizing so the short side is `size` (None: unchanged)."""
    if size is None:
        return width, height
    if width <= height:
        return _even(size), _even(size * height / width)
    return _even(size * width / height), _even(size)


def rotate_frames(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate H×W×C frames (or N×H×W×C) counter-clockwise by `rotation` degrees (multiple of 90)."""
    k = (int(round(rotation / 90.0))) % 4
    if k == 0:
        return frames
    axes = (0, 1) if frames.ndim == 3 else (1, 2)
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=axes))


def _rotation_of(frame) -> int:
    """Display rotation of a decoded frame, degrees counter-clockwise in (-180, 180]."""
    r = int(round(getattr(frame, "rotation", 0) or 0))
    return (r + 179) % 360 - 179


def _quarter_turn(rotation: int) -> bool:
    return (int(round(rotation / 90.0))) % 2 == 1


# ---------------------------------------------------------------- opening

def _check_path(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")


@functools.cache
def _pyav_open_options() -> dict[str, str]:
    """Keywords for av.open that make file tags in a foreign encoding harmless.

    PyAV 18 decodes tags as strict UTF-8 unless told `metadata_errors="ignore"` (a video with
    Latin-1 tags would not open); PyAV 19 always decodes them with surrogateescape and refuses
    the keyword. Parse the major version rather than try-and-catch, so that a TypeError from
    anything else is never mistaken for this.
    """
    major = int(av.__version__.split(".", 1)[0])
    return {"metadata_errors": "ignore"} if major < 19 else {}


def _open_pyav(path: Path):
    """Open with PyAV; return (container, video stream) or raise VideoError."""
    _check_path(path)
    try:
        container = av.open(str(path), **_pyav_open_options())
    except PermissionError as e:
        raise VideoError(f"{path}: permission denied") from e
    except av.error.FFmpegError as e:
        cause = e.strerror or str(e)
        raise VideoError(f"{path}: not a readable video ({cause}; truncated, corrupt or not a video file)") from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise VideoError(f"{path}: no video stream (contains {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


class _Clock:
    """Converts a stream's timestamps to seconds from the start of the stream."""

    def __init__(self, stream):
        self.tb = float(stream.time_base) if stream.time_base else None
        self.start = stream.start_time if stream.start_time is not None else 0

    def seconds(self, pts: int | None) -> float | None:
        if pts is None or self.tb is None:
            return None
        return (pts - self.start) * self.tb

    def pts(self, seconds: float) -> int:
        return self.start + int(math.floor(seconds / self.tb))


def _native_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return None


def _display_dims(stream, frame) -> tuple[int, int]:
    w, h = frame.width, frame.height
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if sar and sar != 1:
        w = _even(w * float(sar))
    return w, h


def _scan_duration(container, stream, clock: _Clock, fps: float | None) -> tuple[float | None, int]:
    """Demux (no decoding) to the end: duration from the last packet, and the packet count."""
    last, count = None, 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        count += 1
        t = clock.seconds(packet.pts)
        if t is not None:
            end = t + (packet.duration or 0) * clock.tb
            last = end if last is None else max(last, end)
    if last is None and count and fps:
        last = count / fps
    return last, count


def _probe_pyav(path: Path) -> VideoInfo:
    container, stream = _open_pyav(path)
    with container:
        clock = _Clock(stream)
        fps = _native_fps(stream)
        try:
            first = next(_decode_all(container, stream, path), None)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: cannot decode ({e.strerror or e})") from e
        if first is None:
            raise VideoError(f"{path}: no decodable video frames (truncated or corrupt)")
        rotation = _rotation_of(first)
        w, h = _display_dims(stream, first)
        if _quarter_turn(rotation):
            w, h = h, w
        frames = stream.frames or None
        duration = None
        if stream.duration:
            duration = stream.duration * clock.tb
        elif container.duration:
            duration = container.duration / av.time_base
        elif frames and fps:
            duration = frames / fps
        else:  # raw streams store no duration: read the packets (no decoding) once
            scan, scan_stream = _open_pyav(path)
            with scan:
                duration, count = _scan_duration(scan, scan_stream, clock, fps)
            frames = frames or count or None
        return VideoInfo(path=path, duration=duration, fps=fps, width=w, height=h,
                         rotation=rotation, frame_count=frames, codec=stream.codec_context.name,
                         container=container.format.name, creation_time=_creation_time(container, stream))


def _creation_time(container, stream) -> float | None:
    """The container's (else the video stream's) `creation_time` tag as epoch seconds: ISO 8601,
    UTC when it names no zone (as MP4/MOV store it). None when absent, unreadable or before 1971
    (a camera that never set its clock writes 1904 or 1970)."""
    for tags in (container.metadata, stream.metadata):
        text = (tags or {}).get("creation_time")
        try:
            when = datetime.fromisoformat(str(text).strip())
        except (TypeError, ValueError):
            continue
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        if when.year >= 1971:
            return when.timestamp()
    return None


def probe(path: str | os.PathLike, decoder: str = "pyav") -> VideoInfo:
    """Describe a video: duration, native fps, display size, rotation, frame count, codec."""
    _check_decoder(decoder)
    path = Path(path)
    if decoder == "nvdec":  # probing needs no GPU
        decoder = "pyav"
    if decoder == "decord":
        info = _decord_plan(path)
        return _probe_decord(path, info) if info is not None else _probe_pyav(path)
    return _probe_pyav(path)


# ---------------------------------------------------------------- PyAV decoding

def _decode_all(container, stream, path: Path):
    """Decode every frame in order, skipping up to _MAX_BAD_PACKETS corrupt packets."""
    bad = 0
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError as e:
            bad += 1
            if bad > _MAX_BAD_PACKETS:
                raise VideoError(f"{path}: too many corrupt packets ({e.strerror or e})") from e


class _Converter:
    """av.VideoFrame -> upright uint8 RGB array at a fixed output size."""

    def __init__(self, stream, first_frame, size: int | None):
        self.rotation = _rotation_of(first_frame)
        w, h = _display_dims(stream, first_frame)
        if _quarter_turn(self.rotation):
            w, h = h, w
        self.out_w, self.out_h = output_size(w, h, size)
        # reformat works in stored orientation; rotation is applied after scaling
        self.w, self.h = (self.out_h, self.out_w) if _quarter_turn(self.rotation) else (self.out_w, self.out_h)

    def __call__(self, frame) -> np.ndarray:
        rgb = frame.reformat(width=self.w, height=self.h, format="rgb24").to_ndarray()
        return rotate_frames(rgb, self.rotation)


def sample_times(end: float, fps: float, max_frames: int | None) -> np.ndarray:
    """The target times of a video that ends at `end` seconds: k / fps, or `max_frames` spread."""
    spread = _targets(end, fps, max_frames)
    return spread if spread is not None else np.arange(math.ceil(end * fps - EPS) + 1, dtype=np.float64) / fps


def _targets(duration: float | None, fps: float, max_frames: int | None) -> np.ndarray | None:
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


def _truncation_check(path: Path, stream, clock: _Clock, last_packet_t: float | None) -> None:
    if not stream.duration or last_packet_t is None:
        return
    duration = stream.duration * clock.tb
    if duration - last_packet_t > max(2.0, 0.02 * duration):
        raise VideoError(f"{path}: truncated: stream data ends at {last_packet_t:.1f} s of {duration:.1f} s")


def _keyframe_times(stream, clock: _Clock) -> np.ndarray:
    try:
        ts = [clock.seconds(e.timestamp) for e in stream.index_entries if e.is_keyframe]
    except Exception:  # containers without an index (or an older PyAV)
        return np.empty(0)
    return np.asarray(sorted(t for t in ts if t is not None), np.float64)


class _Cursor:
    """Walks a video stream to the first frame at or after each requested (increasing) time.

    It seeks to the keyframe before a target only when that skips decoding, i.e. when a
    keyframe (from the demuxer's index) lies between the current position and the target;
    otherwise it decodes on, so nearby targets share one seek. Frames before the target that
    nothing references (b-frames) are dropped by the decoder unseen (skip_frame = NONREF).
    """

    def __init__(self, container, stream, path: Path):
        self.container, self.stream, self.path = container, stream, path
        self.clock = _Clock(stream)
        self.keys = _keyframe_times(stream, self.clock)  # matroska fills it at the first seek
        self.keys_reread = len(self.keys) >= 2
        self.native_fps = _native_fps(stream) or 25.0
        self.frames = None          # generator of (time, frame | None); None: at the file start
        self.pos = -math.inf        # time of the last decoded frame
        self.last, self.last_t = None, -math.inf
        self.want = 0.0
        self.gop = 0.0              # longest keyframe interval seen
        self.bad = 0
        self.decoded = 0
        self.end_t = None           # latest packet time seen
        self.at_eof = False
        self.seekable = True        # False once packets without timestamps are seen

    def _decode_from(self, seek_t: float | None):
        if seek_t is not None:
            self.container.seek(self.clock.pts(max(seek_t, 0.0)), stream=self.stream, backward=True)
            if not self.keys_reread:
                self.keys, self.keys_reread = _keyframe_times(self.stream, self.clock), True
        cc = self.stream.codec_context
        last_key = None
        for packet in self.container.demux(self.stream):
            pt = self.clock.seconds(packet.pts)
            if packet.size:
                if pt is None:
                    self.seekable = False
                else:
                    self.end_t = pt if self.end_t is None else max(self.end_t, pt)
                    if packet.is_keyframe:
                        if last_key is not None:
                            self.gop = max(self.gop, pt - last_key)
                        last_key = pt
            yield pt, None
            # a frame whose pts is before the target is never returned: let the decoder drop
            # it unseen when nothing references it
            cc.skip_frame = "NONREF" if (pt is not None and pt < self.want - EPS) else "DEFAULT"
            try:
                out = packet.decode()
            except av.error.InvalidDataError as e:
                self.bad += 1
                if self.bad > _MAX_BAD_PACKETS:
                    raise VideoError(f"{self.path}: too many corrupt packets ({e.strerror or e})") from e
                continue
            for frame in out:
                t = self.clock.seconds(frame.pts)
                if t is None:  # no timestamps (raw elementary streams): count frames
                    t = self.decoded / self.native_fps
                self.decoded += 1
                yield t, frame
        self.at_eof = True

    def _should_seek(self, t: float) -> bool:
        if not self.seekable:
            return False
        if self.frames is not None:
            pos = self.pos
        else:  # a fresh reader sits at the start of the file
            pos = min(self.keys[0], 0.0) if len(self.keys) else 0.0
        if len(self.keys) >= 2:
            k = np.searchsorted(self.keys, t + EPS, side="right") - 1
            return bool(k >= 0 and self.keys[k] > pos + EPS)
        return t - pos > max(_NO_INDEX_SEEK_GAP, 2 * self.gop)

    def find(self, t: float):
        """The first frame at or after t (possibly the one returned last); None at the end."""
        self.want = t
        if self.last is not None and self.last_t >= t - EPS:
            return self.last
        seek_t = t if self._should_seek(t) else None
        backoff = 1.0
        while True:
            check = False
            if self.frames is None or seek_t is not None:
                self.frames, self.pos, self.at_eof = self._decode_from(seek_t), -math.inf, False
                check = seek_t is not None and seek_t > 0
            landed_late = False
            for ft, frame in self.frames:
                if frame is None:
                    # the demuxer may land on a keyframe after the target: seek further back
                    landed_late = check and ft is not None and ft > t + EPS
                    check = False
                    if landed_late:
                        break
                    continue
                self.pos = ft
                self.last, self.last_t = frame, ft
                if ft >= t - EPS:
                    return frame
            if not landed_late:
                return None
            seek_t = max(0.0, seek_t - backoff)
            backoff *= 2

    def final_frame(self):
        """The last frame of the stream. Decoding to the end for a target past it may have let
        the decoder drop trailing b-frames, so the last GOP is decoded again without skipping."""
        if not self.seekable:
            return self.last
        self.want = -math.inf
        start = float(self.keys[-1]) if len(self.keys) >= 2 else 0.0
        final = None
        for ft, frame in self._decode_from(max(start, 0.0)):
            if frame is not None:
                final = frame
        self.frames, self.pos = iter(()), math.inf
        if final is not None:
            self.last, self.last_t = final, math.inf  # serves any later target past the end
        return self.last


def _iter_pyav(path: Path, info: VideoInfo, spread: np.ndarray | None, fps: float,
               max_frames: int | None, size: int | None, chunk: int) -> Iterator[FrameChunk]:
    limit = len(spread) if spread is not None else None

    def target(i: int) -> float:
        return float(spread[i]) if spread is not None else i / fps

    def after(t: float) -> int:
        """The first target later than t + EPS: one step per frame, however dense the targets
        (an fps far above the video's own rate samples every frame without walking each target)."""
        if spread is not None:
            return int(np.searchsorted(spread, t + EPS, side="right"))
        k = max(0, math.floor((t + EPS) * fps) + 1)
        while k > 0 and target(k - 1) > t + EPS:
            k -= 1
        while target(k) <= t + EPS:
            k += 1
        return k

    container, stream = _open_pyav(path)
    with container:
        cursor = _Cursor(container, stream, path)
        convert = None
        times: list[float] = []
        frames: list[np.ndarray] = []
        i = emitted = 0
        try:
            while (limit is None or i < limit) and (max_frames is None or emitted < max_frames):
                frame = cursor.find(target(i))
                if frame is None:
                    break
                t = cursor.last_t
                if convert is None:
                    convert = _Converter(stream, frame, size)
                times.append(t)
                frames.append(convert(frame))
                emitted += 1
                i = max(i + 1, after(t))  # one frame serves every target up to its time, and only once
                if len(frames) == chunk:
                    yield FrameChunk(np.asarray(times, np.float64), np.stack(frames))
                    times, frames = [], []
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed ({e.strerror or e})") from e
        if frames:
            yield FrameChunk(np.asarray(times, np.float64), np.stack(frames))
        if cursor.at_eof:
            if cursor.decoded == 0:
                raise VideoError(f"{path}: no decodable video frames (truncated or corrupt)")
            _truncation_check(path, stream, cursor.clock, cursor.end_t)


def _read_pyav(path: Path, times: np.ndarray, size: int | None) -> np.ndarray:
    container, stream = _open_pyav(path)
    with container:
        cursor = _Cursor(container, stream, path)
        result: list[np.ndarray | None] = [None] * len(times)
        convert = None
        cached = (None, None)  # (frame, rgb): targets served by the same frame convert once
        try:
            for j in np.argsort(times, kind="stable"):
                frame = cursor.find(float(times[j]))
                if frame is None:  # past the end: the last frame stands in
                    if cursor.last is None:
                        raise VideoError(f"{path}: no decodable video frames (truncated or corrupt)")
                    frame = cursor.final_frame()
                if convert is None:
                    convert = _Converter(stream, frame, size)
                if cached[0] is not frame:
                    cached = (frame, convert(frame))
                result[j] = cached[1]
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed ({e.strerror or e})") from e
    return np.stack(result)


# ---------------------------------------------------------------- decord

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
    import decord

    with _decord_errors(path, "to open it"):
        return decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=0)


def _decord_plan(path: Path, stacklevel: int = 4) -> VideoInfo | None:
    """PyAV's description of a file decord should decode, or None for videos with a display
    rotation: decord2 3.4 rotates 180° itself but returns garbled arrays for 90°, decord 0.6
    ignores the rotation; PyAV decodes those instead. Bad files get PyAV's plain cause."""
    info = _probe_pyav(path)
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
                     rotation=0, frame_count=n, codec=info.codec, container=info.container)


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
    spread = _targets(end, fps, max_frames)
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


# ---------------------------------------------------------------- public API

def iter_frames(path: str | os.PathLike, *, fps: float = 1.0, max_frames: int | None = None,
                size: int | None = 224, chunk: int = 32, decoder: str = "pyav") -> Iterator[FrameChunk]:
    """Stream frames sampled at `fps`, in chunks of at most `chunk` frames.

    Target times are k / fps; each is served by the first frame at or after it (one frame is
    never emitted twice, so times strictly increase). When the video holds more than
    `max_frames` targets, `max_frames` targets are spread uniformly over the duration instead.
    """
    _check_decoder(decoder)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    path = Path(path)
    info = None
    if decoder == "nvdec":  # NVIDIA GPU decoding (tspo_edge/nvdec.py), planned here like PyAV's
        info = _probe_pyav(path)
        # targets are listed for NVDEC: above the video's own rate (4x its average, for variable
        # rates) more targets would only list times between the same frames
        rate = min(fps, 4 * info.fps) if info.fps and math.isfinite(info.fps) and info.fps > 0 else fps
        try:
            chunks = nvdec.decode_sampled(path, info, lambda end: sample_times(end, rate, max_frames),
                                          max_frames=max_frames, out_wh=output_size(info.width, info.height, size),
                                          chunk=chunk, eps=EPS)
            return (FrameChunk(t, f) for t, f in chunks)
        except NvdecRefused as e:  # PyAV decodes it (the frames agree within decoder rounding)
            warnings.warn(f"{e}; decoded with PyAV", stacklevel=2)
    # probe and plan now, so that a bad file fails here rather than at the first next()
    if decoder == "decord" and (info := _decord_plan(path)) is not None:
        vr, starts, end = _decord_setup(path, info, size)
        return _iter_decord(path, vr, starts, _decord_indices(starts, end, fps, max_frames), chunk)
    info = info or _probe_pyav(path)  # a file NVDEC refused was probed already
    spread = _targets(info.duration, fps, max_frames)
    return _iter_pyav(path, info, spread, fps, max_frames, size, chunk)


def read_frames_at(path: str | os.PathLike, times: Sequence[float] | np.ndarray, *,
                   size: int | None = None, decoder: str = "pyav") -> np.ndarray:
    """Frames at the given times (first frame at or after each), in the order of `times`.

    Seeks to the keyframe before a target only when that skips decoding (a keyframe lies
    between the current position and the target); nearby targets share one seek. Times past
    the end give the last frame.
    """
    _check_decoder(decoder)
    path = Path(path)
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    if len(t) == 0:
        info = probe(path, decoder)
        w, h = output_size(info.width, info.height, size)
        return np.empty((0, h, w, 3), np.uint8)
    t = np.maximum(t, 0.0)
    if decoder == "nvdec":  # a few frames at given times: PyAV (no GPU decoder to start for them)
        decoder = "pyav"
    if decoder == "decord" and (info := _decord_plan(path)) is not None:
        return _read_decord(path, info, t, size)
    return _read_pyav(path, t, size)


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
