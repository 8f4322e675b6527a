"""The PyAV decoder (the default): FFmpeg through PyAV, on the CPU.

It seeks to the keyframe before a target only when that skips decoding, skips a few corrupt
packets, applies the display rotation and the sample aspect ratio, and resizes while converting.
`open_pyav` and `Clock` also serve tspo_edge/media/clip.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np

from tspo_edge.errors import VideoError
from tspo_edge.media.base import EPS, FrameChunk, VideoInfo, check_path, even, output_size, rotate_frames, targets

_MAX_BAD_PACKETS = 16      # corrupt packets skipped before a video is declared undecodable
_NO_INDEX_SEEK_GAP = 2.0   # seconds: without a keyframe index, seek only across gaps this long
                           # (or twice the longest keyframe interval seen, if longer)


def _rotation_of(frame) -> int:
    """Display rotation of a decoded frame, degrees counter-clockwise in (-180, 180]."""
    r = int(round(getattr(frame, "rotation", 0) or 0))
    return (r + 179) % 360 - 179


def _quarter_turn(rotation: int) -> bool:
    return (int(round(rotation / 90.0))) % 2 == 1


# ---------------------------------------------------------------- opening


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


def open_pyav(path: Path):
    """Open with PyAV; return (container, video stream) or raise VideoError."""
    check_path(path)
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


class Clock:
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
        w = even(w * float(sar))
    return w, h


def _scan_duration(container, stream, clock: Clock, fps: float | None) -> tuple[float | None, int]:
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
    container, stream = open_pyav(path)
    with container:
        clock = Clock(stream)
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
            scan, scan_stream = open_pyav(path)
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
        text = str((tags or {}).get("creation_time", "")).strip()
        try:  # Python 3.10's fromisoformat takes no "Z"
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            continue
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        if when.year >= 1971:
            return when.timestamp()
    return None


# ---------------------------------------------------------------- decoding


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


def _truncation_check(path: Path, stream, clock: Clock, last_packet_t: float | None) -> None:
    if not stream.duration or last_packet_t is None:
        return
    duration = stream.duration * clock.tb
    if duration - last_packet_t > max(2.0, 0.02 * duration):
        raise VideoError(f"{path}: truncated: stream data ends at {last_packet_t:.1f} s of {duration:.1f} s")


def _keyframe_times(stream, clock: Clock) -> np.ndarray:
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
        self.clock = Clock(stream)
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

    container, stream = open_pyav(path)
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
    container, stream = open_pyav(path)
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


class PyAVDecoder:
    name, title, fallback = "pyav", "PyAV", None

    def missing(self) -> str | None:
        return None  # a dependency of the package

    def cannot_run(self) -> str | None:
        return None

    def status(self) -> str:
        return "ok"

    def probe(self, path: Path) -> VideoInfo:
        return _probe_pyav(path)

    def iter_frames(self, path: Path, *, fps: float, max_frames: int | None, size: int | None, chunk: int,
                    info: VideoInfo | None = None) -> Iterator[FrameChunk]:
        """`info`: the file's probe when the caller has it (a file NVDEC refused)."""
        info = info or _probe_pyav(path)  # probe and plan now: a bad file fails here, not at the first next()
        spread = targets(info.duration, fps, max_frames)
        return _iter_pyav(path, info, spread, fps, max_frames, size, chunk)

    def read_frames_at(self, path: Path, times: np.ndarray, size: int | None) -> np.ndarray:
        return _read_pyav(path, times, size)


DECODER = PyAVDecoder()
