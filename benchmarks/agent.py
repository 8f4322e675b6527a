"""Agent cost: banded windowed attention (ours) against the dense masked algorithm.

For each T (frames; 1 fps => seconds of video) at d = 768, 8 heads, w = 12:
  index time  events(x) + scores      ours vs. dense T x T masked attention (same run)
  ask time    scores from stored event features (NumPy, stored norms)
Each measurement runs in a fresh process so peak RSS is its own.

    python benchmarks/agent.py                  # T = 256, 1024, 3600, 10800
    python benchmarks/agent.py --dense-max 3600 --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import time

import numpy as np
import torch

from tspo_edge.models.agent import TemporalAgent, positional_encoding, score_frames

D, HEADS, WINDOW = 768, 8, 12


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dense_events(agent, x):
    """The published algorithm, from the formulas: a dense T x T window mask."""
    T, Dm = x.shape
    H, w = agent.heads, agent.window
    att = agent.temporal
    e = x + positional_encoding(T, Dm)
    q, k, v = (lin(e).view(T, H, Dm // H).transpose(0, 1) for lin in (att.Self_q, att.Self_k, att.Self_v))
    j = torch.arange(T)[:, None]
    cols = (j - w // 2 + torch.arange(w)[None, :]).clamp(0, T - 1)
    mask = torch.zeros(T, T, dtype=torch.bool)
    mask[j.expand(T, w), cols] = True
    logits = (q @ k.transpose(1, 2)) / math.sqrt(Dm // H)
    a = torch.softmax(logits.masked_fill(~mask, -1e6), -1) @ v
    return agent.mlp(a.transpose(0, 1).reshape(T, Dm)) + x


def _measure(algo: str, T: int, repeat: int, threads: int, q) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    agent = TemporalAgent(D, HEADS, WINDOW).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, D)).astype(np.float32)
    text = rng.normal(size=(1, D)).astype(np.float32)
    xt = torch.as_tensor(x)
    base = _rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(repeat):
            t0 = time.perf_counter()
            if algo == "banded":
                z = agent(xt)
            elif algo == "dense":
                z = dense_events(agent, xt)
            else:  # ask: scores from stored (float16) event features, norms stored with them
                z16, x16 = agent(xt).numpy().astype(np.float16), x.astype(np.float16)
                zf, xf = z16.astype(np.float32), x16.astype(np.float32)
                zn, xn = np.linalg.norm(zf, axis=1), np.linalg.norm(xf, axis=1)
                t0 = time.perf_counter()
                for _ in range(100):
                    score_frames(zf, xf, text, z_norm=zn, x_norm=xn)
                times.append((time.perf_counter() - t0) / 100)
                continue
            agent.scores(z, xt, torch.as_tensor(text))
            times.append(time.perf_counter() - t0)
    q.put({"algo": algo, "T": T, "seconds": min(times), "peak_mb": _rss_mb() - base})


def measure(algo: str, T: int, repeat: int, threads: int = 0) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(algo, T, repeat, threads, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        return {"algo": algo, "T": T, "error": f"exit code {p.exitcode}"}
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, nargs="+", default=[256, 1024, 3600, 10800])
    ap.add_argument("--dense-max", type=int, default=3600, help="largest T for the dense baseline (memory grows with T^2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each worker (0: torch's default)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, d={D}, heads={HEADS}, w={WINDOW}")
    print(f"{'T':>6} | {'banded s':>9} {'MB':>7} | {'dense s':>9} {'MB':>7} | {'speed-up':>8} | {'ask ms':>7}")
    rows = []
    for T in args.T:
        ours = measure("banded", T, args.repeat, args.threads)
        dense = measure("dense", T, args.repeat, args.threads) if T <= args.dense_max else None
        ask = measure("ask", T, 1, args.threads)
        rows.append({"T": T, "banded": ours, "dense": dense, "ask": ask})
        ds = f"{dense['seconds']:9.3f} {dense['peak_mb']:7.0f}" if dense and "seconds" in dense else f"{'not run':>17}"
        sp = f"{dense['seconds'] / ours['seconds']:7.1f}x" if dense and "seconds" in dense else f"{'-':>8}"
        print(f"{T:>6} | {ours['seconds']:9.3f} {ours['peak_mb']:7.0f} | {ds} | {sp} | {ask['seconds'] * 1e3:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
