"""Indexing with N decoding processes against pure decoding and the encoder alone (issue 14).

    python benchmarks/index.py scale                       # CPU rows: short 640x360 clips, lite encoder
    python benchmarks/index.py scale --size 1280x720 --clips 16 --seconds 60 \\
        --encoder clip-l14 --device cuda --workers 1 4 8 15 --decoders pyav nvdec   # GPU rows

Every row runs in its own process; this process samples the resident memory of that process and
of all its children every 50 ms (peak RSS of the whole tree: the main process plus its decoders).
The models load before the clock starts. Rows, all from the same invocation and the same clips:

- decode N:  N processes decode the clips (sampled at --fps, resized to the encoder's input, as the
             index does) and do nothing else: the machine's aggregate decode rate at N.
- encode:    the encoder alone on frames of the same shape, in batches of --batch: its ceiling.
- index N:   `index_paths` (N = 1, the plain path) or `index_paths_parallel(workers=N)`, into a
             fresh SQLite file: decode, encode, agent events and one transaction per video.

Ratios: index N / decode N (how close the pipeline comes to the decode rate at the same N: the
issue asks for >= 0.8) and index N / encode (how busy the encoder is kept). `--encoder clip-l14`
is a CLIP ViT-L/14-shaped model with random weights (TSPO-0.4B's sizes), written once under
benchmarks/out/. The card (or the CPU) is named in every report.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "scale"
sys.path.insert(0, str(ROOT))

from tspo_edge.media.decoding import decode_video  # noqa: E402
from tspo_edge.media.video import resolve_decoder, write_video  # noqa: E402

# Imports marked "deferred: spawned" stay in their functions: the decoding processes (spawn)
# re-import this script, and what it imports at the top counts in the decode rows' peak RSS
# (measured: torch +480 MB, the models and index modules +12 MB, per process).


# ---- inputs ----------------------------------------------------------------------------------

def _write_clip(path: Path, seconds: float, width: int, height: int, fps: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scenes = [rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
              for _ in range(4)]
    count = int(round(seconds * fps))

    def frames():
        for k in range(count):
            yield np.roll(scenes[(k // int(10 * fps)) % 4], 4 * k, axis=1)

    part = path.with_suffix(".part.mp4")
    write_video(part, frames(), fps=fps, codec="libx264", options={"preset": "superfast", "g": "250", "crf": "26"})
    part.rename(path)


def make_clips(n: int, seconds: float, width: int, height: int, fps: float) -> list[Path]:
    """`n` H.264 clips with B-frames (x264 superfast, keyframe every 250 frames), cached, written
    by as many processes as there are cores."""
    folder = OUT / f"clips-{width}x{height}-{fps:g}fps-{seconds:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip{i:03d}.mp4" for i in range(n)]
    todo = [(p, seconds, width, height, fps, i) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        t0 = time.perf_counter()
        print(f"writing {len(todo)} clips {width}x{height} ...", file=sys.stderr, flush=True)
        with mp.get_context("spawn").Pool(min(len(todo), os.cpu_count() or 1)) as pool:
            pool.starmap(_write_clip, todo)
        print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return paths


def clip_l14(folder: Path) -> Path:
    """A CLIP ViT-L/14-shaped checkpoint (TSPO-0.4B's encoder sizes) with random weights."""
    if (folder / "config.json").exists():
        return folder
    import torch  # deferred: spawned (see the top)
    import transformers as tf  # deferred: spawned (see the top)

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import byte_alphabet  # deferred: spawned (see the top); it imports torch and transformers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in byte_alphabet():
            vocab[c + suffix] = len(vocab)
    cfg = tf.CLIPConfig(
        text_config=dict(vocab_size=49408, bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=768,
                         intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                           patch_size=14, image_size=224), projection_dim=768)
    torch.manual_seed(0)
    tf.CLIPModel(cfg).save_pretrained(folder)
    tf.CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    tf.CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


def encoder_spec(name: str) -> str:
    return str(clip_l14(OUT / "clip-l14-random")) if name == "clip-l14" else name


def device_name(device: str | None) -> str:
    try:
        import torch  # deferred: spawned (see the top); optional here: without it the row names the CPU

        if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    return f"CPU {platform.processor() or platform.machine()} x {os.cpu_count()}"


# ---- one measurement (in its own process) -----------------------------------------------------

def _decode_share(paths: list[str], fps: float, size: int, decoder: str) -> int:
    n = 0
    for p in paths:
        _, chunks = decode_video(p, fps=fps, max_frames=None, size=size, chunk=32, decoder=decoder)
        n += sum(len(c) for c in chunks)
    return n


def one(kind: str, n: int, a) -> dict:
    from tspo_edge.models import ModelSpec, load_models  # deferred: spawned (see the top)
    from tspo_edge.pipeline import Sampling  # deferred: spawned (see the top)

    clips = [str(p) for p in a.paths]
    if kind == "decode":  # no model: the frames are decoded at the encoder's input size, and dropped
        size = a.image_size
        shares = [clips[i::n] for i in range(n)]
        if n == 1:
            t0 = time.perf_counter()
            frames = _decode_share(clips, a.fps, size, a.decoder)
        else:
            with mp.get_context("spawn").Pool(n) as pool:
                pool.starmap(_decode_share, [([], a.fps, size, a.decoder)] * n)  # processes up before the clock
                t0 = time.perf_counter()
                frames = sum(pool.starmap(_decode_share, [(s, a.fps, size, a.decoder) for s in shares]))
        return {"frames": frames, "seconds": time.perf_counter() - t0}
    models = load_models(ModelSpec(encoder=encoder_spec(a.encoder), device=a.device))
    enc = models.encoder
    size = enc.image_size
    models.agent_id  # noqa: B018  (loads the agent before the clock)
    w, h = (size * a.width // a.height // 2 * 2, size) if a.width >= a.height else (size, size * a.height // a.width)
    if kind == "encode":
        batch = np.random.default_rng(0).integers(0, 256, (a.batch, h, w, 3), dtype=np.uint8)
        enc.encode_images(batch[:4])  # warm-up
        frames, t0 = 0, time.perf_counter()
        while frames < a.encode_frames or time.perf_counter() - t0 < 2.0:
            enc.encode_images(batch)
            frames += len(batch)
        _sync(a.device)
        return {"frames": frames, "seconds": time.perf_counter() - t0, "image_size": size}
    from tspo_edge.index import index_paths  # deferred: spawned (see the top)
    from tspo_edge.index.parallel import index_paths_parallel  # deferred: spawned (see the top)

    enc.encode_images(np.zeros((4, h, w, 3), np.uint8))  # warm-up
    sampling = Sampling(fps=a.fps, decoder=a.decoder)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if n == 1:
            s = index_paths(clips, db=Path(tmp) / "i.db", models=models, sampling=sampling)
        else:
            s = index_paths_parallel(clips, db=Path(tmp) / "i.db", models=models, sampling=sampling, workers=n,
                                     batch_frames=a.batch)
        seconds = time.perf_counter() - t0
    if not s.ok:
        raise SystemExit(f"index failed: {s.failed[0].error if s.failed else s.stopped}")
    return {"frames": s.frames, "seconds": seconds}


def _sync(device: str | None) -> None:
    try:
        import torch  # deferred: spawned (see the top)

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except Exception:
        pass


def measure(kind: str, n: int, a, argv: list[str]) -> dict:
    """Run one measurement in a child process; its result and the peak RSS of its process tree
    (None without psutil)."""
    try:
        import psutil  # optional: psutil (no dependency of tspo-edge) samples the process tree's RSS
    except ImportError:
        psutil = None

    cmd = [sys.executable, __file__, "--one", kind, str(n), *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def watch():
        if psutil is None:
            return
        try:
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss)
                time.sleep(0.05)
        except psutil.Error:
            pass

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out, err = proc.communicate()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {n} failed:\n{err[-3000:]}")
    r = json.loads(out.strip().splitlines()[-1])
    r.update(kind=kind, n=n, decoder=a.decoder, frames_per_s=r["frames"] / r["seconds"],
             peak_rss_mb=peak[0] / 2**20 if psutil is not None else None)
    return r


# ---- the report -------------------------------------------------------------------------------

def _mb(v) -> str:
    return "?" if v is None else f"{v:.0f}"


def bound(rows: list[dict]) -> str:
    """What bounds the pipeline at the largest N: the decoders or the encoder."""
    idx = [r for r in rows if r["kind"] == "index"]
    enc = next((r for r in rows if r["kind"] == "encode"), None)
    if not idx or enc is None:
        return ""
    top = max(idx, key=lambda r: (r["n"], r["frames_per_s"]))
    dec = next((r for r in rows if r["kind"] == "decode" and r["n"] == top["n"] and r["decoder"] == top["decoder"]), None)
    limits = {"encoder": enc["frames_per_s"], f"{top['n']} decoders": dec["frames_per_s"] if dec else float("inf")}
    what = min(limits, key=limits.get)
    return (f"index at N={top['n']}: {top['frames_per_s']:.1f} frames/s = {top['frames_per_s'] / limits[what]:.2f} of "
            f"the {what} alone ({limits[what]:.1f} frames/s); the other: "
            + ", ".join(f"{k} {v:.1f}" for k, v in limits.items() if k != what))


def table(rows: list[dict], video_s_per_frame: float) -> str:
    enc = next((r for r in rows if r["kind"] == "encode"), None)
    dec = {(r["decoder"], r["n"]): r for r in rows if r["kind"] == "decode"}
    lines = ["| row | decoder | N | frames | s | frames/s | x real time | peak RSS MB | / decode N | / encoder |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        d = dec.get((r["decoder"], r["n"]))
        vs_dec = f"{r['frames_per_s'] / d['frames_per_s']:.2f}" if r["kind"] == "index" and d else ""
        vs_enc = f"{r['frames_per_s'] / enc['frames_per_s']:.2f}" if enc and r["kind"] != "encode" else ""
        xrt = f"{r['frames_per_s'] * video_s_per_frame:.0f}" if r["kind"] != "encode" else ""
        lines.append(f"| {r['kind']} | {r['decoder'] if r['kind'] != 'encode' else ''} | "
                     f"{r['n'] if r['kind'] != 'encode' else ''} | {r['frames']} | {r['seconds']:.1f} | "
                     f"{r['frames_per_s']:.1f} | {xrt} | {_mb(r['peak_rss_mb'])} | {vs_dec} | {vs_enc} |")
    return "\n".join(lines)


def parse(argv):
    ap = argparse.ArgumentParser(prog="benchmarks/index.py scale", description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each clip")
    ap.add_argument("--size", default="640x360", help="WxH of the clips")
    ap.add_argument("--native-fps", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=1.0, help="sampling rate (frames per second of video)")
    ap.add_argument("--workers", type=int, nargs="*", default=None, help="N values (default: 1 .. cores)")
    ap.add_argument("--encoder", default="lite", help="lite, clip-l14 (random ViT-L/14), or a spec")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: the encoder's choice)")
    ap.add_argument("--decoders", nargs="*", default=["pyav"], help="pyav, nvdec (skipped with the reason where it cannot run)")
    ap.add_argument("--batch", type=int, default=64, help="encoder batch (frames)")
    ap.add_argument("--encode-frames", type=int, default=512)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--decoder", default="pyav", help=argparse.SUPPRESS)
    ap.add_argument("--paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--image-size", type=int, default=224, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.width, a.height = map(int, a.size.lower().split("x"))
    return a


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]), a)))
        return {}
    clips = make_clips(a.clips, a.seconds, a.width, a.height, a.native_fps)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ns = a.workers or sorted({1, *range(2, cores + 1, max(1, cores // 4)), cores})
    base = ["--clips", str(a.clips), "--seconds", str(a.seconds), "--size", a.size, "--fps", str(a.fps),
            "--encoder", a.encoder, "--batch", str(a.batch), "--encode-frames", str(a.encode_frames),
            "--paths", *map(str, clips)] + (["--device", a.device] if a.device else [])
    if a.encoder == "clip-l14":
        clip_l14(OUT / "clip-l14-random")
    card = device_name(a.device)
    print(f"machine: {card}; {cores} cores; {a.clips} clips x {a.seconds:g} s {a.size} {a.native_fps:g} fps "
          f"H.264; sampled at {a.fps:g} fps; encoder {a.encoder}", flush=True)
    rows = [measure("encode", 1, a, base + ["--decoder", "pyav"])]
    print(f"encode: {rows[-1]['frames_per_s']:.1f} frames/s", flush=True)
    base += ["--image-size", str(rows[-1]["image_size"])]
    skipped = []
    for dec in a.decoders:
        why = resolve_decoder(dec)[1]  # a decoder that cannot run here (nvdec without a GPU)
        if why:
            skipped.append(f"{dec} rows skipped: {why}")
            print(skipped[-1], flush=True)
            continue
        for n in ns:
            for kind in ("decode", "index"):
                a.decoder = dec
                r = measure(kind, n, a, base + ["--decoder", dec])
                rows.append(r)
                print(f"{kind:6s} {dec:5s} N={n:2d} {r['frames']:6d} frames {r['seconds']:7.1f} s "
                      f"{r['frames_per_s']:8.1f} frames/s  peak RSS {_mb(r['peak_rss_mb'])} MB", flush=True)
    md = table(rows, 1.0 / a.fps)
    print(md)
    print("bound:", bound(rows))
    result = {"machine": card, "cores": cores, "args": vars(a) | {"paths": None, "json": None},
              "rows": rows, "skipped": skipped, "markdown": md}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
