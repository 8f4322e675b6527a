"""The search cache: per-frame int8 codes (and a float16 copy of x, z) that make a search of the
whole archive one memory-mapped scan (tspo_edge.storage.search). A cache, never a second thing to keep:

- The index file is the one source of truth. Everything here is rebuilt from its `features`
  table whenever it is missing, stale, truncated or corrupt, by `search`, `serve` and `index`
  alike. A backup is the `.db` file alone.
- It lives in a per-user cache folder keyed by the index's absolute path,
  `$XDG_CACHE_HOME/tspo-edge/search/<hash>/` (`~/.cache/...`; `$TSPO_EDGE_CACHE/search/<hash>/` where that is set), never beside the index or in the working folder.
- The index says what the cache must hold (store.py's schema 3): `search_state` records the
  cache format, the `cache_id` of the folder's copy (a copied `.db` finds no folder with its id),
  the generation, width and committed row count; `search_segments` records, per video, its rows
  and the CRC-32 of those rows in every file. Before a process maps the cache it checks the id,
  the file sizes (truncated?) and the CRC of every live segment (corrupt?); a stamp in the folder
  (`verified.json`: the files' size, mtime and inode when last verified) spares a later process
  that check while the files are unchanged.
- Triggers on `features` drop a video's segment inside the writer's own transaction, so stale rows
  are never searched; a segment is also keyed by `indexed_at`, agent id, frames, width and a digest
  of the stored norms.

Files of one generation: name -> (dtype, values per row for width d).
  codes  int8 codes c of u (the scan reads only these: D bytes per frame)
  aux    float32 [scale, |c|_1, x_norm, z_norm]
  exact  float16 [x | z], the stored values themselves (exact rescoring of a few rows)
  times  float64 seconds
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import secrets
import sqlite3
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tspo_edge.errors import SearchError, StoreDamagedError, TspoError
from tspo_edge.paths import user_cache_dir
from tspo_edge.storage.store import Store

CACHE_FORMAT = 1       # bump when the files' layout changes: every cache is then rebuilt
COMPACT_RATIO = 0.25   # rewrite the files when dead rows exceed this fraction of live rows
TABLE = "search_segments"
STATE = "search_state"

PARTS = {"codes": (np.int8, lambda d: d), "aux": (np.float32, lambda d: 4),
         "exact": (np.float16, lambda d: 2 * d), "times": (np.float64, lambda d: 1)}


class CacheUnusable(Exception):
    """The cache cannot be used as it is (the reason); it is rebuilt, or the index read directly."""


@dataclass
class RefreshSummary:
    added: int = 0       # segments written
    removed: int = 0     # stale segments dropped
    frames: int = 0      # live frames after the refresh
    compacted: bool = False
    rebuilt: str | None = None                           # why the cache was started anew
    damaged: list[str] = field(default_factory=list)     # videos left out: their stored features fail the check


# ----------------------------------------------------------------------------- where

def cache_root() -> Path:
    return user_cache_dir() / "search"


def search_dir(store) -> Path:
    """The cache folder of an index: one per index path, in the user's cache folder."""
    key = hashlib.blake2b(str(Path(store.path).resolve()).encode(), digest_size=10).hexdigest()
    return cache_root() / key


def _path(folder: Path, name: str, gen: int) -> Path:
    return folder / f"{name}-{gen}.{np.dtype(PARTS[name][0]).name}"


# ----------------------------------------------------------------------------- state in the index

def has_tables(db) -> bool:
    """The index has this cache's tables (schema 3 on; an older one opened read-only has none,
    or the older search tables of a sidecar beside it, which are not read)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return row is not None and str(row[0]).isdigit() and int(row[0]) >= 3 and {TABLE, STATE} <= set(db.table_names())


def state(db) -> dict[str, str]:
    return {k: v for k, v in db.execute(f"SELECT key, value FROM {STATE}").fetchall()}


def _set_state(db, key: str, value) -> None:
    db.execute(f"INSERT OR REPLACE INTO {STATE} (key, value) VALUES (?, ?)", [key, str(value)])


def _folder_id(folder: Path) -> str | None:
    try:
        return (folder / "cache-id").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


# ----------------------------------------------------------------------------- checking and mapping

_MAPS: dict[tuple, tuple[int, dict[str, np.ndarray]]] = {}   # (folder, id, gen, dim, stats) -> (rows, maps)
_VERIFIED: dict[tuple, set] = {}                            # (folder, id, gen, stats) -> segments checked
_LOCK = threading.Lock()                                     # a server's request threads share both


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


def _stats(folder: Path, gen: int) -> tuple:
    out = []
    for name in PARTS:
        st = os.stat(_path(folder, name, gen))
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def crc_of(parts: dict[str, np.ndarray]) -> int:
    """CRC-32 of a segment's rows in every file, in file order (the bytes as written)."""
    c = 0
    for name, (dtype, _) in PARTS.items():
        c = zlib.crc32(np.ascontiguousarray(parts[name], dtype=dtype), c)
    return c


