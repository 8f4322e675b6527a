"""Cutting a clip out of a video around a moment (PyAV): `tspo-edge clip` and the server's clip route.

    cut_clip(src, out, at=189.0, seconds=10.0)                 # stream copy, no decoding
    cut_clip(src, out, at=189.0, seconds=10.0, reencode=True)  # frame-exact: decode and encode video

Stream copy starts at the keyframe at or before `at` (a clip of copied packets can start
nowhere else and still play), so it begins up to one keyframe interval early and is as long
as that much more than `seconds`; nothing is decoded and the quality is the source's.
Re-encoding decodes from that keyframe, keeps the frames from `at` on (starting with the frame
on screen at `at`) and encodes them (H.264 where PyAV has libx264), so the clip starts at `at`
exactly. Audio packets are copied
in both cases. Times are seconds from the start of the video stream, as the index stores them.

The clip is written to a temporary file beside `out` and renamed into place when complete:
an interrupted or failed cut leaves no half-written clip, and an existing file is replaced
only when asked (`overwrite`).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from tspo_edge.errors import InputError, VideoError
from tspo_edge.media.pyav import Clock, open_pyav
from tspo_edge.media.video import probe

__all__ = ["Clip", "cut_clip", "parse_time", "format_time", "CONTAINERS"]

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
EPS = 1e-6  # seconds
_TIME = re.compile(r"(?:(?:(\d+):)?(\d{1,2}):)?(\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class Clip:
    path: Path          # the clip written
    source: Path        # the video it was cut from
    at: float           # the time asked for (seconds in the source)
    start: float        # where the clip starts in the source (<= at; == at when re-encoded)
    end: float          # where it ends in the source
    reencoded: bool

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(path=str(self.path), source=str(self.source), duration=self.duration)
        return d


def parse_time(text: str, what: str = "") -> float:
    """'03:09', '3:09.5', '1:02:03', '189', '189.5' -> seconds (InputError for anything else,
    led by `what`, the name of the value when there is one)."""
    lead = f"{what} " if what else ""
    m = _TIME.fullmatch(str(text).strip())
    if m is None:
        raise InputError(f"{lead}{text!r}: not a time (write 03:09, 1:02:03, 189 or 189.5)")
    h, mins, secs = m.group(1), m.group(2), float(m.group(3))
    if mins is not None and secs >= 60:
        raise InputError(f"{lead}{text!r}: seconds must be below 60 in mm:ss")
    if h is not None and int(mins) >= 60:
        raise InputError(f"{lead}{text!r}: minutes must be below 60 in h:mm:ss")
    return int(h or 0) * 3600 + int(mins or 0) * 60 + secs


def format_time(t: float) -> str:
    """189.5 -> '03:09.5', 3723 -> '1:02:03' (tenths shown only when there are any)."""
    tenths = int(round(max(0.0, float(t)) * 10))
    s, frac = divmod(tenths, 10)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    text = f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"
    return text + (f".{frac}" if frac else "")


def cut_clip(src: str | os.PathLike, out: str | os.PathLike, *, at: float, seconds: float = 10.0,
             reencode: bool = False, overwrite: bool = False) -> Clip:
    """Write `seconds` of `src` from `at` to `out` (.mp4, .m4v, .mov or .mkv); see the module doc."""
    src, out = Path(src), Path(out)
    if not (math.isfinite(at) and at >= 0):
        raise InputError(f"{src}: a clip cannot start at {at} s")
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"{src}: a clip must last more than 0 seconds, not {seconds}")
    fmt = CONTAINERS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(f"{out}: a clip is written as {', '.join(CONTAINERS)}, not {out.suffix or 'no extension'}")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; nothing was written")
    if out.is_dir():
        raise InputError(f"{out}: is a folder")
    if src.exists() and out.exists() and os.path.samefile(src, out):
        raise InputError(f"{out}: is the video the clip is cut from")
    info = probe(src)
    if info.duration is not None and at >= info.duration:
        raise InputError(f"{src}: {format_time(at)} is past the end of the video ({format_time(info.duration)})")
    if not out.parent.is_dir():
        raise InputError(f"{out}: no such folder {out.parent}")
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=f".partial{out.suffix}")
    os.close(fd)
    try:
        start, end = _write(src, Path(tmp), fmt, at, seconds, reencode, info.rotation)
        try:
            written = probe(tmp)  # the clip opens and its first frame decodes; its length as written
        except VideoError as e:
            raise VideoError(f"{src}: the clip cut at {format_time(at)} does not play "
                             f"({str(e).removeprefix(tmp + ': ')})") from None
        if written.duration is not None:
            end = start + written.duration
        os.replace(tmp, out)
    except av.error.FFmpegError as e:
        hint = "" if reencode or fmt == "matroska" else f" (a stream {out.suffix} cannot hold by copy? write .mkv)"
        raise VideoError(f"{src}: cannot cut the clip into {out}: {e.strerror or e}{hint}") from None
    except OSError as e:
        raise InputError(f"{out}: cannot write the clip ({e.strerror or e})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    if info.duration is not None:
        end = min(end, info.duration)
    return Clip(path=out, source=src, at=float(at), start=round(start, 6), end=round(end, 6), reencoded=reencode)


def _write(src: Path, tmp: Path, fmt: str, at: float, seconds: float, reencode: bool,
           rotation: int) -> tuple[float, float]:
    inp, vin = open_pyav(src)
    with inp:
        vin.thread_type = "AUTO"
        audio = list(inp.streams.audio)
        clock = Clock(vin)
        with av.open(str(tmp), "w", format=fmt) as outc:
            if reencode:
                span = _reencode(inp, vin, audio, clock, outc, at, seconds, rotation)
            else:
                span = _copy(inp, vin, audio, clock, outc, at, seconds)
    if span is None:
        raise VideoError(f"{src}: no video frames from {format_time(at)} on")
    return span


def _seconds(pkt_or_frame, ts: int | None) -> float | None:
    tb = pkt_or_frame.time_base
    return None if ts is None or tb is None else float(ts * tb)


def _packets_from_keyframe(inp, vin, audio, clock: Clock, at: float):
    """Demuxed packets from the last video keyframe at or before `at` on (audio from there too),
    each with that keyframe's time (absolute seconds).

    Seeks backward to `at`; where a demuxer lands past it (MPEG-TS has no keyframe index), seeks
    further back, then reads from the start."""
    start_abs = float(clock.start * vin.time_base)
    for back in (0.0, 10.0, 60.0, 600.0, None):
        if back is None:
            inp.seek(0)
        elif back and at - back <= 0:
            continue
        else:
            inp.seek(clock.pts(at - back), stream=vin, backward=True, any_frame=False)
        key, buf = None, []  # key: the keyframe's time; buf: packets held until no later keyframe can do
        for pkt in inp.demux(vin, *audio):
            if pkt.size == 0 or (pkt.pts is None and pkt.dts is None):
                continue
            video = pkt.stream.index == vin.index
            t = _seconds(pkt, pkt.pts if pkt.pts is not None else pkt.dts) - start_abs
            if buf is None:
                yield pkt, key
                continue
            if video and pkt.is_keyframe and (t <= at + EPS or (back is None and key is None)):
                key, buf = t + start_abs, [pkt]  # from the start, a first keyframe after `at` will do
                continue
            if key is None:
                if video and pkt.is_keyframe:
                    break  # landed past `at`: seek further back
                continue
            buf.append(pkt)
            dts = _seconds(pkt, pkt.dts if pkt.dts is not None else pkt.pts) - start_abs
            if video and dts > at + EPS:  # no later keyframe can be at or before `at`
                yield from ((p, key) for p in buf if not _before(p, key))
                buf = None
        if key is not None:
            if buf:
                yield from ((p, key) for p in buf if not _before(p, key))
            return


def _before(pkt, t_abs: float) -> bool:
    ts = pkt.pts if pkt.pts is not None else pkt.dts
    return pkt.stream.type == "audio" and _seconds(pkt, ts) < t_abs - EPS


def _copy(inp, vin, audio, clock: Clock, outc, at: float, seconds: float):
    outs = {vin.index: outc.add_stream_from_template(vin)}
    for a in audio:
        outs[a.index] = outc.add_stream_from_template(a)
    start_abs = float(clock.start * vin.time_base)
    first = last = None
    done: set[int] = set()
    end_abs = start_abs + at + seconds
    for pkt, key_abs in _packets_from_keyframe(inp, vin, audio, clock, at):
        first = key_abs if first is None else first
        idx = pkt.stream.index
        if idx in done:
            if len(done) == len(outs):
                break
            continue
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        t = _seconds(pkt, ts)
        dts_t = _seconds(pkt, pkt.dts if pkt.dts is not None else ts)
        if idx != vin.index and t < key_abs - EPS:
            continue
        if (idx == vin.index and dts_t >= end_abs - EPS) or (idx != vin.index and t >= end_abs - EPS):
            done.add(idx)
            if len(done) == len(outs):
                break
            continue
        _shift(pkt, key_abs)
        if idx == vin.index:
            stop = t + float((pkt.duration or 0) * pkt.time_base)
            last = stop if last is None else max(last, stop)
        pkt.stream = outs[idx]
        outc.mux(pkt)
    if first is None or last is None:
        return None
    return first - start_abs, last - start_abs  # copied packets may run a few frames past the end asked for


def _shift(pkt, t_abs: float) -> None:
    """Move a packet's timestamps back by `t_abs` seconds (in its own time base)."""
    off = round(Fraction(t_abs).limit_denominator(10**9) / pkt.time_base)
    if pkt.pts is not None:
        pkt.pts -= off
    if pkt.dts is not None:
        pkt.dts -= off


