"""Issue 14: decoding processes (--workers), Ray (--engine ray), decoding less, NVDEC.

The parallel engines must build the same index as the plain path on a folder of good and bad
files: the same videos indexed, the same frame times, embeddings equal within float16 rounding,
the same bad files with the same errors, and a rerun that skips everything.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from tspo_edge.media import video as V
from tspo_edge.media import pyav as pyav_backend
from tspo_edge.index import index_paths
from tspo_edge.index.parallel import index_paths_parallel
from tspo_edge.pipeline import Sampling
from tspo_edge.storage.store import Store

from conftest import write_test_video

HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Good videos of two sizes and codecs, and bad files: not a video, empty, truncated."""
    d = tmp_path_factory.mktemp("archive")
    write_test_video(d / "a.mp4", seconds=6, fps=10, size=(160, 90), seed=1)
    write_test_video(d / "b.mp4", seconds=4, fps=10, size=(96, 128), codec="mpeg4", seed=2)
    (d / "sub").mkdir()
    write_test_video(d / "sub" / "c.mkv", seconds=5, fps=8, size=(160, 90), seed=3)
    write_test_video(d / "d.mp4", seconds=3, fps=10, size=(160, 90), seed=4)
    (d / "notvideo.mp4").write_bytes(b"this is not a video " * 50)
    (d / "empty.mp4").write_bytes(b"")
    good = (d / "a.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 3])
    return d


def rows(db: Path) -> dict[str, tuple]:
    with Store(db) as s:
        out = {}
        for r in s.videos():
            feats = s.load_features(r.id) if r.status == "indexed" else None
            out[r.path] = (r.status, r.error, r.frame_count, r.agent_id,
                           None if feats is None else (feats.times, feats.x, feats.z))
        return out


@pytest.fixture(scope="module")
def plain_db(folder, lite_models, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("plain") / "plain.db"
    s = index_paths([folder], db=db, models=lite_models())
    assert s.count("indexed") == 4 and len(s.failed) == 3
    return db


def assert_same_index(db: Path, plain: Path) -> None:
    got, want = rows(db), rows(plain)
    assert sorted(got) == sorted(want)
    for path, (status, error, frames, agent, feats) in want.items():
        g = got[path]
        assert g[:4] == (status, error, frames, agent), path
        if feats is not None:
            np.testing.assert_allclose(g[4][0], feats[0], atol=1e-9)          # frame times
            for a, b in zip(g[4][1:], feats[1:]):                            # x and z (stored float16)
                np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)


def test_workers_give_the_plain_index(folder, plain_db, lite_models, tmp_path):
    db = tmp_path / "workers.db"
    s = index_paths_parallel([folder], db=db, models=lite_models(), workers=2)
    assert (s.count("indexed"), len(s.failed), s.workers) == (4, 3, 2)
    assert [f.path for f in s.files] == sorted(f.path for f in s.files)  # reported in the plain order
    assert_same_index(db, plain_db)
    again = index_paths_parallel([folder], db=db, models=lite_models(), workers=2)
    assert again.count("skipped") == 4 and again.frames == 0
    assert {f.path for f in again.failed} == {f.path for f in s.failed}  # failed files are retried


def test_workers_rerun_reindexes_only_the_changed_file(folder, lite_models, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.mp4", "d.mp4"):
        (src / name).write_bytes((folder / name).read_bytes())
    db = tmp_path / "w.db"
    first = index_paths_parallel([src], db=db, models=lite_models(), workers=2)
    assert first.count("indexed") == 2
    write_test_video(src / "d.mp4", seconds=2, fps=10, size=(160, 90), seed=9)
    os.utime(src / "d.mp4", (time.time() + 5, time.time() + 5))
    second = index_paths_parallel([src], db=db, models=lite_models(), workers=2)
    assert {Path(f.path).name: f.status for f in second.files} == {"a.mp4": "skipped", "d.mp4": "indexed"}
    assert rows(db)[str((src / "d.mp4").resolve())][2] == 2


def test_workers_with_max_frames_match_plain(folder, lite_models, tmp_path):
    sampling = Sampling(fps=2.0, max_frames=5, chunk=3)
    a, b = tmp_path / "p.db", tmp_path / "w.db"
    index_paths([folder / "a.mp4", folder / "b.mp4"], db=a, models=lite_models(), sampling=sampling)
    s = index_paths_parallel([folder / "a.mp4", folder / "b.mp4"], db=b, models=lite_models(),
                             sampling=sampling, workers=2, batch_frames=4)
    assert [f.frames for f in s.files] == [5, 5]
    assert_same_index(b, a)


def test_cli_engine_arguments_checked_first(tmp_path, folder):
    from tspo_edge.cli import app

    runner = CliRunner()
    for args, msg in ((["--workers", "0"], "--workers must be a positive"),
                      (["--ray-address", "ray://x:1"], "--ray-address goes with --engine ray"),
                      (["--engine", "dask"], "--engine dask"),
                      (["--engine", "ray", "--workers", "2"], "--workers is for --engine local")):
        r = runner.invoke(app, ["index", str(folder / "a.mp4"), "--db", str(tmp_path / "x.db"), *args])
        assert r.exit_code == 2 and msg in r.output, (args, r.output)
    assert not (tmp_path / "x.db").exists()


def test_cli_workers(tmp_path, folder, cli_lite_encoder):
    from tspo_edge.cli import app

    db = tmp_path / "cli.db"
    r = CliRunner().invoke(app, ["index", str(folder / "a.mp4"), str(folder / "empty.mp4"), "--db", str(db),
                                 "--workers", "2", "--json"])
    assert r.exit_code == 1, r.output  # one file failed, the rest done
    assert '"indexed": 1' in r.output and '"failed": 1' in r.output


# ---- Ray ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_session():
    if not HAS_RAY:
        pytest.skip("ray is not installed (pip install 'tspo-edge[ray]')")
    from tspo_edge.index.ray_engine import start_ray

    import ray

    started = start_ray(None, num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


def test_ray_gives_the_plain_index_and_reruns_incrementally(ray_session, folder, plain_db, lite_models, tmp_path):
    from tspo_edge.index.ray_engine import index_paths_ray

    db = tmp_path / "ray.db"
    s = index_paths_ray([folder], db=db, models=lite_models())
    assert (s.count("indexed"), len(s.failed), s.engine) == (4, 3, "ray")
    assert_same_index(db, plain_db)
    again = index_paths_ray([folder], db=db, models=lite_models())
    assert again.count("skipped") == 4 and again.frames == 0 and len(again.failed) == 3


def test_local_ray_workers_keep_the_drivers_pythonpath(monkeypatch, tmp_path):
    """Packages reachable only through PYTHONPATH (carried wheels, say) stay reachable in local
    Ray workers: replacing it left them unable to import ray, and Ray restarted them forever."""
    import tspo_edge
    from tspo_edge.index.ray_engine import worker_pythonpath

    root = str(Path(tspo_edge.__file__).resolve().parent.parent)
    carried = str(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([carried, root, ""]))
    assert worker_pythonpath().split(os.pathsep) == [root, carried]
    monkeypatch.delenv("PYTHONPATH")
    assert worker_pythonpath() == root


def test_ray_workers_that_cannot_start_or_import_are_one_error(ray_session):
    from tspo_edge.errors import TspoError
    from tspo_edge.index.ray_engine import probe_workers

    probe_workers(ray_session, timeout=60)  # the session's workers import tspo_edge
    with pytest.raises(TspoError, match=r"^a Ray worker cannot import tspo_edge_absent: .*No module named "
                                        r"'tspo_edge_absent' \(install tspo-edge on every node\)$"):
        probe_workers(ray_session, timeout=60, module="tspo_edge_absent")
    with pytest.raises(TspoError, match=r"^Ray workers did not start within 1e-06 s"):
        probe_workers(ray_session, timeout=1e-6)


# ---- decoding less: frames no sample depends on are not decoded ------------------------------

@pytest.mark.parametrize("codec,options", [("libx264", {"g": "300", "bf": "3"}), ("mpeg4", {"g": "300", "bf": "2", "sc_threshold": "1000000000"})])
def test_skipping_non_reference_frames_keeps_every_sampled_frame(tmp_path, codec, options):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    frames = [np.roll(base, 3 * i, axis=1) for i in range(120)]  # one keyframe (g 300): no seeking, only skipping
    path = V.write_video(tmp_path / "b.mp4", frames, fps=30, codec=codec,
                         options=options)
    with av.open(str(path)) as c:  # a full decode: every frame, and the stream has B-frames
        s = c.streams.video[0]
        full = [(float((f.pts - (s.start_time or 0)) * s.time_base), int(f.pict_type), f.to_ndarray(format="rgb24"))
                for f in c.decode(s)]
    assert sum(k == 3 for _, k, _ in full) >= 30  # AV_PICTURE_TYPE_B
    ref_t = np.array([t for t, _, _ in full])
    with av.open(str(path)) as c:
        cursor = pyav_backend._Cursor(c, c.streams.video[0], path)
        got = []
        for t in np.arange(0, 4, 1.0):  # 1 fps from 30 fps
            f = cursor.find(t)
            got.append((cursor.last_t, f.to_ndarray(format="rgb24")))
        decoded = cursor.decoded
    for t, img in got:
        i = int(np.argmin(np.abs(ref_t - t)))
        assert abs(ref_t[i] - t) < 1e-6
        np.testing.assert_array_equal(img, full[i][2])
    upto = int(np.searchsorted(ref_t, got[-1][0] - 1e-6)) + 1  # frames up to the last one sampled
    assert decoded <= upto - 20, f"{decoded} frames decoded to reach frame {upto}: too few skipped"
    # and the public sampler gives exactly those frames
    times, arr = zip(*[(c.times, c.frames) for c in V.iter_frames(path, fps=1, size=None)])
    np.testing.assert_array_equal(np.concatenate(arr), np.stack([img for _, img in got]))


# ---- NVDEC --------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # .mkv: no frame count in the header
@pytest.mark.parametrize("backend", ["pynvvideocodec", "torchcodec"])
def test_nvdec_frames_equal_pyav_within_rounding(tmp_path, monkeypatch, backend, suffix):
    from tspo_edge.media import nvdec

    monkeypatch.setenv(nvdec.CHOICE_ENV, backend)
    why = nvdec.nvdec_unavailable()
    if why is not None:
        pytest.skip(f"--decoder nvdec cannot run here: {why}")
    path = write_test_video(tmp_path / f"n{suffix}", seconds=6, fps=30, size=(320, 180), seed=5)
    ref = list(V.iter_frames(path, fps=2, size=90))
    got = list(V.iter_frames(path, fps=2, size=90, decoder="nvdec"))
    np.testing.assert_allclose(np.concatenate([c.times for c in got]), np.concatenate([c.times for c in ref]),
                               atol=1e-6)
    a = np.concatenate([c.frames for c in got]).astype(int)
    b = np.concatenate([c.frames for c in ref]).astype(int)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 4.0  # YUV->RGB and resampling differ a little between decoders


def test_nvdec_reason_is_one_line_when_a_backend_cannot_load(tmp_path, monkeypatch):
    """A backend whose import fails (no driver library, as PyNvVideoCodec does without
    libnvidia-encode) gives the first line of its error, and a file asked of it is decoded by PyAV
    with a warning that says so; an unknown choice names the variable."""
    import torch

    from tspo_edge.media import nvdec

    fake = tmp_path / "site" / "PyNvVideoCodec"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("Failed to load NVENC library: libnvidia-encode.so.1: '
                                      'cannot open\\n\\n=== TROUBLESHOOTING STEPS ===\\n1. install a driver")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [n for n in sys.modules if n.split(".")[0] == "PyNvVideoCodec"]:  # a real one imported before
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the environment: a GPU "is" here
    nvdec._backend_unavailable.cache_clear()
    monkeypatch.setenv(nvdec.CHOICE_ENV, "pynvvideocodec")
    try:
        assert nvdec.installed_backends()[0] == "pynvvideocodec"
        why = nvdec.nvdec_unavailable()
        assert why == "pynvvideocodec cannot load (Failed to load NVENC library: libnvidia-encode.so.1: cannot open)"
        video = write_test_video(tmp_path / "v.mp4", seconds=1, fps=5, size=(64, 48))
        with pytest.warns(UserWarning, match=r"v\.mp4: NVDEC cannot run here: pynvvideocodec cannot load \(.*\); "
                                             r"decoded with PyAV$"):
            got = list(V.iter_frames(video, fps=2, decoder="nvdec"))
        want = list(V.iter_frames(video, fps=2))
        np.testing.assert_array_equal(np.concatenate([c.frames for c in got]), np.concatenate([c.frames for c in want]))
        monkeypatch.setenv(nvdec.CHOICE_ENV, "decord")
        assert nvdec.nvdec_unavailable() == "TSPO_EDGE_NVDEC='decord': choose pynvvideocodec or torchcodec"
    finally:
        nvdec._backend_unavailable.cache_clear()


def test_cli_nvdec_falls_back_to_pyav_with_the_reason(tmp_path, folder, cli_lite_encoder):
    from tspo_edge.cli import app
    from tspo_edge.media.nvdec import nvdec_unavailable

    why = nvdec_unavailable()
    if why is None:
        pytest.skip("NVDEC runs here: no fallback to show")
    runner = CliRunner()
    dbs = {}
    for decoder in ("pyav", "nvdec"):
        dbs[decoder] = tmp_path / f"{decoder}.db"
        r = runner.invoke(app, ["index", str(folder / "a.mp4"), "--db", str(dbs[decoder]), "--decoder", decoder])
        assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "--decoder nvdec" in ln]
    assert lines == [f"--decoder nvdec: {why}; decoding with PyAV"], r.output
    assert "Traceback" not in r.output
    (plain,), (nv,) = rows(dbs["pyav"]).values(), rows(dbs["nvdec"]).values()
    assert plain[:4] == nv[:4]
    np.testing.assert_array_equal(plain[4][0], nv[4][0])
    np.testing.assert_array_equal(plain[4][1], nv[4][1])


def test_workers_encoder_failure_fails_those_videos_only(folder, lite_models, lite_encoder, tmp_path):
    from tspo_edge.models import Models

    class Portrait:
        """The lite encoder, failing on portrait frames (b.mp4 is 96x128)."""
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def encode_images(self, frames):
            if frames.shape[1] > frames.shape[2]:
                raise RuntimeError("out of memory (test)")
            return self.inner.encode_images(frames)

    models = Models(lite_models().spec, _encoder=Portrait(lite_encoder))
    s = index_paths_parallel([folder / "a.mp4", folder / "b.mp4", folder / "d.mp4"], db=tmp_path / "f.db",
                             models=models, workers=2)
    assert {Path(f.path).name: f.status for f in s.files} == {"a.mp4": "indexed", "b.mp4": "failed", "d.mp4": "indexed"}
    assert "RuntimeError: out of memory (test)" in s.failed[0].error and "b.mp4" in s.failed[0].error


def test_cli_file_nvdec_refuses_is_decoded_by_pyav_with_a_one_line_warning(tmp_path, folder, cli_lite_encoder,
                                                                          monkeypatch):
    """NVDEC can run (the environment says so) but refuses the file: the index is PyAV's, and the
    command prints one warning line naming the file, not Python's two-line warning."""
    from tspo_edge.media import nvdec
    from tspo_edge.cli import app

    monkeypatch.setattr(nvdec, "installed_backends", lambda: ["pynvvideocodec"])
    monkeypatch.setattr(nvdec, "nvdec_unavailable", lambda: None)  # the CLI keeps --decoder nvdec
    monkeypatch.setattr(nvdec, "choose_backend", lambda: (None, "the stream is 10-bit 4:4:4 (test)"))
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(folder / "a.mp4"), "--db", str(tmp_path / "nv.db"), "--decoder", "nvdec"])
    assert r.exit_code == 0, r.output
    warned = [ln for ln in r.output.splitlines() if "decoded with PyAV" in ln]
    assert warned == [f"warning: {folder / 'a.mp4'}: NVDEC cannot run here: the stream is 10-bit 4:4:4 (test); "
                      "decoded with PyAV"], r.output
    assert "UserWarning" not in r.output and "warnings.warn" not in r.output
    r = runner.invoke(app, ["index", str(folder / "a.mp4"), "--db", str(tmp_path / "av.db")])
    assert r.exit_code == 0, r.output
    (nv,), (plain,) = rows(tmp_path / "nv.db").values(), rows(tmp_path / "av.db").values()
    assert nv[:4] == plain[:4]
    np.testing.assert_array_equal(nv[4][1], plain[4][1])


@pytest.mark.parametrize("engine", ["workers", "ray"])
def test_a_decoding_process_warning_reaches_the_driver(engine, tmp_path, folder, lite_models, monkeypatch, request):
    """A file NVDEC refuses in a decoding process (here: a backend installed, no CUDA device) is
    decoded by PyAV there, and its warning is raised again in the process that reports the run."""
    site = tmp_path / "site"
    (site / "PyNvVideoCodec").mkdir(parents=True)
    (site / "PyNvVideoCodec" / "__init__.py").write_text("")  # installed, but no GPU to run it
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    from tspo_edge.media import nvdec

    nvdec._backend_unavailable.cache_clear()
    if nvdec.nvdec_unavailable() is None:
        pytest.skip("NVDEC runs here: nothing is refused")
    videos = [folder / "a.mp4", folder / "d.mp4"]  # two: one video is decoded in this process
    if engine == "ray":
        if not HAS_RAY:
            pytest.skip("ray is not installed (pip install 'tspo-edge[ray]')")
        import ray

        from tspo_edge.index.ray_engine import index_paths_ray

        if ray.is_initialized():
            ray.shutdown()  # workers must start with this PYTHONPATH
        run = lambda db: index_paths_ray(videos, db=db, models=lite_models(), num_cpus=2,
                                         sampling=Sampling(decoder="nvdec"))
    else:
        run = lambda db: index_paths_parallel(videos, db=db, models=lite_models(), workers=2,
                                              sampling=Sampling(decoder="nvdec"))
    try:
        with pytest.warns(UserWarning) as caught:
            s = run(tmp_path / "nv.db")
    finally:
        nvdec._backend_unavailable.cache_clear()
    assert sorted(str(w.message) for w in caught if "NVDEC" in str(w.message)) == [
        f"{v}: NVDEC cannot run here: no CUDA device; decoded with PyAV" for v in videos]
    # raised by the engine that reports the run (the files were decoded in other processes)
    assert {Path(w.filename).name for w in caught if "NVDEC" in str(w.message)} <= {"parallel.py", "ray_engine.py"}
    assert s.count("indexed") == 2
    plain = tmp_path / "plain.db"
    index_paths(videos, db=plain, models=lite_models())
    assert_same_index(tmp_path / "nv.db", plain)  # PyAV's frames
