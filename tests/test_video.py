"""tspo_edge.media.video: probing, fps sampling, max_frames, resizing, rotation, VFR, frames at
given times, bad files, decord. Videos are generated per test (small, a few seconds)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import av
import numpy as np
import pytest

from tspo_edge.media import video as V
from tspo_edge.errors import TspoError, VideoError

HAS_DECORD = importlib.util.find_spec("decord") is not None
needs_decord = pytest.mark.skipif(not HAS_DECORD, reason="decord / decord2 not installed")


def collect(chunks):
    chunks = list(chunks)
    times = np.concatenate([c.times for c in chunks])
    frames = np.concatenate([c.frames for c in chunks])
    return times, frames


def reference_decode(path, size=None):
    """Every frame, decoded plainly with PyAV (no skipping, no seeking): (times, frames)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        times, frames, conv = [], [], None
        for f in c.decode(s):
            if conv is None:
                w, h = V.output_size(f.width, f.height, size)
            times.append(float((f.pts - start) * s.time_base))
            frames.append(f.reformat(width=w, height=h, format="rgb24").to_ndarray())
            conv = True
    return np.asarray(times), np.stack(frames)


# ---------------------------------------------------------------- probe and sampling

@pytest.mark.parametrize("codec,size", [("libx264", (160, 90)), ("mpeg4", (96, 128)), ("libx264", (320, 240))])
def test_probe_generated(make_video, codec, size):
    path = make_video(seconds=3, fps=10, size=size, codec=codec)
    info = V.probe(path)
    assert info.path == path
    assert info.duration == pytest.approx(3.0, abs=0.11)
    assert info.fps == pytest.approx(10.0)
    assert (info.width, info.height) == size
    assert info.rotation == 0
    assert info.frame_count == 30
    assert info.codec == ("h264" if codec == "libx264" else "mpeg4")


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("fps,expected", [(1.0, [0, 1, 2, 3, 4]), (2.5, [0, .4, .8, 1.2, 1.6, 2.0, 2.4, 2.8,
                                                                       3.2, 3.6, 4.0, 4.4, 4.8])])
def test_fps_sampling_times_and_pixels(make_video, codec, fps, expected):
    path = make_video(seconds=5, fps=10, codec=codec)
    times, frames = collect(V.iter_frames(path, fps=fps, size=None))
    np.testing.assert_allclose(times, expected, atol=1e-6)
    # the sampled frames are exactly the frames a plain full decode gives at those times
    ref_t, ref_f = reference_decode(path)
    idx = [int(np.argmin(np.abs(ref_t - t))) for t in times]
    np.testing.assert_array_equal(frames, ref_f[idx])


def test_fps_above_native_gives_each_frame_once(make_video):
    path = make_video(seconds=2, fps=10)
    times, frames = collect(V.iter_frames(path, fps=30, size=None))
    np.testing.assert_allclose(times, np.arange(20) / 10, atol=1e-6)
    assert len(frames) == 20


def test_max_frames_spreads_uniformly(make_video):
    path = make_video(seconds=20, fps=10, size=(64, 48))
    times, frames = collect(V.iter_frames(path, fps=1, max_frames=5, size=None))
    np.testing.assert_allclose(times, [0, 4, 8, 12, 16], atol=1e-6)
    assert frames.shape[0] == 5
    # a cap the video does not reach changes nothing
    t_all, _ = collect(V.iter_frames(path, fps=1, max_frames=100, size=None))
    np.testing.assert_allclose(t_all, np.arange(20), atol=1e-6)


def test_chunks_are_bounded_and_complete(make_video):
    path = make_video(seconds=4, fps=10, size=(64, 48))
    chunks = list(V.iter_frames(path, fps=5, chunk=3, size=None))
    assert all(1 <= len(c) <= 3 for c in chunks) and len(chunks) == 7
    t1, f1 = collect(chunks)
    t2, f2 = collect(V.iter_frames(path, fps=5, chunk=32, size=None))
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(f1, f2)