def _encoder() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _reencode(inp, vin, audio, clock: Clock, outc, at: float, seconds: float, rotation: int):
    rate = vin.average_rate or vin.guessed_rate or Fraction(30)
    vout = outc.add_stream(_encoder(), rate=rate)
    vout.codec_context.time_base = vin.time_base
    # set before anything is muxed (the header is written then): coded size, even for yuv420p
    vout.width, vout.height = vin.codec_context.width // 2 * 2, vin.codec_context.height // 2 * 2
    vout.pix_fmt = "yuv420p"
    if rotation and hasattr(vout, "set_display_rotation"):  # PyAV >= 17.1 writes it
        vout.set_display_rotation(rotation)
    if vout.codec_context.name == "libx264":
        vout.options = {"preset": "veryfast", "crf": "18"}
    outs = {a.index: outc.add_stream_from_template(a) for a in audio}
    start_abs = float(clock.start * vin.time_base)
    at_abs, end_abs = start_abs + at, start_abs + at + seconds
    first = last = held = None  # held: the latest frame before `at`, shown at `at` if none starts there
    video_done = False
    done: set[int] = set()

    def take(frame) -> bool:
        """Encode a decoded frame if it belongs to the clip; False once past its end."""
        nonlocal first, last, held
        t = None if frame.pts is None else float(frame.pts * vin.time_base)  # flushed frames: no time base
        if t is None:
            return True
        if t < at_abs - EPS:
            held = frame
            return True
        if t >= end_abs - EPS:
            return False
        if first is None and held is not None and t > at_abs + EPS:
            _encode(outc, vout, held, vin.time_base, at_abs)  # the frame on screen at `at`, from 0
            first = at_abs
        first = t if first is None else first
        last = t
        _encode(outc, vout, frame, vin.time_base, at_abs)
        return True

    for pkt, _key in _packets_from_keyframe(inp, vin, audio, clock, at):
        idx = pkt.stream.index
        if idx != vin.index:
            if idx in done:
                continue
            t = _seconds(pkt, pkt.pts if pkt.pts is not None else pkt.dts)
            if t >= end_abs - EPS:
                done.add(idx)
            elif t >= at_abs - EPS:
                _shift(pkt, at_abs)
                pkt.stream = outs[idx]
                outc.mux(pkt)
        elif not video_done:
            video_done = not all(take(frame) for frame in pkt.decode())
        if video_done and len(done) == len(outs):
            break
    if not video_done:  # the video ended inside the clip: the decoder's last frames
        for frame in vin.codec_context.decode(None):
            if not take(frame):
                break
    if first is None and held is not None:  # `at` falls within the last frame
        _encode(outc, vout, held, vin.time_base, at_abs)
        first = last = at_abs
    if first is None:
        return None
    for p in vout.encode(None):
        outc.mux(p)
    frame_s = 1.0 / float(rate) if rate else 0.0
    return first - start_abs, min(last + frame_s, end_abs) - start_abs


def _encode(outc, vout, frame, tb, at_abs: float) -> None:
    out = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
    out.pts = max(0, int(frame.pts - round(Fraction(at_abs).limit_denominator(10**9) / tb)))
    out.time_base = tb
    for p in vout.encode(out):
        outc.mux(p)
