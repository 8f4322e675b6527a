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
2. rescores exactly (from a copy of the stored float16 x, z and norms in the sidecar: the
   numbers `Store.load_features` + `scoring.score_frames` use; random access into SQLite blobs
   walks their overflow pages, ~10 ms a video) every frame whose hi_t reaches a threshold;
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
import mmap
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tspo_edge.errors import TspoError
from tspo_edge.scoring import EPS, TAU

try:  # int8 dot products with AVX-512 VNNI / AVX2 / NEON kernels; NumPy does the same slower
    import simsimd as _simsimd
except ImportError:  # pragma: no cover - exercised where simsimd is not installed
    _simsimd = None

TABLE = "search_segments"
STATE = "search_state"
ROUNDING_SLACK = 1e-4  # float32 rounding of u and the scale, in cosine units; plus 8*D*2^-24 below
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


# Per-row sidecar files of one generation: name -> (dtype, values per row for width d).
#   codes  int8 codes c of u (the scan reads only these: D bytes per frame)
#   aux    float32 [scale, |c|_1, x_norm, z_norm]
#   exact  float16 [x | z], the stored values themselves (exact rescoring of a few rows)
#   times  float64 seconds
PARTS = {"codes": (np.int8, lambda d: d), "aux": (np.float32, lambda d: 4),
         "exact": (np.float16, lambda d: 2 * d), "times": (np.float64, lambda d: 1)}


def _path(folder: Path, name: str, gen: int) -> Path:
    return folder / f"{name}-{gen}.{np.dtype(PARTS[name][0]).name}"


def _map(path: Path, dtype, width: int, rows: int, populate: bool) -> np.ndarray:
    if rows == 0:
        return np.zeros((0, width), dtype)
    nbytes = rows * width * np.dtype(dtype).itemsize
    flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), nbytes, flags=flags, prot=mmap.PROT_READ)
    return np.frombuffer(mm, dtype=dtype).reshape(rows, width)


def _maps(folder: Path, gen: int, rows: int, dim: int) -> dict[str, np.ndarray]:
    """Read-only maps of a generation's files, first `rows` rows. The scanned files (codes, aux)
    are populated at map time: faulting 1 GB in page by page costs more than the scan itself."""
    return {name: _map(_path(folder, name, gen), dtype, width(dim), rows, populate=name in ("codes", "aux"))
            for name, (dtype, width) in PARTS.items()}


_CACHE: dict[str, tuple[int, int, int, dict[str, np.ndarray]]] = {}  # folder -> (gen, rows, dim, maps)


def _cached_maps(folder: Path, gen: int, rows: int, dim: int) -> dict[str, np.ndarray]:
    """Maps kept across searches in this process (a server maps once); remapped when the
    generation changes or rows were appended. Rows below the committed end never change."""
    key = str(folder)
    hit = _CACHE.get(key)
    if hit is None or hit[0] != gen or hit[1] < rows or hit[2] != dim:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = hit = (gen, rows, dim, _maps(folder, gen, rows, dim))
    return {name: a[:rows] for name, a in hit[3].items()}


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
        codes, qa = quantize(unit_sum(f.z, f.x, f.z_norm, f.x_norm))
        parts = {"codes": codes, "aux": np.column_stack([qa, f.x_norm, f.z_norm]),
                 # float32 from float16 and back is exact: these are the stored values
                 "exact": np.concatenate([f.x, f.z], axis=1).astype(np.float16), "times": f.times[:, None]}
        batch.append((vid, key, parts, _max_inv(f.z_norm, f.x_norm)))
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
    """Cut a crashed writer's unreferenced tail so every file ends at row `end`."""
    for name, (dtype, width) in PARTS.items():
        path, size = _path(folder, name, gen), end * width(dim) * np.dtype(dtype).itemsize
        if not path.exists():
            path.touch()
        if path.stat().st_size != size:
            with open(path, "r+b") as fh:
                fh.truncate(size)


def _write_parts(folder: Path, gen: int, mode: str, chunks) -> None:
    """Write (or append) row chunks {name: array} to the generation's files, then fsync them."""
    handles = {name: open(_path(folder, name, gen), mode) for name in PARTS}
    try:
        for parts in chunks:
            for name, (dtype, _) in PARTS.items():
                handles[name].write(np.ascontiguousarray(parts[name], dtype=dtype).tobytes())
        for fh in handles.values():
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        for fh in handles.values():
            fh.close()


