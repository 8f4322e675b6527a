"""Store layout: a row per frame vs a blob per video, measured for ask-time load speed.

Ask needs, for one video, times[T], x[T,D], z[T,D] (float16 on disk -> float32) and the norms.
Both layouts hold the same bytes; this times a fresh connection + load into float32 arrays for
a 1-hour video at 1 fps (T = 3600) with D = 384 (lite) and D = 768 (CLIP ViT-L/14).

    python benchmarks/store_layout.py [--frames 3600] [--repeat 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tspo_edge.storage.store import Store, f16_to_f32  # noqa: E402


def write_rows(path: Path, times, x16, z16) -> None:
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE frames (video_id INTEGER, t INTEGER, time REAL, x BLOB, z BLOB, "
                 "x_norm REAL, z_norm REAL, PRIMARY KEY (video_id, t))")
    xn = np.linalg.norm(x16.astype(np.float32), axis=1)
    zn = np.linalg.norm(z16.astype(np.float32), axis=1)
    with conn:
        conn.executemany("INSERT INTO frames VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(1, i, float(times[i]), x16[i].tobytes(), z16[i].tobytes(), float(xn[i]), float(zn[i]))
                          for i in range(len(times))])
    conn.close()


def load_rows(path: Path, d: int):
    conn = sqlite3.connect(str(path))
    rows = conn.execute("SELECT time, x, z, x_norm, z_norm FROM frames WHERE video_id = ? ORDER BY t", [1]).fetchall()
    conn.close()
    times = np.array([r[0] for r in rows], dtype=np.float64)
    x = f16_to_f32(b"".join(r[1] for r in rows), (len(rows), d))
    z = f16_to_f32(b"".join(r[2] for r in rows), (len(rows), d))
    xn = np.array([r[3] for r in rows], dtype=np.float32)
    zn = np.array([r[4] for r in rows], dtype=np.float32)
    return times, x, z, xn, zn


def timed(fn, repeat: int) -> float:
    fn()  # warm the OS page cache: ask reads a file that is usually cached
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3600)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in (384, 768):
            times = np.arange(a.frames, dtype=np.float64)
            x = rng.standard_normal((a.frames, d), dtype=np.float32)
            z = x + 0.1 * rng.standard_normal((a.frames, d), dtype=np.float32)
            blob_db = Path(tmp) / f"blob{d}.db"
            rows_db = Path(tmp) / f"rows{d}.db"
            with Store(blob_db) as s:
                vid = s.put_video(path=f"/v{d}.mp4", size=1, mtime=0.0, fingerprint="-", times=times,
                                  x=x, z=z, encoder_id="bench", agent_id="bench").id
            write_rows(rows_db, times, x.astype(np.float16), z.astype(np.float16))

            def load_blob():
                with Store(blob_db, readonly=True) as s:
                    return s.load_features(vid)

            f = load_blob()
            r = load_rows(rows_db, d)
            assert np.array_equal(f.x, r[1]) and np.array_equal(f.z, r[2])
            tb, tr = timed(load_blob, a.repeat), timed(lambda: load_rows(rows_db, d), a.repeat)
            res = {"frames": a.frames, "dim": d, "blob_ms": tb * 1e3, "rows_ms": tr * 1e3,
                   "rows_over_blob": tr / tb,
                   "blob_db_mb": blob_db.stat().st_size / 2**20,
                   "rows_db_mb": (rows_db.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob(f"rows{d}.db-*"))) / 2**20}
            results.append(res)
            print(f"T={a.frames} D={d}: blob per video {tb * 1e3:7.2f} ms, row per frame {tr * 1e3:7.2f} ms "
                  f"-> blob {tr / tb:5.1f}x faster", flush=True)
    out = {"results": results}
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