@pytest.mark.parametrize("src,size,out", [((160, 90), 64, (114, 64)), ((90, 160), 64, (64, 114)),
                                          ((320, 240), 224, (298, 224)), ((160, 90), None, (160, 90))])
def test_resize_keeps_aspect_short_side_even(make_video, src, size, out):
    path = make_video(seconds=1, fps=4, size=src)
    _, frames = collect(V.iter_frames(path, fps=2, size=size))
    assert frames.dtype == np.uint8
    assert frames.shape[1:] == (out[1], out[0], 3)
    assert V.output_size(*src, size) == out


# ---------------------------------------------------------------- rotation, VFR, missing duration

def _half_white(w=64, h=32):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 255  # stored frame: left half white
    return img


PYAV_MAJOR = int(av.__version__.split(".")[0])


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation):
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):  # PyAV 17.0 reads rotation only
        with pytest.raises(TspoError, match="display rotation needs PyAV >= 17.1"):
            V.write_video(tmp_path / "rot.mp4", [_half_white()], fps=3, rotation=rotation)
        pytest.skip(f"writing a rotated test video needs PyAV >= 17.1 (this is {av.__version__})")
    stored = _half_white()
    path = V.write_video(tmp_path / "rot.mp4", [stored] * 6, fps=3, rotation=rotation)
    info = V.probe(path)
    assert info.rotation == rotation
    expected = np.rot90(stored, k=rotation // 90)  # counter-clockwise, as ffmpeg's autorotate
    assert (info.height, info.width) == expected.shape[:2]
    _, frames = collect(V.iter_frames(path, fps=1, size=None))
    assert frames.shape[1:3] == expected.shape[:2]
    assert np.abs(frames[0].astype(int) - expected).mean() < 8
    at = V.read_frames_at(path, [1.0], size=16)
    assert at.shape[1:3] == V.output_size(info.width, info.height, 16)[::-1]
    if HAS_DECORD:  # decord mishandles rotated videos: PyAV decodes them, with a warning
        with pytest.warns(UserWarning, match="rotated video"):
            d = V.read_frames_at(path, [1.0], size=None, decoder="decord")
        assert np.abs(d[0].astype(int) - expected).mean() < 8


def test_rotate_frames_helper():
    img = np.arange(6).reshape(2, 3, 1).repeat(3, axis=2)
    assert V.rotate_frames(img, 0) is img
    np.testing.assert_array_equal(V.rotate_frames(img, 90)[..., 0], [[2, 5], [1, 4], [0, 3]])
    np.testing.assert_array_equal(V.rotate_frames(img[None], -90)[0], np.rot90(img, -1))


def test_variable_frame_rate(make_video):
    stamps = [0.0, 0.1, 0.15, 0.6, 0.61, 2.0, 2.05, 3.3]
    path = make_video("vfr.mp4", times=stamps, size=(64, 48))
    times, frames = collect(V.iter_frames(path, fps=2, size=None))
    # targets 0, .5, 1, 1.5, ... each served by the first frame at or after it, each frame once
    np.testing.assert_allclose(times, [0.0, 0.6, 2.0, 3.3], atol=1e-4)
    at = V.read_frames_at(path, [3.0, 0.12, 0.6, 9.0])
    ref_t, ref_f = reference_decode(path)
    np.testing.assert_array_equal(at, ref_f[[7, 2, 3, 7]])  # past the end: the last frame
    np.testing.assert_allclose(ref_t, stamps, atol=1e-4)


def test_missing_duration_is_estimated(tmp_path):
    # a raw H.264 elementary stream stores no duration and no timestamps
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(20)]
    path = V.write_video(tmp_path / "raw.h264", frames, fps=25)
    with av.open(str(path)) as c:
        assert c.duration is None and not c.streams.video[0].duration
    info = V.probe(path)
    assert info.frame_count == 20
    assert info.duration == pytest.approx(20 / info.fps)
    times, got = collect(V.iter_frames(path, fps=5, size=None, max_frames=4))
    assert len(got) == 4 and np.all(np.diff(times) > 0)


# ---------------------------------------------------------------- frames at given times

