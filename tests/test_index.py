"""`index_paths` / `tspo-edge index`: generated and real videos, bad files, incremental runs,
interruption and resume, encoder binding, agent changes without decoding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import agent_checkpoint, write_test_video
from tspo_edge.index import find_videos, index_paths
from tspo_edge.media import video
from tspo_edge.models.agent import TemporalAgent, load_agent
from tspo_edge.errors import IndexMismatchError, TspoError
from tspo_edge.models import ModelSpec, load_models
from tspo_edge.pipeline import Sampling, ensure_indexed, prefetch
from tspo_edge.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lite(lite_encoder):
    """The session's lite encoder (conftest)."""
    return lite_encoder


@pytest.fixture
def models(lite_models):
    """Models of the session's lite encoder; models(agent=spec) for another agent."""
    return lite_models


@pytest.fixture
def cached_lite(cli_lite_encoder):
    """`--encoder lite` in the CLI gets the session's (same, real) encoder instead of a reload."""
    return cli_lite_encoder


def _other_agent(dim: int, seed: int = 1) -> TemporalAgent:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TemporalAgent(dim).eval()


class _Renamed:
    """The lite encoder under another id: an index built with lite must refuse it."""

    def __init__(self, enc, new_id):
        self._enc, self.id, self.dim, self.image_size, self.source = enc, new_id, enc.dim, enc.image_size, enc.source

    def encode_images(self, frames):
        return self._enc.encode_images(frames)

    def encode_texts(self, texts):
        return self._enc.encode_texts(texts)


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        t = np.linspace(0, 1, 16000, dtype=np.float32)
        pcm = (0.1 * np.sin(2 * np.pi * 440 * t))[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.fixture
def archive(tmp_path):
    """A folder of good videos of several lengths, sizes and codecs, and four bad files."""
    root = tmp_path / "archive"
    (root / "sub" / "deeper").mkdir(parents=True)
    good = {
        write_test_video(root / "short.mp4", seconds=3, fps=10, size=(160, 90)): 3,
        write_test_video(root / "sub" / "wide.mkv", seconds=6, fps=5, size=(320, 180), codec="mpeg4", seed=1): 6,
        write_test_video(root / "sub" / "deeper" / "tiny.mov", seconds=2, fps=25, size=(96, 64), seed=2): 2,
    }
    full = write_test_video(tmp_path / "full.mp4", seconds=4, fps=10)
    data = full.read_bytes()
    bad = {
        "corrupt": root / "corrupt.mp4",
        "zero": root / "zero.mp4",
        "text": root / "notes.mp4",
        "audio": _audio_only(root / "audio.mp4"),
    }
    bad["corrupt"].write_bytes(data[: len(data) // 2])  # truncated: its index (moov) is lost
    bad["zero"].write_bytes(b"")
    bad["text"].write_text("this is not a video\n" * 20)
    (root / "readme.txt").write_text("not a video extension: never looked at")
    return root, good, bad


def test_find_videos_recursive_by_extension(archive, tmp_path):
    root, good, bad = archive
    files, missing = find_videos([root, tmp_path / "full.mp4", tmp_path / "nope"])
    names = {f.name for f in files}
    assert names == {p.name for p in good} | {p.name for p in bad.values()} | {"full.mp4"}
    assert missing == [tmp_path / "nope"]


def test_cli_archive_and_real_clips(archive, real_clips, cached_lite, tmp_path):
    """Good files indexed, each bad one recorded failed with its error, the run goes on, exit 1."""
    from tspo_edge.cli import app

    root, good, bad = archive
    db = tmp_path / "i.db"
    clips = [real_clips["bikes"], real_clips["bigbuckbunny"], real_clips["carphone_pristine"]]
    r = CliRunner().invoke(app, ["index", str(root), *map(str, clips), "--db", str(db), "--json"])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    by_path = {f["path"]: f for f in out["files"]}
    assert out["failed"] == 4 and out["indexed"] == 6 and out["ok"] is False
    for p in bad.values():
        f = by_path[str(p.resolve())]
        assert f["status"] == "failed" and str(p.resolve()) in f["error"], f
    assert "empty" in by_path[str(bad["zero"].resolve())]["error"]
    with Store(db, readonly=True) as s:
        assert s.encoder_id == cached_lite.id
        for p, seconds in good.items():
            row = s.find_video(p)
            assert row.status == "indexed" and row.frame_count == seconds * 1, (p, row)
            f = s.load_features(row.id)
            assert f.x.shape == f.z.shape == (seconds, cached_lite.dim)
            assert np.all(np.diff(f.times) > 0) and 0 <= f.times[0] < 1
            # the agent ran on the encoder's output: similarity init means z == x
            np.testing.assert_allclose(f.z, f.x, atol=1e-3)
        assert s.find_video(good.__iter__().__next__()).width == 160
        for clip in clips:
            row = s.find_video(clip)
            info = video.probe(clip)
            assert row.status == "indexed" and abs(row.frame_count - info.duration) <= 1.0
            assert (row.width, row.height) == (info.width, info.height) and row.fps == pytest.approx(info.fps)
        failed = {v.path for v in s.videos(status="failed")}
    assert failed == {str(p.resolve()) for p in bad.values()}

    # `info` lists them; a second run decodes nothing new and still reports the failures
    r2 = CliRunner().invoke(app, ["info", "--db", str(db), "--json"])
    assert r2.exit_code == 0 and len(json.loads(r2.stdout)["videos"]) == 10
    r3 = CliRunner().invoke(app, ["index", str(root), *map(str, clips), "--db", str(db), "--json"])
    out3 = json.loads(r3.stdout[r3.stdout.index("{"):])
    assert r3.exit_code == 1 and out3["skipped"] == 6 and out3["failed"] == 4 and out3["frames"] == 0


def test_cli_bad_usage_exits_2(tmp_path, cached_lite):
    from tspo_edge.cli import app

    v = write_test_video(tmp_path / "v.mp4", seconds=1)
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(tmp_path / "missing.mp4"), "--db", str(tmp_path / "i.db")]).exit_code == 2
    r = runner.invoke(app, ["index", str(v), "--db", str(tmp_path / "i.db"), "--fps", "0"])
    assert r.exit_code == 2 and "fps" in r.output
    r = runner.invoke(app, ["index", str(v), "--db", str(tmp_path / "i.db"), "--decoder", "vlc"])
    assert r.exit_code == 2 and "vlc" in r.output
    notdb = tmp_path / "notes.db"
    notdb.write_text("hello")
    r = runner.invoke(app, ["index", str(v), "--db", str(notdb)])
    assert r.exit_code == 2 and "not a tspo-edge index" in " ".join(r.output.split())


def test_incremental_changed_and_force(tmp_path, models, monkeypatch):
    a = write_test_video(tmp_path / "a.mp4", seconds=3)
    b = write_test_video(tmp_path / "b.mp4", seconds=2, seed=3)
    db = tmp_path / "i.db"
    s1 = index_paths([tmp_path], db=db, models=models())
    assert s1.ok and s1.count("indexed") == 2 and s1.frames == 5

    decoded = []
    real_iter = video.iter_frames
    monkeypatch.setattr(video, "iter_frames", lambda p, **kw: (decoded.append(Path(p).name), real_iter(p, **kw))[1])
    s2 = index_paths([tmp_path], db=db, models=models())
    assert s2.count("skipped") == 2 and decoded == []

    write_test_video(a, seconds=5, seed=7)  # changed content and size
    s3 = index_paths([tmp_path], db=db, models=models())
    assert {f.path: f.status for f in s3.files} == {str(a.resolve()): "indexed", str(b.resolve()): "skipped"}
    assert decoded == ["a.mp4"]
    with Store(db) as s:
        assert s.find_video(a).frame_count == 5 and len(s.videos()) == 2

    os.utime(b, (1e9, 1e9))  # same bytes, new mtime: re-indexed (an edit outside the sampled MiBs shows only so)
    assert index_paths([b], db=db, models=models()).count("indexed") == 1

    s4 = index_paths([tmp_path], db=db, models=models(), force=True)
    assert s4.count("indexed") == 2 and decoded == ["a.mp4", "b.mp4", "a.mp4", "b.mp4"]

    s5 = index_paths([a], db=db, models=models(), sampling=Sampling(fps=2.0, max_frames=4))  # other sampling: re-indexed
    assert s5.count("indexed") == 1
    with Store(db) as s:
        f = s.load_features(s.find_video(a).id)
        assert len(f.times) == 4 and f.video.sample_fps == 2.0 and f.video.max_frames == 4
    assert index_paths([a], db=db, models=models(), sampling=Sampling(fps=2.0, max_frames=4)).count("skipped") == 1


def test_agent_change_recomputes_events_without_decoding(tmp_path, lite, models, monkeypatch):
    v = write_test_video(tmp_path / "v.mp4", seconds=4)
    db = tmp_path / "i.db"
    first = index_paths([v], db=db, models=models())
    assert first.agent_source.startswith(f"similarity:{lite.dim}")

    def no_decoding(*a, **kw):
        raise AssertionError("decoded although only the agent changed")

    monkeypatch.setattr(video, "iter_frames", no_decoding)
    monkeypatch.setattr(video, "probe", no_decoding)
    agent = _other_agent(lite.dim)
    ckpt = agent_checkpoint(agent, tmp_path / "agent")
    s = index_paths([v], db=db, models=models(ckpt))
    assert [f.status for f in s.files] == ["events"] and s.agent_id == agent.id
    with Store(db) as st:
        f = st.load_features(st.find_video(v).id)
        assert f.video.agent_id == agent.id
        np.testing.assert_allclose(f.z, agent.events(f.x), atol=2e-2, rtol=1e-2)
        assert not np.allclose(f.z, f.x, atol=1e-2)  # really the new agent's features, not the old z == x
        assert st.meta("agent_id") == agent.id
    assert index_paths([v], db=db, models=models(ckpt)).count("skipped") == 1


def test_agent_of_wrong_width_refused(tmp_path, models):
    v = write_test_video(tmp_path / "v.mp4", seconds=1)
    with pytest.raises(IndexMismatchError, match="width 64"):
        index_paths([v], db=tmp_path / "i.db", models=models(agent_checkpoint(_other_agent(64), tmp_path / "a")))


def test_encoder_mismatch_refused(tmp_path, lite, models, monkeypatch):
    v = write_test_video(tmp_path / "v.mp4", seconds=2)
    db = tmp_path / "i.db"
    index_paths([v], db=db, models=models())
    other = _Renamed(lite, "clip:some/other-model")
    other_models = load_models(ModelSpec(encoder="lite"), loaded_encoder=other)
    with pytest.raises(IndexMismatchError) as e:
        index_paths([v], db=db, models=other_models, force=True)
    assert lite.id in str(e.value) and other.id in str(e.value)
    with Store(db) as s, pytest.raises(IndexMismatchError):
        ensure_indexed(s, v, other_models)
    with Store(db, readonly=True) as s:
        assert s.find_video(v).encoder_id == lite.id  # nothing was overwritten


def test_prefetch_keeps_order_passes_errors_and_stops_its_thread():
    import threading

    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("decoder broke")

    g = prefetch(failing())
    assert next(g) == 1
    with pytest.raises(ValueError, match="decoder broke"):
        next(g)

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    g = prefetch(endless(), depth=2)
    assert [next(g) for _ in range(3)] == [0, 1, 2]
    g.close()  # the consumer stops early (e.g. Ctrl-C): the producer is closed, not leaked
    assert closed.wait(5)
    assert not any(t.name == "tspo-edge-decode" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("threaded", [False, True], ids=["in-turn", "decode-thread"])
def test_interrupted_run_leaves_db_consistent_and_resumes(tmp_path, lite, models, threaded):
    vids = [write_test_video(tmp_path / f"v{i}.mp4", seconds=2 + i, seed=i) for i in range(3)]
    db = tmp_path / "i.db"
    seen = []

    def ctrl_c_in_second_video(ev):
        seen.append((ev.kind, ev.path))
        if ev.kind == "frames" and ev.path == str(vids[1].resolve()):
            raise KeyboardInterrupt  # mid-video: its frames are decoded but nothing is written

    with pytest.raises(KeyboardInterrupt):
        index_paths(vids, db=db, models=models(), progress=ctrl_c_in_second_video, threaded=threaded)
    with Store(db) as s:
        rows = s.videos()
        assert [r.path for r in rows] == [str(vids[0].resolve())] and rows[0].status == "indexed"
        assert s.load_features(rows[0].id).x.shape == (2, lite.dim)
    resumed = index_paths(vids, db=db, models=models(), threaded=threaded)
    assert [f.status for f in resumed.files] == ["skipped", "indexed", "indexed"]
    assert [f.frames for f in resumed.files] == [2, 3, 4]


def test_killed_process_resumes(tmp_path):
    """SIGKILL right after the first video commits (no clean shutdown, WAL not checkpointed)."""
    vids = [write_test_video(tmp_path / f"v{i}.mp4", seconds=2, seed=i) for i in range(3)]
    db = tmp_path / "i.db"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tspo_edge.index import index_paths
        from tspo_edge.models import load_models
        def progress(ev):
            if ev.kind == "frames" and ev.path.endswith("v1.mp4"):
                os.kill(os.getpid(), signal.SIGKILL)
        index_paths({[str(v) for v in vids]!r}, db={str(db)!r}, models=load_models(encoder="lite"), progress=progress)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    with Store(db) as s:
        assert [(Path(r.path).name, r.status) for r in s.videos()] == [("v0.mp4", "indexed")]
        row = s.videos()[0]
        assert s.load_features(row.id).x.shape[0] == row.frame_count == 2


def test_ensure_indexed(tmp_path, models):
    v = write_test_video(tmp_path / "v.mp4", seconds=3)
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    with Store(tmp_path / "i.db") as s:
        row = ensure_indexed(s, v, models())
        assert row.status == "indexed" and row.frame_count == 3
        assert ensure_indexed(s, v, models()).indexed_at == row.indexed_at  # not redone
        with pytest.raises(TspoError, match="bad.mp4"):
            ensure_indexed(s, bad, models())
        assert s.find_video(bad).status == "failed"
        with pytest.raises(TspoError, match="no such file"):
            ensure_indexed(s, tmp_path / "missing.mp4", models())


@pytest.mark.skipif("decord" not in video.available_decoders(), reason="decord not installed")
def test_decord_decoder_gives_the_same_frames(tmp_path, models):
    v = write_test_video(tmp_path / "v.mp4", seconds=3)
    a = index_paths([v], db=tmp_path / "a.db", models=models(), sampling=Sampling(decoder="pyav"))
    b = index_paths([v], db=tmp_path / "b.db", models=models(), sampling=Sampling(decoder="decord"))
    assert a.ok and b.ok and a.frames == b.frames == 3
    with Store(tmp_path / "a.db") as sa, Store(tmp_path / "b.db") as sb:
        fa, fb = sa.load_features(1), sb.load_features(1)
    np.testing.assert_allclose(fa.times, fb.times, atol=0.05)
    # the decoders resize differently (pixels differ by a few levels), but each decord frame's
    # embedding is nearest to the PyAV embedding of the same frame
    cos = (fa.x @ fb.x.T) / np.outer(fa.x_norm, fb.x_norm)
    assert (cos.argmax(axis=0) == np.arange(3)).all() and np.diag(cos).min() > 0.85, cos


def test_a_storage_fault_mid_run_keeps_what_was_committed(tmp_path, models, monkeypatch):
    """A full disk at the second video: the first stays indexed, the run stops with the reason
    (`stopped`, not ok: the CLI exits 1), and a rerun once there is room resumes."""
    from tspo_edge.errors import StoreFullError

    vids = [write_test_video(tmp_path / f"v{i}.mp4", seconds=2, seed=i) for i in range(3)]
    db = tmp_path / "i.db"
    real_put = Store.put_video
    calls = []

    def full_after_one(self, **kw):
        calls.append(kw["path"])
        if len(calls) > 1:
            raise StoreFullError(f"{self.path}: the disk is full")
        return real_put(self, **kw)

    monkeypatch.setattr(Store, "put_video", full_after_one)
    s = index_paths(vids, db=db, models=models())
    assert [f.status for f in s.files] == ["indexed"] and "disk is full" in s.stopped and not s.ok
    with Store(db) as st:
        assert [(Path(r.path).name, r.status) for r in st.videos()] == [("v0.mp4", "indexed")]
    monkeypatch.setattr(Store, "put_video", real_put)
    assert [f.status for f in index_paths(vids, db=db, models=models()).files] == ["skipped", "indexed", "indexed"]
