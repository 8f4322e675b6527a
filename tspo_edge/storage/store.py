"""The SQLite index (through sqlite-utils): one file, WAL, versioned schema.

Tables (plain, browsable with `sqlite-utils tables` or datasette):

- `meta`     key/value: `schema_version`, `encoder_id` (the index is bound to one encoder), `created_at`.
- `videos`   one row per video file: identity (path, size, mtime, fingerprint), probe facts,
             sampling, encoder/agent ids, status ('indexed' | 'failed' | 'missing': the file was
             removed from disk; its features are kept until it returns or is re-indexed) and error.
- `features` one row per indexed video: `times` float64[T], `x` and `z` float16[T,D] (raw embeddings,
             event features), `x_norm` and `z_norm` float32[T] (norms of the stored float16 values,
             so ask-time cosine scoring needs no norm pass). A blob per video loads a 1-hour video
             about 2x faster than a row per frame (benchmarks/store_layout.py, docs/index.md).
- `search_segments`, `search_state` where the search cache's rows are (tspo_edge.storage.search); triggers
             on `features` drop a video's segment in the very transaction that rewrites or removes it.
- views `videos_readable` (times as ISO text) and `blobs` (each blob's dtype, shape and size), so
             sqlite-utils and datasette read the index without knowing its layout.

The file is the one source of truth: the search cache is rebuilt from it whenever it is missing,
stale or damaged. Every read of a video's features checks them (blob sizes agree with frames and
dim, all finite): a damaged video raises StoreDamagedError naming it and the repair; `check()`
verifies the whole file.

Each video is written in one transaction: a crash never leaves half a video.

Concurrency: every write takes the write lock up front (`BEGIN IMMEDIATE`), waiting up to `timeout`
seconds, `WRITE_TRIES` times, so several processes may index into one file while others read (WAL:
readers never wait for writers). Several processes may create one new index at once: the schema is
created under the write lock, by whichever gets it first.

Storage faults are StoreError subclasses with one line naming the file and the cause:
NotAnIndexError, StoreLockedError, StoreFullError, StoreReadOnlyError, StoreUnreadableError,
StoreDamagedError. Every transaction goes through `write()` or `read()`, which map every SQLite error.
An index on read-only storage (file, folder or mount) opens for reading; writes then raise
StoreReadOnlyError. Nothing non-finite is ever written (StoreNonFiniteError).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import shlex
import sqlite3
import stat
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlite_utils

from tspo_edge.checks import check_finite
from tspo_edge.errors import (IndexMismatchError, InputError, NonFiniteError, NotAnIndexError, StoreDamagedError,
                              StoreError, StoreFullError, StoreLockedError, StoreNonFiniteError,
                              StoreReadOnlyError, StoreUnreadableError, TspoError)

__all__ = ["Store", "StoreError", "NotAnIndexError", "StoreLockedError", "StoreFullError",
           "StoreReadOnlyError", "StoreUnreadableError", "StoreNonFiniteError", "StoreDamagedError", "VideoRow",
           "VideoFeatures", "CheckReport", "canonical_path", "fingerprint"]

SCHEMA_VERSION = 4           # 1: the first release; 2: videos.dev, inode, container; 3: search tables,
                             # triggers and readable views; 4: videos.recorded_at (see MIGRATIONS)
FINGERPRINT_BLOCK = 1 << 20  # 1 MiB from the start, the middle and the end
BUSY_TIMEOUT = 10.0          # seconds one attempt waits for another process's write lock
WRITE_TRIES = 3              # attempts before StoreLockedError (so at most ~30 s by default)


@dataclass
class VideoRow:
    id: int
    path: str
    size: int
    mtime: float
    fingerprint: str
    duration: float | None
    fps: float | None
    width: int | None
    height: int | None
    sample_fps: float | None
    frame_count: int | None
    encoder_id: str | None
    agent_id: str | None
    status: str
    error: str | None
    indexed_at: str | None
    dim: int | None = None
    max_frames: int | None = None      # the --max-frames cap the video was indexed with
    index_seconds: float | None = None
    dev: int | None = None             # the file's identity when indexed (st_dev, st_ino): a file
    inode: int | None = None           # swapped in under the same name has another (server.py)
    container: str | None = None       # the demuxer that decoded it (PyAV's format name)
    recorded_at: float | None = None   # when it was recorded (epoch seconds): the container's
                                       # creation_time, else the file's mtime; NULL before schema 4


@dataclass
class VideoFeatures:
    video: VideoRow
    times: np.ndarray   # float64[T], seconds
    x: np.ndarray       # float32[T,D] raw frame embeddings
    z: np.ndarray       # float32[T,D] event features
    x_norm: np.ndarray  # float32[T]
    z_norm: np.ndarray  # float32[T]


_VIDEO_COLUMNS = {f.name: f.type for f in fields(VideoRow)}
_SQL_TYPES = {"int": int, "str": str, "float": float}


def canonical_path(path: str | os.PathLike) -> str:
    """The key a video is stored under: its absolute, symlink-resolved path."""
    return str(Path(path).expanduser().resolve())


def fingerprint(path: str | os.PathLike, size: int | None = None) -> str:
    """blake2b of the size and the first, middle and last MiB: cheap on huge files.
    Opened without blocking and refused unless a regular file (OSError): a FIFO swapped in under
    a video's name would otherwise hang the caller until someone writes to it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        size = st.st_size if size is None else size
        h = hashlib.blake2b(str(size).encode(), digest_size=16)
        offsets = [0] if size <= 3 * FINGERPRINT_BLOCK else [0, size // 2, size - FINGERPRINT_BLOCK]
        for off in offsets:
            f.seek(off)
            h.update(f.read(FINGERPRINT_BLOCK if len(offsets) > 1 else size))
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def f16_to_f32(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """float16 bytes -> float32 array (NumPy 2 converts with SIMD; no torch, so an ONNX ask stays torch-free)."""
    return np.frombuffer(buf, dtype=np.float16).reshape(shape).astype(np.float32)


def _blob(a: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


# SQLite's primary result codes that the store tells apart (Python's sqlite3 names them from 3.11
# on), each with SQLite's own message for it (sqlite3_errstr): Python 3.10 gives no code with its
# errors, only the message, so the code is read back from it there.
PERM, BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, AUTH, NOTADB = 3, 5, 6, 8, 10, 11, 13, 14, 23, 26
_MESSAGES = {"access permission denied": PERM, "database is locked": BUSY, "database table is locked": LOCKED,
             "attempt to write a readonly database": READONLY, "disk I/O error": IOERR,
             "database disk image is malformed": CORRUPT, "database or disk is full": FULL,
             "unable to open database file": CANTOPEN, "authorization denied": AUTH,
             "file is not a database": NOTADB}


def _primary(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    if isinstance(e, sqlite3.Error):  # Python 3.10
        return next((c for m, c in _MESSAGES.items() if str(e).startswith(m)), None)
    return None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail == 0 or (st.f_favail == 0 and st.f_files > 0)


def _read_only_reason(path: Path) -> str | None:
    """Why an existing index at `path` cannot be written (None: it can)."""
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    if path.exists() and not os.access(path, os.W_OK):
        return "read-only file"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"read-only folder {folder}"
    return None


def _full(path: Path, doing: str) -> StoreFullError:
    kept = "" if doing.startswith(("creating", "opening")) else "; what was committed before is kept"
    return StoreFullError(f"{path}: the disk is full ({doing}){kept}")


def storage_error(path: str | os.PathLike, e: BaseException, doing: str) -> StoreError:
    """The StoreError subclass for an sqlite3 or OS error met while `doing` something to `path`."""
    path = Path(path)
    code = _primary(e)
    cause = _one_line(e)
    if isinstance(e, OSError) and code is None:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return _full(path, doing)
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return StoreReadOnlyError(f"{path}: cannot write ({doing}): {e.strerror or cause}")
        return StoreUnreadableError(f"{path}: cannot use the index ({doing}): {e.strerror or cause}")
    if code == FULL or (code == IOERR and _disk_full(path.parent)):
        return _full(path, doing)
    if code in (BUSY, LOCKED):
        return StoreLockedError(f"{path}: locked by another process ({doing}); try again when it is done")
    if code == READONLY:
        reason = _read_only_reason(path) or cause
        return StoreReadOnlyError(f"{path}: read-only index ({reason}): {doing} refused")
    if code in (NOTADB, CORRUPT):
        return NotAnIndexError(f"{path}: not a tspo-edge index ({cause})")
    if code in (CANTOPEN, PERM, IOERR, AUTH):
        return StoreUnreadableError(f"{path}: cannot open or read the index ({doing}): {cause}")
    return StoreError(f"{path}: {doing} failed ({cause})")


class Store:
    """An index file. `Store(path)` creates it if needed; `readonly=True` never writes.

    An existing index on read-only storage opens for reading even without `readonly=True`
    (`readonly_reason` says why); a write then raises StoreReadOnlyError."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False, timeout: float = BUSY_TIMEOUT):
        self.path = Path(path)
        self.readonly = readonly
        self.readonly_reason: str | None = "opened read-only" if readonly else None
        self.timeout = float(timeout)
        if self.path.is_dir():
            raise StoreUnreadableError(f"{self.path}: is a folder, not an index file "
                                       f"(give a file, e.g. {self.path / 'tspo-edge.db'})")
        created = False
        try:
            if not readonly and self.path.exists():
                reason = _read_only_reason(self.path)
                if reason:
                    self.readonly, self.readonly_reason = True, reason
            if self.readonly:
                if not self.path.is_file():
                    raise StoreError(f"{self.path}: no index here (run `tspo-edge index` first)")
                conn = self._connect_readonly()
            else:
                self._check_creatable()
                created = not self.path.exists()
                conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise storage_error(self.path, e, "opening") from None
        except OSError as e:
            raise storage_error(self.path, e, "opening") from None
        self.db = sqlite_utils.Database(conn)
        try:
            self._open()
        except (sqlite3.Error, OSError) as e:
            self.close()
            err = storage_error(self.path, e, "creating the index" if created else "opening")
            if created and not isinstance(err, StoreLockedError):
                self._discard_new_file()
            raise err from None
        except BaseException:
            self.close()
            if created:
                self._discard_new_file()
            raise

    def _check_creatable(self) -> None:
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            reason = _read_only_reason(self.path)
            if reason:
                raise StoreReadOnlyError(f"{self.path}: cannot create an index here ({reason})")

    def _connect_readonly(self) -> sqlite3.Connection:
        """mode=ro; where SQLite cannot make the WAL's -shm file (read-only folder or mount), immutable=1."""
        uri = self.path.resolve().as_uri()
        try:
            conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=self.timeout, isolation_level=None)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except BaseException:
                conn.close()
                raise
        except sqlite3.OperationalError as e:
            if _primary(e) not in (CANTOPEN, READONLY):
                raise
        wal = Path(str(self.path) + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreReadOnlyError(
                f"{self.path}: cannot be read on read-only storage: {wal.name} holds changes not yet "
                f"in the file (open the index once where it is writable, then copy it)")
        return sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None)

    def _discard_new_file(self) -> None:
        """A new index that could not be created leaves no file behind (0-byte or table-less)."""
        try:
            if self.path.stat().st_size > 0:
                with contextlib.closing(sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro",
                                                        uri=True)) as c:
                    if c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                        return  # someone else's schema landed meanwhile: keep it
            for suffix in ("-wal", "-shm", "-journal", ""):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        except (OSError, sqlite3.Error):
            pass

    # ---- transactions ---------------------------------------------------------------------
    def _begin_immediate(self, doing: str, wait: float | None = None) -> None:
        """BEGIN IMMEDIATE, retried WRITE_TRIES times; each try waits `wait` s (default: the
        store's timeout) for another process's lock. Then StoreLockedError, naming the wait."""
        conn = self.db.conn
        wait = self.timeout if wait is None else float(wait)
        if wait != self.timeout:
            conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            for attempt in range(WRITE_TRIES):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.Error as e:
                    if _primary(e) not in (BUSY, LOCKED) or attempt == WRITE_TRIES - 1:
                        if _primary(e) in (BUSY, LOCKED):
                            raise StoreLockedError(
                                f"{self.path}: locked by another process for {WRITE_TRIES * wait:.0f} s "
                                f"({doing}); try again when it is done") from None
                        raise storage_error(self.path, e, doing) from None
                    time.sleep(random.uniform(0.01, 0.1))
        finally:
            if wait != self.timeout:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    @contextlib.contextmanager
    def write(self, doing: str = "writing", *, wait: float | None = None):
        """One write transaction holding the lock from the start; nested calls are savepoints.
        `wait`: seconds each of the WRITE_TRIES attempts waits for another process's lock
        (default: the store's timeout). Every sqlite3 error becomes a StoreError."""
        self._writable(doing)
        conn = self.db.conn
        if conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        self._begin_immediate(doing, wait)
        try:
            yield self
            conn.execute("COMMIT")
        except BaseException as e:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(e, sqlite3.Error):
                raise storage_error(self.path, e, doing) from None
            raise

    @contextlib.contextmanager
    def read(self, doing: str = "reading"):
        """Reads in one snapshot (WAL: never waits for a writer); sqlite3 errors become StoreErrors.
        Inside a write transaction it reads that transaction."""
        conn = self.db.conn
        own = not conn.in_transaction
        try:
            if own:
                conn.execute("BEGIN")
            yield
        except sqlite3.Error as e:
            raise storage_error(self.path, e, doing) from None
        finally:
            if own and conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    pass

    # ---- schema -------------------------------------------------------------------------
    def _open(self) -> None:
        names = set(self.db.table_names())
        if "meta" not in names:
            if names:
                raise NotAnIndexError(f"{self.path}: not a tspo-edge index (tables: {', '.join(sorted(names))})")
            if self.readonly:
                raise NotAnIndexError(f"{self.path}: empty file, not a tspo-edge index")
            self._create()
        version = self.meta("schema_version")
        if version is None:
            raise NotAnIndexError(f"{self.path}: not a tspo-edge index (no schema_version in meta)")
        if not (str(version).isascii() and str(version).isdigit()):  # "²" and "x" alike: no version
            raise NotAnIndexError(f"{self.path}: not a tspo-edge index (schema_version {str(version)[:20]!r} "
                                  "is not a number)")
        if int(version) > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: index schema version {version} is newer than this tspo-edge "
                             f"supports ({SCHEMA_VERSION}); upgrade tspo-edge or index into a new file")
        if int(version) < SCHEMA_VERSION and not self.readonly:
            self._migrate()
        # a read-only index of an older schema is read as it is: missing columns read as None

    def _migrate(self) -> None:
        """Step an older index up the ladder, one version per transaction (rclip's way)."""
        for target, step in MIGRATIONS:
            with self.write(f"upgrading the index to schema {target}"):
                version = int(self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
                if version >= target:
                    continue  # another process got there first
                step(self.db)
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(target)])

    def _create(self) -> None:
        """Create the schema under the write lock; another process may have done it meanwhile."""
        for attempt in range(WRITE_TRIES):
            try:
                self.db.conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as e:
                if _primary(e) not in (BUSY, LOCKED) or attempt == WRITE_TRIES - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.1))
        with self.write("creating the index"):
            if "meta" in set(self.db.table_names()):
                return
            self.db["meta"].create({"key": str, "value": str}, pk="key")
            self.db["videos"].create(
                {name: _SQL_TYPES[t.split(" ")[0]] for name, t in _VIDEO_COLUMNS.items()},
                pk="id", not_null={"path", "status"},
            )
            self.db["videos"].create_index(["path"], unique=True)
            self.db["features"].create(
                {"video_id": int, "frames": int, "dim": int, "times": bytes, "x": bytes, "z": bytes,
                 "x_norm": bytes, "z_norm": bytes},
                pk="video_id", foreign_keys=[("video_id", "videos", "id")],
            )
            for target, step in MIGRATIONS:
                if target > 2:  # what the tables above do not have yet (steps are idempotent)
                    step(self.db)
            self.db["meta"].insert_all([
                {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "created_at", "value": _now()},
            ])

    def meta(self, key: str) -> str | None:
        with self.read():
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.write(f"setting {key}"):
            self.db["meta"].upsert({"key": key, "value": value}, pk="key")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- encoder binding --------------------------------------------------------------------
    @property
    def encoder_id(self) -> str | None:
        return self.meta("encoder_id")

    def check_encoder(self, encoder_id: str) -> None:
        """Raise IndexMismatchError when the index was built with another encoder."""
        bound = self.encoder_id
        if bound is not None and bound != encoder_id:
            source = self.meta("encoder_source")
            hint = f"the encoder it was built with ({source})" if source else "the encoder it was built with"
            raise IndexMismatchError(
                f"{self.path}: index was built with encoder {bound!r}, not {encoder_id!r}; "
                f"use {hint} or another index file")

    def bind_encoder(self, encoder_id: str, source: str | None = None) -> None:
        """Bind an index to `encoder_id` (an index with no indexed video may be re-bound);
        `source` is what the encoder was loaded from ('lite', a hub id, a folder), for messages."""
        if self.encoder_id == encoder_id and (source is None or self.meta("encoder_source") == source):
            return
        with self.write("binding the encoder"):  # checked and set under the lock: no two encoders
            if self.encoder_id is not None and self.encoder_id != encoder_id and self.videos(status="indexed"):
                self.check_encoder(encoder_id)
            self.set_meta("encoder_id", encoder_id)
            if source is not None:
                self.set_meta("encoder_source", source)

    # ---- reading ----------------------------------------------------------------------------
    def _row(self, d: dict) -> VideoRow:
        return VideoRow(**{k: d.get(k) for k in _VIDEO_COLUMNS})

    def find_video(self, path: str | os.PathLike) -> VideoRow | None:
        with self.read():
            rows = list(self.db["videos"].rows_where("path = ?", [canonical_path(path)], limit=1))
        return self._row(rows[0]) if rows else None

    def get_video(self, video_id: int) -> VideoRow:
        with self.read():
            rows = list(self.db["videos"].rows_where("id = ?", [int(video_id)], limit=1))
        if not rows:
            raise StoreError(f"{self.path}: no video with id {video_id}")
        return self._row(rows[0])

    def videos(self, status: str | None = None) -> list[VideoRow]:
        with self.read():
            if status is None:
                return [self._row(r) for r in self.db["videos"].rows_where(order_by="path")]
            return [self._row(r) for r in self.db["videos"].rows_where("status = ?", [status], order_by="path")]

    def load_features(self, video_id: int, *, encoder_id: str | None = None) -> VideoFeatures:
        """Everything ask-time scoring needs for one video, as float32 (times float64)."""
        with self.read():  # the row and its features from one snapshot, even while others write
            video = self.get_video(video_id)
            if encoder_id is not None and video.encoder_id != encoder_id:
                raise IndexMismatchError(
                    f"{video.path}: indexed with encoder {video.encoder_id!r}, not {encoder_id!r}")
            try:
                row = self.db.execute(
                    "SELECT frames, dim, times, x, z, x_norm, z_norm FROM features WHERE video_id = ?",
                    [int(video_id)]).fetchone()
            except sqlite3.DatabaseError as e:
                if _primary(e) not in (CORRUPT, NOTADB, IOERR):
                    raise
                raise damaged(video.path, f"unreadable: {_one_line(e)}") from None
        if row is None:
            raise StoreError(f"{video.path}: not indexed (status {video.status}"
                             + (f": {video.error})" if video.error else ")"))
        times, x, z, xn, zn = _checked_arrays(video.path, row)
        return VideoFeatures(video=video, times=times.copy(), x=x, z=z, x_norm=xn.copy(), z_norm=zn.copy())

    def described(self) -> dict:
        """The index's own facts, as `tspo-edge info` shows them: schema version, encoder, last agent."""
        return {k: self.meta(k) for k in ("schema_version", "encoder_id", "agent_id", "agent_source")}

    def check(self) -> "CheckReport":
        """Verify the whole index: SQLite's integrity check, then every video's stored arrays
        (the checks `load_features` makes). Reads only; a damaged index is reported, not raised."""
        report = CheckReport(path=str(self.path))
        with self.read("checking the index"):
            try:
                found = [r[0] for r in self.db.execute("PRAGMA integrity_check(100)").fetchall()]
            except sqlite3.DatabaseError as e:
                if _primary(e) not in (CORRUPT, NOTADB, IOERR):
                    raise
                found = [_one_line(e)]
            report.integrity = [] if found == ["ok"] else [str(f) for f in found]
            try:
                ids = [int(r[0]) for r in self.db.execute(
                    "SELECT id FROM videos WHERE id IN (SELECT video_id FROM features) OR status = 'indexed' "
                    "ORDER BY path").fetchall()]
            except sqlite3.DatabaseError as e:
                if _primary(e) not in (CORRUPT, NOTADB, IOERR):
                    raise
                report.integrity.append(f"videos table unreadable: {_one_line(e)}")
                return report
        for vid in ids:
            report.videos += 1
            try:
                self.load_features(vid)
            except StoreDamagedError as e:
                report.damaged.append({"video_id": vid, "path": e.video_path, "problem": str(e)})
            except StoreError as e:  # an 'indexed' video whose features row is gone
                report.damaged.append({"video_id": vid, "path": None, "problem": str(e)})
        return report

    # ---- writing ----------------------------------------------------------------------------
    def _writable(self, doing: str = "writing") -> None:
        if self.readonly:
            raise StoreReadOnlyError(f"{self.path}: read-only index ({self.readonly_reason}): {doing} refused")

    def put_video(self, *, path: str | os.PathLike, size: int, mtime: float, fingerprint: str,
                  times: np.ndarray, x: np.ndarray, z: np.ndarray, encoder_id: str, agent_id: str,
                  duration: float | None = None, fps: float | None = None, width: int | None = None,
                  height: int | None = None, sample_fps: float | None = None,
                  max_frames: int | None = None, index_seconds: float | None = None,
                  container: str | None = None, recorded_at: float | None = None) -> VideoRow:
        """Insert or replace one indexed video and its features in a single transaction.
        `recorded_at` (epoch seconds) defaults to `mtime`.

        Refused before anything is written (StoreNonFiniteError): NaN/inf in times, x or z,
        values beyond float16, a non-finite sample_fps or mtime. Non-finite probe facts
        (duration, fps) are stored as unknown (NULL)."""
        self._writable(f"writing {path}")
        times = np.asarray(times, dtype=np.float64)
        _finite(times, f"{path}: frame times")
        _finite(x, f"{path}: frame embeddings")
        _finite(z, f"{path}: event features")
        _finite_number(sample_fps, f"{path}: sample_fps")
        _finite_number(mtime, f"{path}: mtime")
        recorded_at = float(mtime) if _or_none(recorded_at) is None else float(recorded_at)
        with np.errstate(over="ignore"):  # overflow is reported below, by file
            x16 = np.asarray(x, dtype=np.float16)
            z16 = np.asarray(z, dtype=np.float16)
        if x16.ndim != 2 or x16.shape != z16.shape or len(times) != len(x16):
            raise ValueError(f"{path}: shapes disagree: times {times.shape}, x {x16.shape}, z {z16.shape}")
        if not (np.isfinite(x16).all() and np.isfinite(z16).all()):
            raise StoreNonFiniteError(f"{path}: embeddings overflow float16 (non-finite values)")
        duration, fps = _or_none(duration), _or_none(fps)
        t, d = x16.shape
        key = canonical_path(path)
        dev, inode = _identity(key, int(size), float(mtime))
        row = dict(path=key, size=int(size), mtime=float(mtime), fingerprint=fingerprint,
                   duration=duration, fps=fps, width=width, height=height, sample_fps=sample_fps,
                   frame_count=t, dim=d, max_frames=max_frames, encoder_id=encoder_id, agent_id=agent_id,
                   status="indexed", error=None, indexed_at=_now(), index_seconds=index_seconds,
                   dev=dev, inode=inode, container=container, recorded_at=recorded_at)
        with self.write(f"writing {path}"):
            self.bind_encoder(encoder_id)
            vid = self._upsert_video(row)
            self.db["features"].upsert({
                "video_id": vid, "frames": t, "dim": d, "times": _blob(times, np.float64),
                "x": x16.tobytes(), "z": z16.tobytes(),
                "x_norm": _blob(np.linalg.norm(x16.astype(np.float32), axis=1), np.float32),
                "z_norm": _blob(np.linalg.norm(z16.astype(np.float32), axis=1), np.float32),
            }, pk="video_id")
        return self.get_video(vid)

    def put_failed(self, *, path: str | os.PathLike, size: int | None, mtime: float | None,
                   fingerprint: str | None, error: str, encoder_id: str | None = None,
                   agent_id: str | None = None, sample_fps: float | None = None) -> VideoRow:
        """Record a file that could not be indexed (its old features, if any, are dropped)."""
        self._writable(f"recording {path} as failed")
        _finite_number(sample_fps, f"{path}: sample_fps")
        mtime = _or_none(mtime)
        key = canonical_path(path)
        dev, inode = _identity(key, size, mtime)
        row = dict(path=key, size=size, mtime=mtime, fingerprint=fingerprint,
                   duration=None, fps=None, width=None, height=None, sample_fps=sample_fps,
                   frame_count=None, dim=None, max_frames=None, encoder_id=encoder_id, agent_id=agent_id,
                   status="failed", error=error, indexed_at=_now(), index_seconds=None,
                   dev=dev, inode=inode, container=None)
        with self.write(f"recording {path} as failed"):
            vid = self._upsert_video(row)
            self.db.execute("DELETE FROM features WHERE video_id = ?", [vid])
        return self.get_video(vid)

    def update_events(self, video_id: int, z: np.ndarray, agent_id: str) -> VideoRow:
        """Replace a video's event features (after an agent change), in one transaction.
        NaN/inf (or values beyond float16) are refused before anything is written."""
        self._writable("updating event features")
        if not np.isfinite(np.asarray(z, dtype=np.float32)).all():
            _finite(z, f"{self.get_video(video_id).path}: event features from agent {agent_id}")
        with np.errstate(over="ignore"):
            z16 = np.asarray(z, dtype=np.float16)
        if not np.isfinite(z16).all():
            raise StoreNonFiniteError(f"{self.get_video(video_id).path}: event features from agent {agent_id} "
                                      f"overflow float16 (non-finite values)")
        with self.write("updating event features"):
            row = self.db.execute("SELECT frames, dim FROM features WHERE video_id = ?", [int(video_id)]).fetchone()
            if row is None or tuple(z16.shape) != (row[0], row[1]):
                raise StoreError(f"{self.get_video(video_id).path}: cannot update event features "
                                 f"(stored {row and tuple(row)}, new {tuple(z16.shape)})")
            self.db.execute(
                "UPDATE features SET z = ?, z_norm = ? WHERE video_id = ?",
                [z16.tobytes(), _blob(np.linalg.norm(z16.astype(np.float32), axis=1), np.float32), int(video_id)])
            self.db.execute("UPDATE videos SET agent_id = ?, indexed_at = ? WHERE id = ?",
                            [agent_id, _now(), int(video_id)])
        return self.get_video(video_id)

    def mark_missing(self, path: str | os.PathLike) -> VideoRow | None:
        """Record that a video's file is gone from disk (status 'missing'; readers that list or
        search videos take status 'indexed' only). Its features stay, so the same file coming
        back is restored by `mark_found` without decoding. None when the path has no row."""
        key = canonical_path(path)
        self._writable(f"marking {key} missing")
        with self.write(f"marking {key} missing"):
            row = self.db.execute("SELECT id, status FROM videos WHERE path = ?", [key]).fetchone()
            if row is None:
                return None
            if row[1] != "missing":
                self.db.execute("UPDATE videos SET status = 'missing', error = ? WHERE id = ?",
                                [f"{key}: no longer on disk (was {row[1]})", row[0]])
        return self.get_video(row[0])

    def mark_found(self, video_id: int) -> VideoRow:
        """A 'missing' video whose file is back unchanged: 'indexed' again if its features are
        stored (else 'failed', so that it is indexed anew)."""
        with self.write("restoring a missing video"):
            has = self.db.execute("SELECT 1 FROM features WHERE video_id = ?", [int(video_id)]).fetchone()
            self.db.execute("UPDATE videos SET status = ?, error = ? WHERE id = ? AND status = 'missing'",
                            ["indexed" if has else "failed", None if has else "features lost while missing; index it again",
                             int(video_id)])
        return self.get_video(video_id)

    def _upsert_video(self, row: dict) -> int:
        old = self.db.execute("SELECT id FROM videos WHERE path = ?", [row["path"]]).fetchone()
        if old is not None:
            self.db["videos"].update(old[0], row)
            return int(old[0])
        return int(self.db["videos"].insert(row).last_pk)

    # ---- removing ---------------------------------------------------------------------------
    def remove_videos(self, ids) -> list[VideoRow]:
        """Drop videos from the index, all in one transaction: their rows, their features and
        every row of another table keyed by their `video_id` (the search module's segments go
        with the features through its triggers as well). Files on disk are not touched.
        Returns the rows removed; ids that are not in the index are skipped."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        self._writable("removing videos")
        if not ids:
            return []
        removed = []
        with self.write("removing videos"):
            tables = [t for t in self.db.table_names() if t != "videos" and "video_id" in self._columns(t)]
            for i in range(0, len(ids), 500):  # SQLite's limit on bound parameters
                chunk = ids[i:i + 500]
                marks = ", ".join("?" * len(chunk))
                removed += [self._row(r) for r in self.db["videos"].rows_where(f"id IN ({marks})", chunk)]
                for t in tables:
                    self.db.execute(f"DELETE FROM [{t}] WHERE video_id IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM videos WHERE id IN ({marks})", chunk)
        order = {v: n for n, v in enumerate(ids)}
        return sorted(removed, key=lambda r: order[r.id])

    def _columns(self, table: str) -> set[str]:
        try:
            return {c.name for c in self.db[table].columns}
        except sqlite3.OperationalError:  # a virtual table whose module is not loaded here
            return set()


@dataclass
class CheckReport:
    """What `Store.check()` found: SQLite's integrity messages and the damaged videos."""
    path: str
    videos: int = 0                                   # videos whose arrays were checked
    integrity: list = field(default_factory=list)     # SQLite's integrity_check lines (empty: ok)
    damaged: list = field(default_factory=list)       # {"video_id", "path", "problem"} per video

    @property
    def ok(self) -> bool:
        return not self.integrity and not self.damaged

    def to_dict(self) -> dict:
        return {"db": self.path, "ok": self.ok, "videos": self.videos, "integrity": self.integrity,
                "damaged": self.damaged}

    def lines(self) -> list[str]:
        """What `tspo-edge check` prints: a line per damage found, then the verdict."""
        found = [f"damaged: {line}" for line in self.integrity] + [f"damaged: {d['problem']}" for d in self.damaged]
        n = len(self.damaged)
        state = "ok" if self.ok else f"{n} damaged video{'s' * (n != 1)}" + \
            (", SQLite integrity check failed" if self.integrity else "")
        return [*found, f"{self.path}: {self.videos} videos checked; {state}"]