@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_read_frames_at_matches_iter_frames(make_video, codec):
    # keyframe every 20 frames, so some targets are reached by seeking and others by decoding on
    path = make_video(seconds=30, fps=10, size=(96, 64), codec=codec, gop=20)
    times, frames = collect(V.iter_frames(path, fps=1, size=32))
    order = np.random.default_rng(0).permutation(len(times))
    picked = np.concatenate([order, order[:3]])  # shuffled, with repeats
    got = V.read_frames_at(path, times[picked], size=32)
    assert got.shape == (len(picked),) + frames.shape[1:]
    np.testing.assert_array_equal(got, frames[picked])


def test_read_frames_at_between_frames_and_edges(make_video):
    path = make_video(seconds=4, fps=10, size=(64, 48), gop=10)
    ref_t, ref_f = reference_decode(path)
    got = V.read_frames_at(path, [3.95, 0.0, 1.23, 2.0, -1.0, 100.0])
    np.testing.assert_array_equal(got, ref_f[[39, 0, 13, 20, 0, 39]])
    # past the end alone: the true last frame (not the last one the decoder kept)
    np.testing.assert_array_equal(V.read_frames_at(path, [50.0, 60.0]), ref_f[[39, 39]])
    assert V.read_frames_at(path, [], size=24).shape == (0, 24, 32, 3)
    with pytest.raises(ValueError):
        V.read_frames_at(path, [float("nan")])


# ---------------------------------------------------------------- real clips

def test_real_clips(real_clips):
    assert {"bikes", "bigbuckbunny", "carphone_pristine"} <= set(real_clips)
    info = V.probe(real_clips["bikes"])
    assert (info.width, info.height, info.fps, info.frame_count) == (640, 272, 25.0, 250)
    assert info.duration == pytest.approx(10.0)
    times, frames = collect(V.iter_frames(real_clips["bikes"], fps=1))
    np.testing.assert_allclose(times, np.arange(10), atol=1e-6)
    assert frames.shape == (10, 224, 528, 3)
    for name in ("bigbuckbunny", "carphone_pristine"):
        t, f = collect(V.iter_frames(real_clips[name], fps=2, size=112))
        assert len(t) >= 8 and min(f.shape[1:3]) == 112
        pick = [len(t) - 1, 0, len(t) // 2]
        np.testing.assert_array_equal(V.read_frames_at(real_clips[name], t[pick], size=112), f[pick])


# ---------------------------------------------------------------- bad input

def _bad_files(tmp_path, make_video):
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    good = make_video("good.mp4", seconds=2, fps=10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("aac", rate=44100)
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {"zero": (zero, "empty"), "text": (text, "not a readable video"),
            "truncated": (cut, "not a readable video"), "audio": (audio, "no video stream"),
            "missing": (tmp_path / "nope.mp4", "no such file"), "directory": (tmp_path, "directory")}


@pytest.mark.parametrize("decoder", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_bad_inputs_raise_video_error(tmp_path, make_video, decoder):
    for kind, (path, cause) in _bad_files(tmp_path, make_video).items():
        for call in (lambda: V.probe(path, decoder=decoder),
                     lambda: V.iter_frames(path, decoder=decoder),
                     lambda: V.read_frames_at(path, [0.0], decoder=decoder)):
            with pytest.raises(VideoError) as e:
                call()
            msg = str(e.value)
            assert msg.startswith(f"{path}: "), (kind, msg)
            assert cause in msg, (kind, msg)
            assert "\n" not in msg
            assert isinstance(e.value, TspoError)


def test_truncated_media_data_is_reported(make_video, tmp_path):
    # moov at the front (faststart), so the file opens, but the media data stops midway
    frames = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(100)]
    good = V.write_video(tmp_path / "fs.mp4", frames, fps=10, container_options={"movflags": "faststart"})
    cut = tmp_path / "cut_fs.mp4"
    cut.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.6)])
    assert V.probe(cut).duration == pytest.approx(10.0)  # the header still promises 10 s
    with pytest.raises(VideoError, match=r"truncated: stream data ends at \d"):
        collect(V.iter_frames(cut, fps=1, size=None))


