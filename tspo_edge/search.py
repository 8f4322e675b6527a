"""Archive-wide search: the agent's score of every indexed frame against one question.

The agent scores frame t for question q as s_t = (cos(z_t, q) + cos(x_t, q)) / tau. Since
cos(z,q) + cos(x,q) = (z/|z| + x/|x|) . q/|q|, one question-independent *unit-sum* vector
u_t = z_t/|z_t| + x_t/|x_t| per frame turns a search of the whole archive into one inner
product per frame. This module keeps those vectors, quantised to int8 (one scale per row), in a
sidecar folder next to the index (`<db>.search/`), memory-mapped at search time, and records
which rows belong to which video in a table of the index itself (`search_segments`).

A search (NumPy only; SimSIMD's int8 kernels when installed):

1. scans every live row's int8 code against the int8 question: an approximate score a_t and a
   proven bound |exact_t - a_t| <= e_t (quantisation of u and q, the scorer's epsilon, float
   rounding), so hi_t = a_t + e_t bounds the exact score from above;
2. rescores exactly (float16 features read straight from the `features` blobs of the index,
   the numbers `Store.load_features` + `agent.score_frames` would use) every frame whose
   hi_t reaches a threshold;
3. keeps moments greedily, best first, skipping any frame within `nms_seconds` of a moment
   already kept in the same video and any video that has `per_video` moments already;
4. stops when the threshold is at or below the last kept moment's score (and the last listed
   video's best score): every frame left out is then proven to score below what was returned,
   so the answer is the brute-force answer. Otherwise it lowers the threshold and repeats.

Consistency: triggers on the `features` table delete a video's segment inside the very
transaction that rewrites, fails or removes the video, so stale rows are never searched. A segment
is also keyed by video id, `indexed_at`, agent id, frame count, width and a digest of the stored
norms, which a search checks against the `videos` row and `refresh` checks in full. Videos that have
no current segment are counted in `SearchResult.unsearched` and, on a writable store, brought in
by `refresh(store)` first. `refresh(store)` is what a writer calls after writing videos.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tspo_edge.errors import TspoError

try:  # int8 dot products with AVX-512 VNNI / AVX2 / NEON kernels; NumPy does the same slower
    import simsimd as _simsimd
except ImportError:  # pragma: no cover - exercised where simsimd is not installed
    _simsimd = None

TAU = 0.025          # tspo_edge.agent.TAU (not imported: that module imports torch)
EPS = 1e-6           # tspo_edge.agent.EPS: added to the product of norms
TABLE = "search_segments"
STATE = "search_state"
ROUNDING_SLACK = 2e-4  # float32 rounding of u, the scan and the rescore, in cosine units (D <= 4096)
COMPACT_RATIO = 0.25   # rewrite the sidecar when dead rows exceed this fraction of live rows


class SearchError(TspoError):
    """The search data cannot be used or built (bad question, unwritable sidecar)."""


class Moment(NamedTuple):
    video_id: int
    path: str
    time: float      # seconds
    score: float     # the agent's logit, (cos(z,q) + cos(x,q)) / tau
    frame: int       # index of the frame in the video's stored features


class VideoHit(NamedTuple):
    video_id: int
    path: str
    best_score: float


@dataclass
class SearchResult:
    moments: list[Moment]
    videos: list[VideoHit]
    frames: int = 0                 # frames searched
    unsearched: int = 0             # indexed videos with no current search data (skipped)
    rescored: int = 0               # frames scored exactly
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds

    def to_dict(self) -> dict:
        return {"moments": [m._asdict() for m in self.moments],
                "videos": [v._asdict() for v in self.videos],
                "frames": self.frames, "unsearched": self.unsearched, "rescored": self.rescored,
                "timings": self.timings}


@dataclass
class RefreshSummary:
    added: int = 0       # segments written
    removed: int = 0     # stale segments dropped
    frames: int = 0      # live frames after the refresh
    compacted: bool = False


def search_dir(store) -> Path:
    """The sidecar folder of an index: `<db>.search/` beside the database file."""
    return Path(str(store.path) + ".search")


# ----------------------------------------------------------------------------- schema

def _ensure_tables(db) -> None:
    # plain SQL: sqlite-utils' writers commit through `with conn:`, which would end our transaction
    db.execute(f"CREATE TABLE IF NOT EXISTS [{TABLE}] (video_id INTEGER PRIMARY KEY, indexed_at TEXT, "
               "agent_id TEXT, frames INTEGER, dim INTEGER, digest TEXT, row0 INTEGER, gen INTEGER, "
               "max_inv FLOAT)")
    db.execute(f"CREATE TABLE IF NOT EXISTS [{STATE}] (key TEXT PRIMARY KEY, value TEXT)")
    # Any write of a video's features drops its segment in the writer's own transaction, so
    # stale rows are never searched even before `refresh` runs (and whatever the timestamps say).
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        db.execute(f"CREATE TRIGGER IF NOT EXISTS [{TABLE}_{event.lower()}] AFTER {event} ON features "
                   f"BEGIN DELETE FROM [{TABLE}] WHERE video_id = {row}.video_id; END")


def _set_state(db, key: str, value) -> None:
    db.execute(f"INSERT OR REPLACE INTO {STATE} (key, value) VALUES (?, ?)", [key, str(value)])


def _state(db, key: str) -> str | None:
    row = db.execute(f"SELECT value FROM {STATE} WHERE key = ?", [key]).fetchone()
    return None if row is None else row[0]


def _files(folder: Path, gen: int) -> tuple[Path, Path]:
    return folder / f"codes-{gen}.i8", folder / f"aux-{gen}.f32"


class _Tx:
    """A transaction on the store's connection (read: deferred; write: immediate)."""

    def __init__(self, conn: sqlite3.Connection, write: bool = False):
        self.conn, self.write, self.own = conn, write, False

    def __enter__(self):
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
            self.own = True
        return self

    def __exit__(self, exc_type, *exc):
        if self.own:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


