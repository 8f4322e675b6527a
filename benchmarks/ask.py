"""Ask-time latency on an indexed long video, stage by stage, against the reference path.

    python benchmarks/ask.py                      # 60-minute 720p video, 16 and 64 frames
    python benchmarks/ask.py --minutes 3          # quick smoke run

The long video is generated once and cached under benchmarks/out/ (with its index).
Ours (tspo-edge ask, lite profile): lookup -> text encoding -> scoring -> selection ->
decoding the chosen frames -> answering (lite answerer).
Reference (the TSPO code's per-question path): decode the whole video at 1 fps -> encode every
frame -> run the whole agent (events + scores) -> selection; measured in the same run.
Results go to benchmarks/out/ask.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tspo_edge.ask import Asker  # noqa: E402
from tspo_edge.media.video import iter_frames, probe  # noqa: E402
from tspo_edge.models import load_models  # noqa: E402
from tspo_edge.models.mllm import load_answerer  # noqa: E402
from tspo_edge.scoring import score_frames  # noqa: E402
from tspo_edge.selection import select_frames  # noqa: E402
from tspo_edge.storage.store import Store  # noqa: E402

_OPTS = "\nA. red\nB. green\nC. blue\nD. yellow"
QUESTIONS = [  # multiple choice, so the lite answerer ranks options every time
    "What colour is the screen when the bar passes the middle?" + _OPTS,
    "Which colour does the video show right after the first cut?" + _OPTS,
    "What is the main colour of the scene in the second half?" + _OPTS,
    "Which colour comes right after the yellow scene?" + _OPTS,
    "What colour is the moving bar at the end of the video?" + _OPTS,
]


def make_long_video(path: Path, *, minutes: float, fps: int = 24, height: int = 720,
                    scene_seconds: float = 30.0, gop_seconds: float = 2.0, seed: int = 0) -> Path:
    """An H.264 video of coloured, textured scenes with a moving bar (cheap to generate, seekable
    with a `gop_seconds` keyframe interval as streaming encodes use)."""
    width = int(round(height * 16 / 9 / 2)) * 2
    rng = np.random.default_rng(seed)
    n = int(round(minutes * 60 * fps))
    per_scene = int(round(scene_seconds * fps))
    n_scenes = (n + per_scene - 1) // per_scene
    palette = rng.integers(0, 256, size=(n_scenes, 3))
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "g": str(int(gop_seconds * fps)), "crf": "28"}
        scene = None
        for i in range(n):
            k = i // per_scene
            if i % per_scene == 0:
                low = rng.integers(0, 256, size=(9, 16, 3)).astype(np.float32)
                tex = np.kron(low, np.ones((height // 9 + 1, width // 16 + 1, 1)))[:height, :width]
                scene = (0.5 * tex + 0.5 * palette[k]).astype(np.uint8)
            img = scene.copy()
            x0 = (i * 8) % width
            img[:, x0: x0 + 40] = 255 - palette[k]
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    tmp.replace(path)
    return path


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def reference_path(video: Path, question: str, *, encoder, agent, n: int, method: str = "topk",
                   x_full: np.ndarray | None = None, seconds: float | None = None) -> dict:
    """The TSPO code's per-question path: decode at 1 fps, encode every frame, run the whole agent.

    With `seconds`, decoding and encoding stop after that much video and their times are scaled
    to the whole video by frame count (their cost per frame is constant); the agent then runs on
    the full-length embeddings `x_full` (from the index), so it is measured at full length."""
    t = {}
    t0 = time.perf_counter()
    q = np.asarray(encoder.encode_texts([question]), dtype=np.float32)
    t["text"] = time.perf_counter() - t0
    dec = enc = 0.0
    xs, kept = [], 0
    it = iter(iter_frames(video, fps=1.0, size=encoder.image_size, chunk=64))
    while True:
        a = time.perf_counter()
        chunk = next(it, None)
        dec += time.perf_counter() - a
        if chunk is None:
            break
        a = time.perf_counter()
        xs.append(np.asarray(encoder.encode_images(chunk.frames), dtype=np.float32))
        enc += time.perf_counter() - a
        kept += len(chunk.frames)  # the reference keeps every decoded frame for the MLLM
        if seconds is not None and chunk.times[-1] >= seconds:
            break
    x = np.concatenate(xs)
    T = len(x_full) if (seconds is not None and x_full is not None) else len(x)
    scale = T / len(x)
    t["decode_all"], t["encode_all"] = dec * scale, enc * scale
    t["measured_frames"], t["frames_T"], t["scaled"] = len(x), T, scale != 1.0
    if x_full is not None and seconds is not None:
        x = np.asarray(x_full, dtype=np.float32)
    a = time.perf_counter()
    z = np.asarray(agent.events(x), dtype=np.float32)
    s = score_frames(z, x, q)
    t["agent"] = time.perf_counter() - a
    a = time.perf_counter()
    select_frames(s, n, method)
    t["select"] = time.perf_counter() - a
    t["total"] = t["text"] + t["decode_all"] + t["encode_all"] + t["agent"] + t["select"]
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    p.add_argument("--repeats", type=int, default=3, help="asks per question and frame count (ours)")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference path")
    p.add_argument("--reference-seconds", type=float, default=None,
                   help="decode+encode only this much of the video on the reference path and scale by frame count")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for both paths (1 avoids oversubscription on a shared machine)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"{a.minutes:g}min-{a.height}p"
    video = OUT / f"long-{tag}.mp4"
    if not video.exists():
        t0 = time.perf_counter()
        print(f"generating {video} …", file=sys.stderr)
        make_long_video(video, minutes=a.minutes, height=a.height)
        print(f"generated in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    info = probe(video)
    db = OUT / f"ask-{tag}.db"
    models = load_models(encoder="lite")
    encoder = models.encoder
    answerer = load_answerer("lite", encoder=encoder)
    results: dict = {"video": {"path": str(video), "duration": info.duration, "fps": info.fps,
                               "width": info.width, "height": info.height, "codec": info.codec},
                     "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()},
                     "encoder": encoder.id, "answerer": answerer.id, "torch_threads": a.threads or "default",
                     "load_average_at_start": __import__("os").getloadavg()[0]}
    with Store(db) as store:
        asker = Asker(store=store, models=models, answerer=answerer, cache_videos=0)
        t0 = time.perf_counter()
        first = asker.ask(video, QUESTIONS[0], frames=a.frames[0])  # indexes once (cached in the db)
        results["first_ask_s"] = time.perf_counter() - t0
        results["indexed_now"] = first.indexed_now
        row = store.find_video(video)
        results["index_seconds"] = row.index_seconds
        results["T"] = row.frame_count
        for n in a.frames:
            stages: dict[str, list[float]] = {}
            for q in QUESTIONS:
                for _ in range(a.repeats):
                    r = asker.ask(video, q, frames=n)
                    for k, v in r.timings.items():
                        stages.setdefault(k, []).append(v)
                    to_keys = r.timings["lookup"] + r.timings["text"] + r.timings["score"] + r.timings["select"]
                    stages.setdefault("question_to_keyframes", []).append(to_keys)
                    stages.setdefault("question_to_decoded", []).append(to_keys + r.timings["decode"])
            results[f"ours_{n}"] = {k: _median(v) for k, v in stages.items()}
            results[f"ours_{n}"]["asks"] = len(stages["total"])
            (OUT / "ask.json").write_text(json.dumps(results, indent=2))  # partial results survive a stop
        probes = []
        for _ in range(5):
            t0 = time.perf_counter()
            probe(video)
            probes.append(time.perf_counter() - t0)
        results["cli_probe_s"] = _median(probes)
        agent = asker._resolve(None)[0]
        x_full = store.load_features(row.id).x
    if not a.no_reference:
        n = a.frames[0]
        print("reference path (decode at 1 fps, encode every frame, whole agent) …", file=sys.stderr)
        results[f"reference_{n}"] = reference_path(video, QUESTIONS[0], encoder=encoder, agent=agent, n=n,
                                                   x_full=x_full, seconds=a.reference_seconds)
    results["load_average_at_end"] = __import__("os").getloadavg()[0]
    (OUT / "ask.json").write_text(json.dumps(results, indent=2))
    print(table(results, a.frames))
    return 0


def table(res: dict, frames) -> str:
    ms = lambda s: f"{s * 1000:.1f} ms" if s < 10 else f"{s:.1f} s"  # noqa: E731
    v = res["video"]
    lines = [f"{v['duration'] / 60:.0f}-minute {v['width']}x{v['height']} H.264 video, T = {res['T']} indexed frames, "
             f"lite profile ({res['encoder']}); medians of {res[f'ours_{frames[0]}']['asks']} asks", "",
             "| stage | " + " | ".join(f"ours, {n} frames" for n in frames) + " |",
             "| --- | " + " | ".join("---:" for _ in frames) + " |"]
    for k in ("lookup", "text", "score", "select", "question_to_keyframes", "decode", "question_to_decoded",
              "answer", "total"):
        lines.append(f"| {k.replace('_', ' ')} | " + " | ".join(ms(res[f'ours_{n}'][k]) for n in frames) + " |")
    ref = res.get(f"reference_{frames[0]}")
    if ref:
        ours = res[f"ours_{frames[0]}"]
        scaled = (f" (decode and encode measured on the first {ref['measured_frames']} of {ref['frames_T']} frames, "
                  "scaled by frame count)") if ref.get("scaled") else ""
        lines += ["", f"Reference per-question path ({frames[0]} frames){scaled}: decode all at 1 fps {ms(ref['decode_all'])}, "
                  f"encode all {ms(ref['encode_all'])}, agent {ms(ref['agent'])}, select {ms(ref['select'])}: "
                  f"question to keyframes {ms(ref['total'])}.",
                  f"Ratio reference / ours: question to keyframes {ref['total'] / ours['question_to_keyframes']:.0f}x, "
                  f"question to decoded keyframes {ref['total'] / ours['question_to_decoded']:.0f}x."]
    lines.append(f"(CLI also probes the file before loading models: {ms(res['cli_probe_s'])}; "
                 f"indexing once took {res['index_seconds']:.0f} s; torch threads {res['torch_threads']}; "
                 f"load average {res['load_average_at_start']:.1f} -> {res['load_average_at_end']:.1f} on "
                 f"{res['machine']['cpus']} CPUs.)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