def _commit_batch(store, folder: Path, batch) -> int:
    db, conn = store.db, store.db.conn
    written = 0
    with _Tx(conn, write=True):
        gen = _gen(db)
        dim = int(batch[0][2]["codes"].shape[1])
        old_dim = _state(db, "dim")
        if old_dim is not None and int(old_dim) != dim and db.execute(f"SELECT 1 FROM {TABLE} LIMIT 1").fetchone():
            raise SearchError(f"{store.path}: search data has width {old_dim}, new videos {dim}; "
                              f"remove {folder} and run refresh again")
        end = _committed_end(db)
        _prepare_append(folder, gen, dim, end)
        rows, chunks = [], []
        for vid, key, parts, max_inv in batch:
            if _live_keys_one(db, vid) != key:  # re-indexed while we encoded it: next refresh
                continue
            chunks.append(parts)
            rows.append({"video_id": vid, "indexed_at": key[0], "agent_id": key[1], "frames": key[2],
                         "dim": key[3], "digest": key[4], "row0": end, "gen": gen, "max_inv": max_inv})
            end += len(parts["codes"])
        _write_parts(folder, gen, "ab", chunks)
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
        file_rows = _committed_end(db)
        segs = db.execute(f"SELECT video_id, row0, frames FROM {TABLE} ORDER BY row0").fetchall()
        live = sum(int(s[2]) for s in segs)
        if file_rows - live <= COMPACT_RATIO * live and not (live == 0 and file_rows > 0):
            return False
        new = gen + 1
        src = _maps(folder, gen, file_rows, dim)
        end = 0
        for vid, row0, n in segs:
            db.execute(f"UPDATE {TABLE} SET row0 = ?, gen = ? WHERE video_id = ?", [end, new, vid])
            end += int(n)
        _write_parts(folder, new, "wb", ({name: a[row0:row0 + n] for name, a in src.items()}
                                         for _, row0, n in segs))
        del src
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
    equals scoring every indexed frame with `scoring.score_frames` (see the module docstring).
    On a writable store, videos with no current search data are added first (`refresh_first`).
    """
    if top < 1 or per_video < 1 or nms_seconds < 0:
        raise SearchError(f"bad search limits: top={top}, per_video={per_video}, nms_seconds={nms_seconds}")
    top_videos = top if top_videos is None else top_videos
    threads = threads or 1  # one thread: a threaded scan stalls on a busy core (see docs/search.md)
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
        try:
            maps = _cached_maps(search_dir(store), gen, n_rows, dim)
        except (OSError, ValueError) as e:
            raise SearchError(f"{search_dir(store)}: search data unreadable ({e}); run refresh") from None
        codes, aux = maps["codes"], maps["aux"]
        # 1. scan: hi = upper bound of the exact cosine sum, per live row
        ts = time.perf_counter()
        hi = np.full(n_rows, -np.inf, np.float32)
        # float32 dot products of D terms with |u| <= 2, |q| = 1: error <= 2*D*2^-24 each (scan, rescore)
        slack = ROUNDING_SLACK + 8 * dim * 2.0**-24 + EPS * max(float(s[6] or 0.0) for s in segs) / qn
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
            _rescore(maps, new, row0, dim, q, tau, exact, cache_rows)
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
            # fewer videos than asked for: proven once every video has a rescored frame
            full_v = len(videos) == top_videos or (videos and len(best) == len(segs))
            need = min(moments[-1].score if len(moments) == top else -np.inf,
                       videos[-1].best_score if full_v else -np.inf) * tau
            if thr <= need or len(rows) == live_rows:
                break
            if np.isfinite(need):
                thr = need
            else:  # too few moments or videos so far: widen the candidate set 8x, not to everything
                want *= 8
                lower = _initial_threshold(hi, want, live_rows)
                thr = lower if lower < thr else -np.inf
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


def _rescore(maps, rows: list[int], row0, dim, q, tau, exact, cache_rows) -> None:
    """Exact scores of some rows from the stored float16 values (one gather per file)."""
    if not rows:
        return
    rows_a = np.array(sorted(rows), np.int64)
    for i in range(0, len(rows_a), 1 << 14):  # bounded gathers: 16 k rows at a time
        g = rows_a[i:i + (1 << 14)]
        xz, aux, times = maps["exact"][g], maps["aux"][g], maps["times"][g, 0]
        s = exact_scores(xz[:, :dim], xz[:, dim:], aux[:, 2], aux[:, 3], q, tau)
        frames = g - row0[np.searchsorted(row0, g, side="right") - 1]
        for gi, fi, si, ti in zip(g.tolist(), frames.tolist(), s.tolist(), times.tolist()):
            exact[gi] = si
            cache_rows[gi] = (fi, ti)