def _stamp_key(cid: str, gen: int, stats: tuple) -> str:
    return json.dumps([cid, gen, [list(s) for s in stats]])


def _load_stamp(folder: Path, cid: str, gen: int, stats: tuple) -> set:
    key = (str(folder), cid, gen, stats)
    if key in _VERIFIED:
        return _VERIFIED[key]
    try:
        d = json.loads((folder / "verified.json").read_text())
        if d.get("key") == _stamp_key(cid, gen, stats):
            return {tuple(s) for s in d["segments"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return set()


def _save_stamp(folder: Path, cid: str, gen: int, stats: tuple, verified: set) -> None:
    for key in [k for k in _VERIFIED if k[0] == str(folder)]:  # one entry a folder: its current files
        _VERIFIED.pop(key, None)
    _VERIFIED[(str(folder), cid, gen, stats)] = verified
    tmp = folder / f"verified.json.{os.getpid()}"
    try:
        tmp.write_text(json.dumps({"key": _stamp_key(cid, gen, stats), "segments": sorted(verified)}))
        os.replace(tmp, folder / "verified.json")
    except OSError:  # a read-only cache folder: the check is made again next time
        tmp.unlink(missing_ok=True)


def open_cache(folder: Path, st: dict[str, str], segs: list[tuple]) -> dict[str, np.ndarray]:
    """Maps of the cache for live segments `segs` [(video_id, row0, frames, crc)], after checking
    that the folder holds the copy the index describes, untruncated and uncorrupted (CacheUnusable)."""
    with _LOCK:
        return _open_cache(folder, st, segs)


def _open_cache(folder: Path, st: dict[str, str], segs: list[tuple]) -> dict[str, np.ndarray]:
    if st.get("format") != str(CACHE_FORMAT):
        raise CacheUnusable("not built yet" if not st.get("format") else
                            f"format {st.get('format')}, this version reads {CACHE_FORMAT}")
    cid, fid = st.get("cache_id"), _folder_id(folder)
    if fid is None:
        raise CacheUnusable(f"missing: {folder} holds none")
    if fid != cid:
        raise CacheUnusable(f"{folder} holds the cache of another copy of the index")
    if not segs:
        return {}
    gen, dim, end = int(st.get("gen", 0)), int(st.get("dim", 0)), int(st.get("end", 0))
    if any(int(s[1]) + int(s[2]) > end for s in segs):
        raise CacheUnusable("segments past the committed end")
    try:
        stats = _stats(folder, gen)
    except OSError as e:
        raise CacheUnusable(f"missing a file ({e.strerror or e})") from None
    for (name, size, _, _), (dtype, width) in zip(stats, PARTS.values()):
        if size < end * width(dim) * np.dtype(dtype).itemsize:
            raise CacheUnusable(f"truncated: {_path(folder, name, gen).name} holds {size} bytes")
    key = (str(folder), cid, gen, dim, stats)
    hit = _MAPS.get(key)
    if hit is None or hit[0] < end:
        if len(_MAPS) >= 8:
            _MAPS.pop(next(iter(_MAPS)))
        try:
            _MAPS[key] = hit = (end, _maps(folder, gen, end, dim))
        except (OSError, ValueError) as e:
            raise CacheUnusable(f"unreadable ({e})") from None
    maps = {name: a[:end] for name, a in hit[1].items()}
    verified = _load_stamp(folder, cid, gen, stats)
    todo = [s for s in segs if tuple(int(v) for v in s) not in verified]
    if todo:
        for vid, row0, n, crc in todo:
            got = crc_of({name: a[int(row0):int(row0) + int(n)] for name, a in maps.items()})
            if got != int(crc):
                raise CacheUnusable(f"corrupt: the rows of video {vid} fail their checksum")
        _save_stamp(folder, cid, gen, stats, verified | {tuple(int(v) for v in s) for s in todo})
    return maps


def _live_segments(db) -> list[tuple]:
    return [tuple(r) for r in db.execute(f"SELECT video_id, row0, frames, crc FROM {TABLE}").fetchall()]


# ----------------------------------------------------------------------------- building

def _digest(xn_blob: bytes, zn_blob: bytes) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(xn_blob)
    h.update(zn_blob)
    return h.hexdigest()


def _live_keys(db) -> dict[int, tuple]:
    """video id -> (indexed_at, agent_id, frames, dim) for every indexed video. No blob is read:
    the norm blobs sit behind the x and z overflow chains (3 s for 1 000 one-hour videos). A
    rewrite that keeps these equal is caught by the triggers, which drop the segment."""
    rows = db.execute(
        "SELECT v.id, v.indexed_at, v.agent_id, f.frames, f.dim FROM videos v "
        "JOIN features f ON f.video_id = v.id WHERE v.status = 'indexed'").fetchall()
    return {int(r[0]): (r[1], r[2], r[3], r[4]) for r in rows}


def _key_now(db, vid: int) -> tuple | None:
    """The key of one video with the digest of its stored norms (None: gone or unreadable)."""
    try:
        r = db.execute(
            "SELECT v.indexed_at, v.agent_id, f.frames, f.dim, f.x_norm, f.z_norm FROM videos v "
            "JOIN features f ON f.video_id = v.id WHERE v.status = 'indexed' AND v.id = ?", [vid]).fetchone()
    except sqlite3.DatabaseError:
        return None
    if r is None or not isinstance(r[4], bytes) or not isinstance(r[5], bytes):
        return None
    return (r[0], r[1], r[2], r[3], _digest(r[4], r[5]))


def unit_sum(z: np.ndarray, x: np.ndarray, z_norm: np.ndarray, x_norm: np.ndarray) -> np.ndarray:
    """u = z/|z| + x/|x| per row (a zero row contributes 0, as the scorer's epsilon makes it)."""
    zn = np.asarray(z_norm, np.float32)[:, None]
    xn = np.asarray(x_norm, np.float32)[:, None]
    u = np.divide(z, zn, out=np.zeros_like(z, dtype=np.float32), where=zn > 0)
    u += np.divide(x, xn, out=np.zeros_like(x, dtype=np.float32), where=xn > 0)
    return u


def quantize(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes c and float32 aux [scale, |c|_1] per row, u ~= scale * c."""
    peak = np.abs(u).max(axis=1) if len(u) else np.zeros(0, np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(u / scale[:, None]), -127, 127).astype(np.int8)
    l1 = np.abs(codes.astype(np.int32)).sum(axis=1).astype(np.float32)
    return codes, np.stack([scale, l1], axis=1).astype(np.float32)


def _max_inv(zn: np.ndarray, xn: np.ndarray) -> float:
    inv = np.zeros(len(zn), np.float64)
    inv += np.divide(1.0, zn, out=np.zeros(len(zn)), where=zn > 0)
    inv += np.divide(1.0, xn, out=np.zeros(len(xn)), where=xn > 0)
    return float(inv.max()) if len(inv) else 0.0


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SearchError(f"{folder}: cannot create the search cache folder ({e.strerror or e})") from None


def _reset(store, folder: Path, seen: dict[str, str], reason: str, wait: float | None) -> None:
    """Start the cache anew: a new id and generation, no segments (refresh then encodes every video).
    Skipped when another process changed the cache's state since `seen` (it started it anew)."""
    with store.write("starting the search cache anew", wait=wait):
        st = state(store.db)
        if {k: st.get(k) for k in ("cache_id", "gen")} != {k: seen.get(k) for k in ("cache_id", "gen")}:
            return
        gen = int(st.get("gen", 0)) + 1
        cid = secrets.token_hex(8)
        try:
            tmp = folder / f"cache-id.{os.getpid()}"
            tmp.write_text(cid + "\n")
            os.replace(tmp, folder / "cache-id")
        except OSError as e:
            raise SearchError(f"{folder}: cannot write the search cache ({e.strerror or e})") from None
        store.db.execute(f"DELETE FROM {TABLE}")
        store.db.execute(f"DELETE FROM {STATE} WHERE key = 'dim'")
        for k, v in (("format", CACHE_FORMAT), ("cache_id", cid), ("gen", gen), ("end", 0), ("reason", reason)):
            _set_state(store.db, k, v)
    # older generations go; files of `gen` left by another cache at this path are cut to the
    # committed end (0) by the first append, under the lock
    _drop_old(folder, gen)


def _drop_old(folder: Path, keep_from: int) -> None:
    for p in folder.glob("*-*.*"):
        stem = p.stem.rsplit("-", 1)[-1]
        if stem.isdigit() and int(stem) < keep_from:
            p.unlink(missing_ok=True)


def refresh_after_index(db) -> list[str]:
    """After an index run: the search data of `db` brought up to date (or rebuilt); the lines to
    show: what was rebuilt, damage read around, or why it failed (search then reads the index
    directly). Nothing for a missing or read-only index."""
    if not Path(db).is_file():
        return []
    try:
        with Store(db) as store:
            if store.readonly:
                return []
            done = refresh(store)
    except TspoError as e:
        return [f"search cache not updated: {e} (search reads the index directly meanwhile)"]
    return ([f"search cache rebuilt ({done.rebuilt})"] if done.rebuilt else []) + \
        [f"warning: {line}" for line in done.damaged]


def refresh(store, *, batch_frames: int = 1 << 18, wait: float | None = None) -> RefreshSummary:
    """Bring the search cache of `store` up to date with its stored features.

    Starts it anew when it is missing, of another format or another copy, truncated or corrupt;
    drops segments of videos that were re-indexed, failed or removed; encodes videos that have
    none (a video whose stored features fail their check is left out, named in `damaged`);
    rewrites the files when dead rows pile up. Features are read outside the write lock; each
    batch is appended and committed under a short write lock (each try waits `wait` s) after
    re-checking that the videos did not change meanwhile, so an indexer beside it is never
    blocked for long. Raises StoreError (a lock held too long, a read-only index) or SearchError.
    """
    if store.readonly:
        raise SearchError(f"{store.path}: opened read-only; the search cache cannot be refreshed")
    db = store.db
    folder = search_dir(store)
    _ensure_folder(folder)
    summary = RefreshSummary()
    if not has_tables(db):  # an index too old to migrate here (cannot happen on a writable store)
        raise SearchError(f"{store.path}: the index has no search tables (schema older than 3)")
    with store.read("reading the search cache's state"):
        st, segs = state(db), _live_segments(db)
    try:
        open_cache(folder, st, segs)
    except CacheUnusable as e:
        if st.get("format") or segs:  # a first build is no rebuild
            summary.rebuilt = str(e)
        _reset(store, folder, st, str(e), wait)
    with store.read("reading the search cache's state"):
        live = _live_keys(db)
        have = {int(r[0]): tuple(r[1:]) for r in db.execute(
            f"SELECT video_id, indexed_at, agent_id, frames, dim, digest FROM {TABLE}").fetchall()}
    stale = [v for v, key in have.items() if live.get(v) != key[:4]]
    todo = [v for v, key in live.items() if v not in have or have[v][:4] != key]
    dims = {key[3] for key in live.values()}
    if len(dims) > 1:
        raise SearchError(f"{store.path}: indexed videos have different widths {sorted(dims)}")
    if stale:
        with store.write("dropping stale search segments", wait=wait):
            db.conn.executemany(f"DELETE FROM {TABLE} WHERE video_id = ?", [[v] for v in stale])
            summary.removed = len(stale)
    batch: list[tuple] = []
    rows_in_batch = 0
    for vid in todo:
        try:
            with store.read("reading features for the search cache"):  # one snapshot: key and features
                key = db.execute(
                    "SELECT v.indexed_at, v.agent_id, f.frames, f.dim FROM videos v JOIN features f "
                    "ON f.video_id = v.id WHERE v.status = 'indexed' AND v.id = ?", [vid]).fetchone()
                if key is None:
                    continue
                f = store.load_features(vid)
        except StoreDamagedError as e:
            summary.damaged.append(str(e))
            continue
        key = tuple(key) + (_digest(f.x_norm.tobytes(), f.z_norm.tobytes()),)
        codes, qa = quantize(unit_sum(f.z, f.x, f.z_norm, f.x_norm))
        parts = {"codes": codes, "aux": np.column_stack([qa, f.x_norm, f.z_norm]),
                 # float32 from float16 and back is exact: these are the stored values
                 "exact": np.concatenate([f.x, f.z], axis=1).astype(np.float16), "times": f.times[:, None]}
        parts = {name: np.ascontiguousarray(parts[name], dtype=dtype) for name, (dtype, _) in PARTS.items()}
        batch.append((vid, key, parts, _max_inv(f.z_norm, f.x_norm)))
        rows_in_batch += len(codes)
        if rows_in_batch >= batch_frames:
            summary.added += _commit_batch(store, folder, batch, wait)
            batch, rows_in_batch = [], 0
    if batch:
        summary.added += _commit_batch(store, folder, batch, wait)
    summary.compacted = _maybe_compact(store, folder, wait)
    with store.read():
        summary.frames = int(db.execute(f"SELECT COALESCE(SUM(frames), 0) FROM {TABLE}").fetchone()[0])
    return summary


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


def _cache_write_error(folder: Path, e: OSError) -> SearchError:
    return SearchError(f"{folder}: cannot write the search cache ({e.strerror or e}); "
                       f"the index is searched directly meanwhile")


def _commit_batch(store, folder: Path, batch, wait) -> int:
    db = store.db
    with store.write("adding videos to the search cache", wait=wait):
        st = state(db)
        gen, cid = int(st.get("gen", 0)), st.get("cache_id")
        dim = int(batch[0][2]["codes"].shape[1])
        if st.get("dim") is not None and int(st["dim"]) != dim and db.execute(f"SELECT 1 FROM {TABLE} LIMIT 1").fetchone():
            raise SearchError(f"{store.path}: search cache has width {st['dim']}, new videos {dim}")
        end = int(st.get("end", 0))
        rows, chunks, segs = [], [], set()
        try:
            verified = _load_stamp(folder, cid, gen, _stats(folder, gen)) if end else set()
        except OSError:
            verified = set()
        try:
            _prepare_append(folder, gen, dim, end)
            for vid, key, parts, max_inv in batch:
                if _key_now(db, vid) != key:  # re-indexed while we encoded it: next refresh
                    continue
                crc = crc_of(parts)
                chunks.append(parts)
                rows.append({"video_id": vid, "indexed_at": key[0], "agent_id": key[1], "frames": key[2],
                             "dim": key[3], "digest": key[4], "row0": end, "gen": gen, "max_inv": max_inv,
                             "crc": crc})
                segs.add((vid, end, key[2], crc))
                end += len(parts["codes"])
            _write_parts(folder, gen, "ab", chunks)
            stats = _stats(folder, gen)
        except OSError as e:
            raise _cache_write_error(folder, e) from None
        for row in rows:
            db.execute(f"INSERT OR REPLACE INTO {TABLE} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       list(row.values()))
        _set_state(db, "dim", dim)
        _set_state(db, "end", end)
        _save_stamp(folder, cid, gen, stats, verified | segs)
    return len(rows)


def _compaction_due(db) -> bool:
    st = state(db)
    if st.get("dim") is None:
        return False
    file_rows = int(st.get("end", 0))
    live = int(db.execute(f"SELECT COALESCE(SUM(frames), 0) FROM {TABLE}").fetchone()[0])
    return file_rows - live > COMPACT_RATIO * live or (live == 0 and file_rows > 0)


def _maybe_compact(store, folder: Path, wait) -> bool:
    """Rewrite the live rows into a new generation when dead rows exceed COMPACT_RATIO of live."""
    db = store.db
    with store.read("reading the search cache's state"):  # the lock is taken only when there is work
        if not _compaction_due(db):
            return False
    with store.write("compacting the search cache", wait=wait):
        if not _compaction_due(db):
            return False
        st = state(db)
        gen, dim, cid, file_rows = int(st.get("gen", 0)), int(st["dim"]), st.get("cache_id"), int(st.get("end", 0))
        segs = db.execute(f"SELECT video_id, row0, frames, crc FROM {TABLE} ORDER BY row0").fetchall()
        new = gen + 1
        try:
            src = _maps(folder, gen, file_rows, dim)
            end, moved = 0, set()
            for vid, row0, n, crc in segs:
                db.execute(f"UPDATE {TABLE} SET row0 = ?, gen = ? WHERE video_id = ?", [end, new, vid])
                moved.add((int(vid), end, int(n), int(crc)))
                end += int(n)
            _write_parts(folder, new, "wb", ({name: a[row0:row0 + n] for name, a in src.items()}
                                             for _, row0, n, _ in segs))
            del src
            stats = _stats(folder, new)
        except OSError as e:
            raise _cache_write_error(folder, e) from None
        _set_state(db, "gen", new)
        _set_state(db, "end", end)
        _save_stamp(folder, cid, new, stats, moved)
    # a reader may still hold generation `gen` (its snapshot began before this commit): keep it,
    # drop older ones
    _drop_old(folder, gen)
    return True


__all__ = ["CACHE_FORMAT", "CacheUnusable", "RefreshSummary", "cache_root", "search_dir", "refresh",
           "open_cache", "unit_sum", "quantize"]