def existing_index(db: str | os.PathLike, hint: str = "") -> Path:
    """`db` when it exists, else InputError "<db>: no such index<hint>" (before a command opens
    it: opening would create it; a folder is refused by Store, naming it a folder)."""
    if not Path(db).exists():
        raise InputError(f"{db}: no such index{hint}")
    return Path(db)


def remove_if_empty(db: str | os.PathLike) -> bool:
    """Delete an index that holds no video, with its -wal and -shm files (a failed first ask
    leaves no empty index behind); an index that cannot be read is left alone."""
    try:
        with Store(db, readonly=True) as store:
            if store.videos():
                return False
    except TspoError:
        return False
    for p in (Path(db), Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def removed_if_left_empty(db: str | os.PathLike, enabled: bool = True):
    """Around work that may create `db`: when the work fails (or is interrupted) and `db` did not
    exist before, an index it left without videos is removed (`remove_if_empty`)."""
    new = enabled and not Path(db).exists()
    try:
        yield
    except BaseException:
        if new:
            remove_if_empty(db)
        raise


def damaged(path: str, cause: str) -> StoreDamagedError:
    """The one line for a video whose stored features fail their check."""
    return StoreDamagedError(f"{path}: stored features are damaged ({cause}); "
                             f"repair: tspo-edge index --force {shlex.quote(path)}", video_path=path)


# (blob, dtype, values per frame: 'd' for the width)
BLOBS = (("times", np.float64, 1), ("x", np.float16, "d"), ("z", np.float16, "d"),
         ("x_norm", np.float32, 1), ("z_norm", np.float32, 1))


def _checked_arrays(path: str, row) -> tuple[np.ndarray, ...]:
    """times, x, z (float32 [T,D]), x_norm, z_norm of a features row, after checking that every
    blob's size agrees with frames and dim and that every value is finite (StoreDamagedError)."""
    t, d = row[0], row[1]
    if not isinstance(t, int) or not isinstance(d, int) or t < 0 or d < 1:
        raise damaged(path, f"frames {t!r} and dim {d!r} are not a shape")
    out = []
    for (name, dtype, per), blob in zip(BLOBS, row[2:]):
        width = d if per == "d" else per
        need = t * width * np.dtype(dtype).itemsize
        if not isinstance(blob, bytes) or len(blob) != need:
            have = f"{len(blob)} bytes" if isinstance(blob, bytes) else f"a {type(blob).__name__}"
            raise damaged(path, f"{name} holds {have}, {t} frames x {width} {np.dtype(dtype).name} need {need}")
        a = np.frombuffer(blob, dtype=dtype)
        if per == "d":  # float16 -> float32 (SIMD); the float32 sum is finite iff every value is
            a = a.reshape(t, d).astype(np.float32)  # (|sum| <= T*D*65504: no overflow)
            bad = not np.isfinite(a.sum())
        else:
            bad = not np.isfinite(a).all()
        if bad:
            raise damaged(path, f"{name} holds NaN or infinity")
        out.append(a)
    return tuple(out)


def _v2_identity(db: sqlite_utils.Database) -> None:
    """1 -> 2: the file identity a server checks before it hands a file out, and its container."""
    have = {c.name for c in db["videos"].columns}
    for name, sql in (("dev", "INTEGER"), ("inode", "INTEGER"), ("container", "TEXT")):
        if name not in have:
            db.execute(f"ALTER TABLE videos ADD COLUMN [{name}] {sql}")


SEARCH_TABLES = ("search_segments", "search_state")


def _v3_search_and_views(db: sqlite_utils.Database) -> None:
    """2 -> 3: the search cache's tables and triggers (search.py made them itself before, beside an
    unversioned `<db>.search/` folder: they are made anew, and the cache is rebuilt from `features`),
    and the readable views. Plain SQL: sqlite-utils' writers would commit the migration's transaction."""
    for name in ("insert", "update", "delete"):
        db.execute(f"DROP TRIGGER IF EXISTS [search_segments_{name}]")
    for table in SEARCH_TABLES:
        db.execute(f"DROP TABLE IF EXISTS [{table}]")
    # one row per video in the cache: its key (what it was encoded from), where its rows are
    # (generation `gen`, first row `row0`), and `crc`, the CRC-32 of those rows in every cache file
    db.execute("CREATE TABLE search_segments (video_id INTEGER PRIMARY KEY, indexed_at TEXT, agent_id TEXT, "
               "frames INTEGER, dim INTEGER, digest TEXT, row0 INTEGER, gen INTEGER, max_inv FLOAT, crc INTEGER)")
    # format (the cache layout's version), cache_id (names the cache folder's copy), gen, dim, end
    db.execute("CREATE TABLE search_state (key TEXT PRIMARY KEY, value TEXT)")
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        db.execute(f"CREATE TRIGGER [search_segments_{event.lower()}] AFTER {event} ON features "
                   f"BEGIN DELETE FROM search_segments WHERE video_id = {row}.video_id; END")
    _readable_view(db, recorded=False)
    db.execute("DROP VIEW IF EXISTS blobs")
    parts = []
    for name, dtype, per in BLOBS:
        shape = "'[' || frames || ']'" if per == 1 else "'[' || frames || ', ' || dim || ']'"
        need = f"frames * {np.dtype(dtype).itemsize}" + ("" if per == 1 else " * dim")
        parts.append(f"SELECT video_id, '{name}' AS [column], '{np.dtype(dtype).name}' AS dtype, {shape} AS shape, "
                     f"length([{name}]) AS bytes, {need} AS expected_bytes FROM features")
    db.execute("CREATE VIEW blobs AS " + " UNION ALL ".join(parts))


def _readable_view(db: sqlite_utils.Database, *, recorded: bool) -> None:
    iso = "strftime('%Y-%m-%dT%H:%M:%fZ', {0}, 'unixepoch')"
    extra = f", {iso.format('recorded_at')} AS recorded_at" if recorded else ""
    db.execute("DROP VIEW IF EXISTS videos_readable")
    db.execute(f"CREATE VIEW videos_readable AS SELECT id, path, status, error, size, {iso.format('mtime')} AS mtime, "
               "duration, fps, width, height, sample_fps, frame_count, dim, max_frames, container, encoder_id, "
               f"agent_id, indexed_at, index_seconds{extra} FROM videos")


def _v4_recorded_at(db: sqlite_utils.Database) -> None:
    """3 -> 4: when each video was recorded (epoch seconds: the container's creation_time, else the
    file's mtime), which `search --since/--until` filters on. Rows indexed before stay NULL (the
    filter reads their mtime) until they are indexed again."""
    if "recorded_at" not in {c.name for c in db["videos"].columns}:
        db.execute("ALTER TABLE videos ADD COLUMN [recorded_at] FLOAT")
    _readable_view(db, recorded=True)


# (version, step): each step brings an index of the version before it to `version`. Append only.
MIGRATIONS = [(2, _v2_identity), (3, _v3_search_and_views), (4, _v4_recorded_at)]


def _identity(path: str, size, mtime) -> tuple[int | None, int | None]:
    """(st_dev, st_ino) of the file at `path` when it is still the one described by size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    if size is None or (st.st_size, st.st_mtime) != (size, mtime):
        return None, None
    return st.st_dev, st.st_ino


def _finite(a, what: str) -> None:
    try:
        check_finite(a, what)
    except NonFiniteError as e:
        raise StoreNonFiniteError(f"{e}; nothing was written") from None


def _finite_number(v, what: str) -> None:
    if v is not None and not np.isfinite(float(v)):
        raise StoreNonFiniteError(f"{what} is {float(v)}, not a finite number; nothing was written")


def _or_none(v):
    return None if v is None or not np.isfinite(float(v)) else v