# ----------------------------------------------------------------------------- building

def _digest(xn_blob: bytes, zn_blob: bytes) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(xn_blob)
    h.update(zn_blob)
    return h.hexdigest()


def _live_keys(db) -> dict[int, tuple]:
    """video id -> (indexed_at, agent_id, frames, dim, digest) for every indexed video."""
    rows = db.execute(
        "SELECT v.id, v.indexed_at, v.agent_id, f.frames, f.dim, f.x_norm, f.z_norm FROM videos v "
        "JOIN features f ON f.video_id = v.id WHERE v.status = 'indexed'").fetchall()
    return {int(r[0]): (r[1], r[2], int(r[3]), int(r[4]), _digest(r[5], r[6])) for r in rows}


def unit_sum(z: np.ndarray, x: np.ndarray, z_norm: np.ndarray, x_norm: np.ndarray) -> np.ndarray:
    """u = z/|z| + x/|x| per row (a zero row contributes 0, as the scorer's epsilon makes it)."""
    zn = np.asarray(z_norm, np.float32)[:, None]
    xn = np.asarray(x_norm, np.float32)[:, None]
    u = np.divide(z, zn, out=np.zeros_like(z, dtype=np.float32), where=zn > 0)
    u += np.divide(x, xn, out=np.zeros_like(x, dtype=np.float32), where=xn > 0)
    return u


