"""Archive-wide search: tspo_edge.storage.search against today's way, on one synthetic archive, same run.

Today's way: for each indexed video, Store.load_features + scoring.score_frames, then the same
greedy per-video NMS. The new way: tspo_edge.storage.search.search over the int8 cache built by
tspo_edge.storage.search.refresh. Both answer the same questions; the moments must agree exactly, for
every query at every thread count: a mismatch is printed and the run exits 1.
Also timed: the command line's call (the cache brought up to date and checked first), the first
search of a new process (the CRC check of every segment), and a search with no usable cache (a
read-only copy of the index: every frame scored from the index file).

Synthetic archive: `--hours` videos of one hour at 1 fps (3600 frames each), width `--dim`.
Frames come in shots (a shot vector held for 5-40 s plus per-frame noise), and each question
has a planted 20 s stretch in three random videos, so the top moments are not noise.

    python benchmarks/search.py --hours 1000 --dim 384 [--queries 7] [--keep DIR] [--json out.json]

Reports median latency over the queries (page cache warm: one untimed query first), the
ratio baseline/search, heap peak (tracemalloc, NumPy buffers included) and the cache's size.
The cache goes to `<folder>/cache/search` unless $TSPO_EDGE_CACHE says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tspo_edge.storage import search as S  # noqa: E402
from tspo_edge.storage import search_cache  # noqa: E402
from tspo_edge.scoring import score_frames  # noqa: E402
from tspo_edge.storage.store import Store  # noqa: E402

FRAMES = 3600


def video_features(rng, d: int, questions: np.ndarray, plant: list[tuple[int, int]]):
    """x, z for one hour: shots + noise; `plant` = (question index, start frame) stretches."""
    cuts = np.cumsum(rng.integers(5, 40, size=FRAMES // 5))
    shot = np.searchsorted(cuts, np.arange(FRAMES), side="right")
    shots = rng.standard_normal((shot.max() + 1, d), dtype=np.float32)
    x = shots[shot] + 0.5 * rng.standard_normal((FRAMES, d), dtype=np.float32)
    z = x + 0.3 * rng.standard_normal((FRAMES, d), dtype=np.float32)
    for j, start in plant:
        qv = questions[j] / np.linalg.norm(questions[j]) * np.sqrt(d)
        x[start:start + 20] = 0.6 * x[start:start + 20] + qv
        z[start:start + 20] = 0.6 * z[start:start + 20] + qv
    return x, z


def build(db: Path, hours: int, d: int, questions: np.ndarray, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    plants: dict[int, list[tuple[int, int]]] = {}
    for j in range(len(questions)):
        for v in rng.choice(hours, size=min(3, hours), replace=False):
            plants.setdefault(int(v), []).append((j, int(rng.integers(0, FRAMES - 20))))
    t0 = time.perf_counter()
    times = np.arange(FRAMES, dtype=np.float64)
    with Store(db) as store:
        for v in range(hours):
            x, z = video_features(rng, d, questions, plants.get(v, []))
            store.put_video(path=f"/archive/cam{v:04d}.mp4", size=v, mtime=0.0, fingerprint=str(v),
                            times=times, x=x, z=z, encoder_id=f"bench:d{d}", agent_id="bench")
            if v % 100 == 99:
                print(f"  indexed {v + 1}/{hours} videos ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return time.perf_counter() - t0


def baseline(store: Store, q: np.ndarray, top: int, per_video: int, nms_seconds: float):
    """Today's way: load and score every video's blob, then the same NMS."""
    best_frames = []
    for v in store.videos(status="indexed"):
        f = store.load_features(v.id)
        s = score_frames(f.z, f.x, q, z_norm=f.z_norm, x_norm=f.x_norm)
        # the NMS needs only frames that can be kept: the best top*per_video per video suffice
        k = min(len(s), per_video * (2 * int(nms_seconds) + 1))  # 1 fps: enough for the greedy NMS
        idx = np.argpartition(s, -k)[-k:]
        best_frames += [S.Moment(v.id, v.path, float(f.times[i]), float(s[i]), int(i)) for i in idx]
    best_frames.sort(key=lambda m: -m.score)
    return S._nms(best_frames, top, per_video, nms_seconds)


def timed(fn, qs):
    fn(qs[0])  # warm the page cache and the code paths
    out, ts = [], []
    for q in qs:
        t0 = time.perf_counter()
        out.append(fn(q))
        ts.append(time.perf_counter() - t0)
    return out, ts


def heap_peak(fn, q) -> int:
    tracemalloc.start()
    fn(q)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=7)
    ap.add_argument("--baseline-queries", type=int, default=2,
                    help="the baseline is slow: time it on fewer queries (it still answers every query, untimed)")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--per-video", type=int, default=3)
    ap.add_argument("--nms-seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", type=Path, help="build (or reuse) the archive here instead of a temp folder")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    qs = np.random.default_rng(1).standard_normal((a.queries, a.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TSPO_EDGE_CACHE", str(folder / "cache"))
        db = folder / f"archive-{a.hours}h-d{a.dim}.db"
        build_s = None
        if not db.exists():
            build_s = build(db, a.hours, a.dim, qs)
        with Store(db) as store:
            t0 = time.perf_counter()
            summary = S.refresh(store)
            refresh_s = time.perf_counter() - t0
            frames = summary.frames
            sidecar = sum(p.stat().st_size for p in S.search_dir(store).iterdir())

            def ours(q, threads):
                return S.search(store, q, top=a.top, per_video=a.per_video, nms_seconds=a.nms_seconds,
                                threads=threads, refresh_first=False)

            rows = []
            new = {}
            for th in a.threads:
                res, ts = timed(lambda q: ours(q, th), list(qs))
                new[th] = res
                rows.append({"method": f"search (int8 cache, {th} thread{'s' * (th > 1)})",
                             "median_ms": statistics.median(ts) * 1e3, "max_ms": max(ts) * 1e3,
                             "heap_peak_mb": heap_peak(lambda q: ours(q, th), qs[0]) / 2**20,
                             "rescored": statistics.median(r.rescored for r in res)})
            res, ts = timed(lambda q: S.search(store, q, top=a.top, per_video=a.per_video,
                                               nms_seconds=a.nms_seconds), list(qs))
            rows.append({"method": "search as the CLI calls it (cache brought up to date, checked)",
                         "median_ms": statistics.median(ts) * 1e3, "max_ms": max(ts) * 1e3})
            cold = []
            for q in qs[:3]:  # a new process: no CRC verified in memory, no stamp on disk
                search_cache._VERIFIED.clear()
                (S.search_dir(store) / "verified.json").unlink(missing_ok=True)
                t0 = time.perf_counter()
                ours(q, 1)
                cold.append(time.perf_counter() - t0)
            rows.append({"method": "first search of a process (CRC check of the cache)",
                         "median_ms": statistics.median(cold) * 1e3, "max_ms": max(cold) * 1e3})
            copy = folder / "read-only-copy.db"
            shutil.copy(db, copy)
            with Store(copy, readonly=True) as ro:  # another path: no cache of its own
                res, ts = timed(lambda q: S.search(ro, q, top=a.top, per_video=a.per_video,
                                                   nms_seconds=a.nms_seconds), list(qs[:a.baseline_queries]))
                assert res[0].direct > 0
            copy.unlink()
            rows.append({"method": "search with no usable cache (read-only copy)",
                         "median_ms": statistics.median(ts) * 1e3, "max_ms": max(ts) * 1e3})
            old, ts = timed(lambda q: baseline(store, q, a.top, a.per_video, a.nms_seconds),
                            list(qs[:max(1, a.baseline_queries)]))
            old += [baseline(store, q, a.top, a.per_video, a.nms_seconds) for q in qs[len(old):]]  # untimed
            base = {"method": "load_features + score_frames per video (today)",
                    "median_ms": statistics.median(ts) * 1e3, "max_ms": max(ts) * 1e3,
                    "heap_peak_mb": heap_peak(lambda q: baseline(store, q, a.top, a.per_video, a.nms_seconds),
                                              qs[0]) / 2**20}
            mismatches = [{"query": i, "threads": th,
                           "search": [(m.video_id, m.frame) for m in new[th][i].moments],
                           "baseline": [(m.video_id, m.frame) for m in old[i]]}
                          for th in a.threads for i in range(len(qs))
                          if [(m.video_id, m.frame) for m in new[th][i].moments] != [(m.video_id, m.frame) for m in old[i]]]
            agree = not mismatches
    for r in rows:
        r["speedup"] = base["median_ms"] / r["median_ms"]
        r.setdefault("heap_peak_mb", float("nan"))
    out = {"hours": a.hours, "frames": frames, "dim": a.dim, "queries": a.queries,
           "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
           "kernel": "simsimd" if S._simsimd is not None else "numpy",
           "build_s": build_s, "refresh_s": refresh_s, "cache_mb": sidecar / 2**20,
           "same_moments_as_baseline": agree, "mismatches": mismatches, "rows": [base] + rows}
    print(f"{a.hours} h archive, {frames:,} frames, D={a.dim}, kernel {out['kernel']}; "
          f"refresh {refresh_s:.1f} s, cache {sidecar / 2**20:.0f} MiB; same moments "
          f"({len(qs)} queries x {len(a.threads)} thread counts): {agree}")
    print(f"{'method':55s} {'median ms':>10s} {'max ms':>9s} {'heap MiB':>9s} {'x faster':>9s}")
    for r in [base] + rows:
        print(f"{r['method']:55s} {r['median_ms']:10.1f} {r['max_ms']:9.1f} {r['heap_peak_mb']:9.1f} "
              f"{r.get('speedup', 1.0):9.1f}")
    for m in mismatches:
        print(f"MISMATCH: query {m['query']}, {m['threads']} thread(s): search {m['search']} "
              f"!= baseline {m['baseline']} (video id, frame)", file=sys.stderr)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["same_moments_as_baseline"] else 1)