def test_foreign_encoding_tags_do_not_stop_decoding(tmp_path):
    # a title tag in Latin-1, not UTF-8: written as UTF-8 "é", then its two bytes patched to
    # bytes that are not UTF-8 (same length, so the file stays valid)
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]
    path = tmp_path / "latin1.mp4"
    with av.open(str(path), "w") as c:
        c.metadata["title"] = "TSPOMARK\u00e9"
        s = c.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = path.read_bytes()
    assert data.count(b"TSPOMARK\xc3\xa9") == 1
    path.write_bytes(data.replace(b"TSPOMARK\xc3\xa9", b"TSPOMARK\xff\xfe"))
    if PYAV_MAJOR < 19:  # the case the open options exist for
        with pytest.raises(UnicodeDecodeError):
            av.open(str(path)).close()
    assert V.probe(path).frame_count == 5
    times, got = collect(V.iter_frames(path, fps=5, size=None))
    assert len(times) == 5
    np.testing.assert_allclose(got.reshape(5, -1).mean(axis=1), [0, 40, 80, 120, 160], atol=3)


def test_decoder_choice_errors(make_video, monkeypatch):
    path = make_video(seconds=1)
    with pytest.raises(TspoError, match="unknown decoder"):
        V.probe(path, decoder="opencv")
    real = importlib.util.find_spec
    optional = {"decord", "torchcodec", "PyNvVideoCodec"}  # none of the optional decoders installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in optional else real(n, *a))
    assert V.available_decoders() == ["pyav"]
    with pytest.raises(TspoError, match="pip install decord"):
        V.iter_frames(path, decoder="decord")
    with pytest.raises(TspoError, match="pip install pynvvideocodec"):
        V.iter_frames(path, decoder="nvdec")


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        V.write_video(tmp_path / "odd.mp4", [np.zeros((31, 64, 3), np.uint8)], fps=5)
    with pytest.raises(ValueError, match="no frames"):
        V.write_video(tmp_path / "none.mp4", [], fps=5)


# ---------------------------------------------------------------- decord

@needs_decord
def test_decord_matches_pyav_sampling(make_video, real_clips):
    assert "decord" in V.available_decoders()
    for path in (make_video(seconds=6, fps=10, size=(160, 90)), real_clips["bikes"]):
        t_av, f_av = collect(V.iter_frames(path, fps=1, size=64))
        t_de, f_de = collect(V.iter_frames(path, fps=1, size=64, decoder="decord"))
        np.testing.assert_allclose(t_de, t_av, atol=1e-4)
        assert f_de.shape == f_av.shape
        # different scalers, same frames: small mean difference (a wrong frame differs far more)
        assert np.abs(f_de.astype(int) - f_av).mean() < 6
        at = V.read_frames_at(path, t_av[::-1], size=64, decoder="decord")
        np.testing.assert_array_equal(at, f_de[::-1])
    info = V.probe(real_clips["bikes"], decoder="decord")
    assert (info.width, info.height, info.frame_count) == (640, 272, 250)
    t, _ = collect(V.iter_frames(real_clips["bikes"], fps=1, max_frames=4, size=32, decoder="decord"))
    np.testing.assert_allclose(t, [0, 2.52, 5, 7.52], atol=1e-4)  # 25 fps: first frame at or after


DECORD_THEN_TORCH = """
import sys
from tspo_edge.media import video
video.read_frames_at(sys.argv[1], [1.0], size=32, decoder="decord")
import torch
print(tuple(torch.nn.Linear(64, 64)(torch.randn(4, 64)).shape))
"""


@needs_decord
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed: nothing to crash")
def test_decoding_with_decord_leaves_torch_working(real_clips):
    """decord2's NVBLAS, loaded before torch, crashed torch's next CPU matrix product (a
    segmentation fault: `tspo-edge` tests that decoded with decord before the lite encoder ran
    died that way); the decord backend loads torch first where it is installed."""
    r = subprocess.run([sys.executable, "-c", DECORD_THEN_TORCH, str(real_clips["bikes"])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
    assert r.stdout.strip() == "(4, 64)"