def quantize(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes c and float32 aux [scale, |c|_1] per row, u ~= scale * c."""
    peak = np.abs(u).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(u / scale[:, None]), -127, 127).astype(np.int8)
    l1 = np.abs(codes.astype(np.int32)).sum(axis=1).astype(np.float32)
    return codes, np.stack([scale, l1], axis=1).astype(np.float32)


def _max_inv(zn: np.ndarray, xn: np.ndarray) -> float:
    inv = np.zeros(len(zn), np.float64)
    inv += np.divide(1.0, zn, out=np.zeros(len(zn)), where=zn > 0)
    inv += np.divide(1.0, xn, out=np.zeros(len(xn)), where=xn > 0)
    return float(inv.max()) if len(inv) else 0.0


def refresh(store, *, batch_frames: int = 1 << 18) -> RefreshSummary:
    """Bring the search data of `store` up to date with its stored features.

    Drops segments of videos that were re-indexed, failed or removed; encodes videos that have
    none; rewrites the sidecar when dead rows pile up. Features are read outside the write lock;
    each batch is appended and committed under a short write lock after re-checking that the
    videos did not change meanwhile, so an indexer writing beside it is never blocked for long.
    """
    if store.readonly:
        raise SearchError(f"{store.path}: opened read-only; the search data cannot be refreshed")
    db, conn = store.db, store.db.conn
    folder = search_dir(store)
    try:
        folder.mkdir(exist_ok=True)
    except OSError as e:
        raise SearchError(f"{folder}: cannot create the search folder ({e.strerror or e})") from None
    with _Tx(conn, write=True):
        _ensure_tables(db)
    summary = RefreshSummary()
    with _Tx(conn):
        live = _live_keys(db)
        have = {int(r[0]): tuple(r[1:]) for r in db.execute(
            f"SELECT video_id, indexed_at, agent_id, frames, dim, digest FROM {TABLE}").fetchall()}
    stale = [v for v, key in have.items() if live.get(v) != key]
    todo = [v for v, key in live.items() if have.get(v) != key]
    dims = {key[3] for key in live.values()}
    if len(dims) > 1:
        raise SearchError(f"{store.path}: indexed videos have different widths {sorted(dims)}")
    with _Tx(conn, write=True):
        if stale:
            db.conn.executemany(f"DELETE FROM {TABLE} WHERE video_id = ?", [[v] for v in stale])
            summary.removed = len(stale)
    batch: list[tuple[int, tuple, np.ndarray, np.ndarray, float]] = []
    rows_in_batch = 0
    for vid in todo:
        with _Tx(conn):  # one snapshot: the key and the features it describes
            key = _live_keys_one(db, vid)
            if key is None:
                continue
            f = store.load_features(vid)
        codes, aux = quantize(unit_sum(f.z, f.x, f.z_norm, f.x_norm))
        batch.append((vid, key, codes, aux, _max_inv(f.z_norm, f.x_norm)))
        rows_in_batch += len(codes)
        if rows_in_batch >= batch_frames:
            summary.added += _commit_batch(store, folder, batch)
            batch, rows_in_batch = [], 0
    if batch:
        summary.added += _commit_batch(store, folder, batch)
    summary.compacted = _maybe_compact(store, folder)
    with _Tx(conn):
        summary.frames = int(db.execute(f"SELECT COALESCE(SUM(frames), 0) FROM {TABLE}").fetchone()[0])
    return summary


def _live_keys_one(db, vid: int) -> tuple | None:
    r = db.execute(
        "SELECT v.indexed_at, v.agent_id, f.frames, f.dim, f.x_norm, f.z_norm FROM videos v "
        "JOIN features f ON f.video_id = v.id WHERE v.status = 'indexed' AND v.id = ?", [vid]).fetchone()
    return None if r is None else (r[0], r[1], int(r[2]), int(r[3]), _digest(r[4], r[5]))


def _gen(db) -> int:
    g = _state(db, "gen")
    return int(g) if g is not None else 0


def _committed_end(db) -> int:
    """Rows committed to the current generation's files, dead ones included. Rows below it are
    never rewritten (an older snapshot may still read them); a tail past it is a crashed append."""
    end = _state(db, "end")
    return int(end) if end is not None else 0


def _prepare_append(folder: Path, gen: int, dim: int, end: int) -> None:
    """Cut a crashed writer's unreferenced tail so both files end at row `end`."""
    for path, width in zip(_files(folder, gen), (dim, 8)):
        if not path.exists():
            path.touch()
        if path.stat().st_size != end * width:
            with open(path, "r+b") as fh:
                fh.truncate(end * width)


def _commit_batch(store, folder: Path, batch) -> int:
    db, conn = store.db, store.db.conn
    written = 0
    with _Tx(conn, write=True):
        gen = _gen(db)
        dim = int(batch[0][2].shape[1])
        old_dim = _state(db, "dim")
        if old_dim is not None and int(old_dim) != dim and db.execute(f"SELECT 1 FROM {TABLE} LIMIT 1").fetchone():
            raise SearchError(f"{store.path}: search data has width {old_dim}, new videos {dim}; "
                              f"remove {folder} and run refresh again")
        end = _committed_end(db)
        codes_path, aux_path = _files(folder, gen)
        _prepare_append(folder, gen, dim, end)
        rows = []
        with open(codes_path, "ab") as fc, open(aux_path, "ab") as fa:
            for vid, key, codes, aux, max_inv in batch:
                if _live_keys_one(db, vid) != key:  # re-indexed while we encoded it: next refresh
                    continue
                fc.write(codes.tobytes())
                fa.write(aux.tobytes())
                rows.append({"video_id": vid, "indexed_at": key[0], "agent_id": key[1], "frames": key[2],
                             "dim": key[3], "digest": key[4], "row0": end, "gen": gen, "max_inv": max_inv})
                end += len(codes)
            fc.flush()
            fa.flush()
            os.fsync(fc.fileno())
            os.fsync(fa.fileno())
        for row in rows:
            db.execute(f"INSERT OR REPLACE INTO {TABLE} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       list(row.values()))
        written = len(rows)
        _set_state(db, "gen", gen)
        _set_state(db, "dim", dim)
        _set_state(db, "end", end)
    return written


def _maybe_compact(store, folder: Path) -> bool:
    """Rewrite the live rows into a new generation when dead rows exceed COMPACT_RATIO of live."""
    db, conn = store.db, store.db.conn
    with _Tx(conn, write=True):
        gen = _gen(db)
        dim_s = _state(db, "dim")
        if dim_s is None:
            return False
        dim = int(dim_s)
        codes_path, aux_path = _files(folder, gen)
        file_rows = _committed_end(db)
        segs = db.execute(f"SELECT video_id, row0, frames FROM {TABLE} ORDER BY row0").fetchall()
        live = sum(int(s[2]) for s in segs)
        if file_rows - live <= COMPACT_RATIO * live and not (live == 0 and file_rows > 0):
            return False
        new = gen + 1
        new_codes, new_aux = _files(folder, new)
        src_c = np.memmap(codes_path, np.int8, "r", shape=(file_rows, dim)) if file_rows else None
        src_a = np.memmap(aux_path, np.float32, "r", shape=(file_rows, 2)) if file_rows else None
        end = 0
        with open(new_codes, "wb") as fc, open(new_aux, "wb") as fa:
            for vid, row0, n in segs:
                fc.write(np.ascontiguousarray(src_c[row0:row0 + n]).tobytes())
                fa.write(np.ascontiguousarray(src_a[row0:row0 + n]).tobytes())
                db.execute(f"UPDATE {TABLE} SET row0 = ?, gen = ? WHERE video_id = ?", [end, new, vid])
                end += int(n)
            fc.flush()
            fa.flush()
            os.fsync(fc.fileno())
            os.fsync(fa.fileno())
        del src_c, src_a
        _set_state(db, "gen", new)
        _set_state(db, "end", end)
    # a reader may still hold generation `gen` (its snapshot began before this commit): keep it,
    # drop older ones
    for p in folder.glob("*-*.*"):
        stem = p.stem.rsplit("-", 1)[-1]
        if stem.isdigit() and int(stem) < gen:
            p.unlink(missing_ok=True)
    return True


# ----------------------------------------------------------------------------- searching

def _question(q, dim: int | None) -> np.ndarray:
    q = np.asarray(q, dtype=np.float32)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 1:
        raise SearchError(f"question embedding must be [1, D] or [D], got shape {tuple(q.shape)}")
    if dim is not None and q.shape[0] != dim:
        raise SearchError(f"question embedding has width {q.shape[0]}, the index {dim}")
    if not np.isfinite(q).all() or not np.any(q):
        raise SearchError("question embedding is zero or not finite")
    return q


def _dot_int8(codes: np.ndarray, k8: np.ndarray, out: np.ndarray, threads: int) -> None:
    if _simsimd is not None:
        _simsimd.cdist(k8[None, :], codes, metric="dot", out=out[None, :], out_dtype="float32", threads=threads)
        return
    kf = k8.astype(np.float32)
    step = 1 << 16
    for i in range(0, len(codes), step):
        np.matmul(codes[i:i + step].astype(np.float32), kf, out=out[i:i + step])


class _Video:
    __slots__ = ("id", "path", "row0", "frames", "xz", "times", "xn", "zn")


def _read_rows(conn, vid: int, frames: np.ndarray, dim: int, t_total: int):
    """Exact float16 x and z rows, their stored norms and times for some frames of one video."""
    out = {}
    dense = len(frames) * 4 > t_total
    for col, width, dtype in (("x", dim * 2, np.float16), ("z", dim * 2, np.float16),
                              ("x_norm", 4, np.float32), ("z_norm", 4, np.float32), ("times", 8, np.float64)):
        with conn.blobopen("features", col, vid, readonly=True) as blob:
            if dense:
                a = np.frombuffer(blob.read(), dtype=dtype).reshape(t_total, -1)[frames]
            else:
                parts = []
                for f in frames:
                    blob.seek(int(f) * width)
                    parts.append(blob.read(width))
                a = np.frombuffer(b"".join(parts), dtype=dtype).reshape(len(frames), -1)
        out[col] = a
    return out


def exact_scores(x: np.ndarray, z: np.ndarray, x_norm: np.ndarray, z_norm: np.ndarray, q: np.ndarray,
                 tau: float = TAU) -> np.ndarray:
    """score_frames' formula for one question row, in NumPy (same numbers, no torch)."""
    qn = float(np.linalg.norm(q))
    event = (z.astype(np.float32) @ q) / (z_norm * qn + EPS)
    clip = (x.astype(np.float32) @ q) / (x_norm * qn + EPS)
    return ((event + clip) / tau).astype(np.float32)


def _nms(cands, top: int, per_video: int, nms_seconds: float) -> list[Moment]:
    kept: list[Moment] = []
    by_video: dict[int, list[float]] = {}
    for m in cands:  # best first
        times = by_video.setdefault(m.video_id, [])
        if len(times) >= per_video or any(abs(m.time - t) < nms_seconds for t in times):
            continue
        times.append(m.time)
        kept.append(m)
        if len(kept) == top:
            break
    return kept


def search(store, q, *, top: int = 10, per_video: int = 3, nms_seconds: float = 30.0,
           top_videos: int | None = None, tau: float = TAU, refresh_first: bool = True,
           threads: int | None = None, candidates: int = 256) -> SearchResult:
    """The `top` best moments across the archive for question embedding `q` ([1,D] or [D]).

    Moments are kept best first with per-video non-maximum suppression: none within
    `nms_seconds` of one already kept in its video, at most `per_video` per video. `videos`
    lists the `top_videos` (default `top`) videos whose best frame scores highest. The result
    equals scoring every indexed frame with `agent.score_frames` (see the module docstring).
    On a writable store, videos with no current search data are added first (`refresh_first`).
    """
    if top < 1 or per_video < 1 or nms_seconds < 0:
        raise SearchError(f"bad search limits: top={top}, per_video={per_video}, nms_seconds={nms_seconds}")
    top_videos = top if top_videos is None else top_videos
    threads = threads or min(4, os.cpu_count() or 1)
    t0 = time.perf_counter()
    db, conn = store.db, store.db.conn
    timings: dict[str, float] = {}
    names = set(db.table_names())
    if "features" not in names:
        return SearchResult([], [], timings={"total_ms": 0.0})
    if refresh_first and not store.readonly and _unsearched(db, names) > 0:
        refresh(store)
        names = set(db.table_names())
        timings["refresh_ms"] = (time.perf_counter() - t0) * 1e3
    with _Tx(conn):  # one snapshot for segments, sidecar generation and the features rescored
        unsearched = _unsearched(db, names)
        if TABLE not in names:
            _question(q, None)
            return SearchResult([], [], unsearched=unsearched, timings={"total_ms": _ms(t0)})
        segs = db.execute(
            f"SELECT s.video_id, v.path, s.row0, s.frames, s.dim, s.gen, s.max_inv FROM {TABLE} s "
            f"JOIN videos v ON v.id = s.video_id AND v.status = 'indexed' AND v.indexed_at IS s.indexed_at "
            f"AND v.agent_id IS s.agent_id JOIN features f ON f.video_id = s.video_id "
            f"AND f.frames = s.frames AND f.dim = s.dim ORDER BY s.row0").fetchall()
        if not segs:
            _question(q, None)
            return SearchResult([], [], unsearched=unsearched, timings={"total_ms": _ms(t0)})
        gens = {int(s[5]) for s in segs}
        if len(gens) != 1:  # cannot happen: compaction moves every segment in one transaction
            raise SearchError(f"{store.path}: search data spans generations {sorted(gens)}; run refresh")
        gen, dim = gens.pop(), int(segs[0][4])
        q = _question(q, dim)
        qn = float(np.linalg.norm(q))
        qh = q / qn
        r = float(np.abs(qh).max()) / 127.0
        k8 = np.clip(np.rint(qh / r), -127, 127).astype(np.int8)
        q_l1 = float(np.abs(qh).sum())
        vid = np.array([s[0] for s in segs], np.int64)
        row0 = np.array([s[2] for s in segs], np.int64)
        nfr = np.array([s[3] for s in segs], np.int64)
        paths = [s[1] for s in segs]
        n_rows = int((row0 + nfr).max())
        codes_path, aux_path = _files(search_dir(store), gen)
        try:
            codes = np.memmap(codes_path, np.int8, "r", shape=(n_rows, dim))
            aux = np.memmap(aux_path, np.float32, "r", shape=(n_rows, 2))
        except (OSError, ValueError) as e:
            raise SearchError(f"{codes_path}: search data unreadable ({e}); run refresh") from None
        # 1. scan: hi = upper bound of the exact cosine sum, per live row
        ts = time.perf_counter()
        hi = np.full(n_rows, -np.inf, np.float32)
        slack = ROUNDING_SLACK + EPS * max(float(s[6] or 0.0) for s in segs) / qn
        for a, b in _ranges(row0, nfr):
            part = hi[a:b]
            _dot_int8(codes[a:b], k8, part, threads)
            sc = aux[a:b, 0]
            # a = s*r*dot; |u.q - a| <= s*(r/2)*|c|_1 + (s/2)*|q|_1
            part *= np.float32(r)
            part += aux[a:b, 1] * np.float32(r / 2)
            part += np.float32(q_l1 / 2)
            part *= sc
            part += np.float32(slack)
        timings["scan_ms"] = _ms(ts)
        # 2-4. rescore above a threshold until the threshold is proven low enough
        ts = time.perf_counter()
        live_rows = int(nfr.sum())
        want = max(candidates, 4 * top * per_video, 4 * top_videos)
        thr = _initial_threshold(hi, want, live_rows)
        exact: dict[int, float] = {}
        cache_rows: dict[int, tuple[int, float]] = {}   # global row -> (frame, time)
        while True:
            rows = np.flatnonzero(hi >= thr) if np.isfinite(thr) else np.flatnonzero(hi > -np.inf)
            new = [int(x) for x in rows if int(x) not in exact]
            _rescore(conn, new, row0, nfr, vid, dim, qn, q, tau, exact, cache_rows)
            order = sorted(exact.items(), key=lambda kv: -kv[1])
            cands = []
            for g, s in order:
                i = int(np.searchsorted(row0, g, side="right") - 1)
                frame, t = cache_rows[g]
                cands.append(Moment(int(vid[i]), paths[i], t, s, frame))
            moments = _nms(cands, top, per_video, nms_seconds)
            best: dict[int, Moment] = {}
            for m in cands:
                best.setdefault(m.video_id, m)
            videos = [VideoHit(m.video_id, m.path, m.score) for m in list(best.values())[:top_videos]]
            # scores are logits (cosine sum / tau); the bound hi is in cosine units
            need = min(moments[-1].score if len(moments) == top else -np.inf,
                       videos[-1].best_score if len(videos) == top_videos else -np.inf) * tau
            if thr <= need or len(rows) == live_rows:
                break
            thr = need if np.isfinite(need) else -np.inf
        timings["rescore_ms"] = _ms(ts)
    timings["total_ms"] = _ms(t0)
    return SearchResult(moments, videos, frames=live_rows, unsearched=unsearched, rescored=len(exact),
                        timings=timings)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)


def _unsearched(db, names: set[str]) -> int:
    if TABLE not in names:
        return int(db.execute("SELECT COUNT(*) FROM videos WHERE status = 'indexed'").fetchone()[0])
    return int(db.execute(
        f"SELECT COUNT(*) FROM videos v LEFT JOIN {TABLE} s ON s.video_id = v.id "
        f"AND v.indexed_at IS s.indexed_at AND v.agent_id IS s.agent_id "
        f"WHERE v.status = 'indexed' AND s.video_id IS NULL").fetchone()[0])


def _ranges(row0: np.ndarray, nfr: np.ndarray):
    """Contiguous live row ranges (segments sorted by row0, adjacent ones merged)."""
    a, b = int(row0[0]), int(row0[0] + nfr[0])
    for s, n in zip(row0[1:].tolist(), nfr[1:].tolist()):
        if s == b:
            b += n
        else:
            yield a, b
            a, b = s, s + n
    yield a, b


def _initial_threshold(hi: np.ndarray, want: int, live_rows: int) -> float:
    if live_rows <= want:
        return -np.inf
    stride = max(1, len(hi) // (1 << 16))
    sample = hi[::stride]
    k = max(1, min(len(sample), math.ceil(want / stride)))
    return float(np.partition(sample, -k)[-k])


def _rescore(conn, rows: list[int], row0, nfr, vid, dim, qn, q, tau, exact, cache_rows) -> None:
    if not rows:
        return
    rows_a = np.array(sorted(rows), np.int64)
    seg = np.searchsorted(row0, rows_a, side="right") - 1
    for i in np.unique(seg):
        g = rows_a[seg == i]
        frames = g - row0[i]
        d = _read_rows(conn, int(vid[i]), frames, dim, int(nfr[i]))
        s = exact_scores(d["x"], d["z"], d["x_norm"][:, 0], d["z_norm"][:, 0], q, tau)
        for gi, fi, si, ti in zip(g.tolist(), frames.tolist(), s.tolist(), d["times"][:, 0].tolist()):
            exact[gi] = si
            cache_rows[gi] = (fi, ti)
