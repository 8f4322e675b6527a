"""The SQLite index (through sqlite-utils): one file, WAL, versioned schema.

Tables (plain, browsable with `sqlite-utils tables` or datasette):

- `meta`     key/value: `schema_version`, `encoder_id` (the index is bound to one encoder), `created_at`.
- `videos`   one row per video file: identity (path, size, mtime, fingerprint), probe facts,
             sampling, encoder/agent ids, status ('indexed' | 'failed') and error.
- `features` one row per indexed video: `times` float64[T], `x` and `z` float16[T,D] (raw embeddings,
             event features), `x_norm` and `z_norm` float32[T] (norms of the stored float16 values,
             so ask-time cosine scoring needs no norm pass). A blob per video loads a 1-hour video
             about 2x faster than a row per frame (benchmarks/store_layout.py, docs/index.md).

Each video is written in one transaction: a crash never leaves half a video.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlite_utils

from tspo_edge.errors import IndexMismatchError, TspoError

SCHEMA_VERSION = 1
FINGERPRINT_BLOCK = 1 << 20  # 1 MiB from the start, the middle and the end


class StoreError(TspoError):
    """The index file cannot be used (not an index, newer schema, missing video)."""


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
    """blake2b of the size and the first, middle and last MiB: cheap on huge files."""
    p = Path(path)
    size = p.stat().st_size if size is None else size
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(p, "rb") as f:
        offsets = [0] if size <= 3 * FINGERPRINT_BLOCK else [0, size // 2, size - FINGERPRINT_BLOCK]
        for off in offsets:
            f.seek(off)
            h.update(f.read(FINGERPRINT_BLOCK if len(offsets) > 1 else size))
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def f16_to_f32(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """float16 bytes -> float32 array. NumPy 2 converts with SIMD (as fast as torch here); torch is
    used only when the process has already imported it (NumPy 1.x converts ~10x slower), so that
    an ask with the ONNX runtime never pays torch's 2 s import for it."""
    a = np.frombuffer(buf, dtype=np.float16).reshape(shape)
    torch = sys.modules.get("torch")
    if torch is None:
        return a.astype(np.float32)
    return torch.from_numpy(a.copy()).float().numpy()


def _blob(a: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


class Store:
    """An index file. `Store(path)` creates it if needed; `readonly=True` never writes."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no index here (run `tspo-edge index` first)")
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
        else:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path))
        conn.execute("PRAGMA busy_timeout = 10000")
        self.db = sqlite_utils.Database(conn)
        try:
            self._open()
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"{self.path}: not a tspo-edge index ({e})") from None
        except BaseException:
            self.close()
            raise

    # ---- schema -------------------------------------------------------------------------
    def _open(self) -> None:
        names = set(self.db.table_names())
        if "meta" not in names:
            if names:
                raise StoreError(f"{self.path}: not a tspo-edge index (tables: {', '.join(sorted(names))})")
            if self.readonly:
                raise StoreError(f"{self.path}: empty file, not a tspo-edge index")
            self._create()
        version = self.meta("schema_version")
        if version is None or not str(version).isdigit():
            raise StoreError(f"{self.path}: not a tspo-edge index (no schema_version in meta)")
        if int(version) > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: index schema version {version} is newer than this tspo-edge "
                             f"supports ({SCHEMA_VERSION}); upgrade tspo-edge or index into a new --db")
        if int(version) < SCHEMA_VERSION:  # no older versions exist yet
            raise StoreError(f"{self.path}: unknown index schema version {version}")

    def _create(self) -> None:
        self.db.enable_wal()
        with self.db.atomic():
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
            self.db["meta"].insert_all([
                {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "created_at", "value": _now()},
            ])

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._writable()
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
            raise IndexMismatchError(
                f"{self.path}: index was built with encoder {bound!r}, not {encoder_id!r}; "
                f"use --encoder {bound} or another --db")

    def bind_encoder(self, encoder_id: str) -> None:
        """Bind an index to `encoder_id` (an index with no indexed video may be re-bound)."""
        if self.encoder_id == encoder_id:
            return
        if self.encoder_id is not None and self.videos(status="indexed"):
            self.check_encoder(encoder_id)
        with self.db.atomic():
            self.set_meta("encoder_id", encoder_id)

    # ---- reading ----------------------------------------------------------------------------
    def _row(self, d: dict) -> VideoRow:
        return VideoRow(**{k: d.get(k) for k in _VIDEO_COLUMNS})

    def find_video(self, path: str | os.PathLike) -> VideoRow | None:
        rows = list(self.db["videos"].rows_where("path = ?", [canonical_path(path)], limit=1))
        return self._row(rows[0]) if rows else None

    def get_video(self, video_id: int) -> VideoRow:
        rows = list(self.db["videos"].rows_where("id = ?", [int(video_id)], limit=1))
        if not rows:
            raise StoreError(f"{self.path}: no video with id {video_id}")
        return self._row(rows[0])

    def videos(self, status: str | None = None) -> list[VideoRow]:
        if status is None:
            return [self._row(r) for r in self.db["videos"].rows_where(order_by="path")]
        return [self._row(r) for r in self.db["videos"].rows_where("status = ?", [status], order_by="path")]

    def load_features(self, video_id: int, *, encoder_id: str | None = None) -> VideoFeatures:
        """Everything ask-time scoring needs for one video, as float32 (times float64)."""
        video = self.get_video(video_id)
        if encoder_id is not None and video.encoder_id != encoder_id:
            raise IndexMismatchError(
                f"{video.path}: indexed with encoder {video.encoder_id!r}, not {encoder_id!r}")
        row = self.db.execute(
            "SELECT frames, dim, times, x, z, x_norm, z_norm FROM features WHERE video_id = ?",
            [int(video_id)]).fetchone()
        if row is None:
            raise StoreError(f"{video.path}: not indexed (status {video.status}"
                             + (f": {video.error})" if video.error else ")"))
        t, d = int(row[0]), int(row[1])
        return VideoFeatures(
            video=video,
            times=np.frombuffer(row[2], dtype=np.float64).copy(),
            x=f16_to_f32(row[3], (t, d)),
            z=f16_to_f32(row[4], (t, d)),
            x_norm=np.frombuffer(row[5], dtype=np.float32).copy(),
            z_norm=np.frombuffer(row[6], dtype=np.float32).copy(),
        )

    # ---- writing ----------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")

    def put_video(self, *, path: str | os.PathLike, size: int, mtime: float, fingerprint: str,
                  times: np.ndarray, x: np.ndarray, z: np.ndarray, encoder_id: str, agent_id: str,
                  duration: float | None = None, fps: float | None = None, width: int | None = None,
                  height: int | None = None, sample_fps: float | None = None,
                  max_frames: int | None = None, index_seconds: float | None = None) -> VideoRow:
        """Insert or replace one indexed video and its features in a single transaction."""
        self._writable()
        times = np.asarray(times, dtype=np.float64)
        with np.errstate(over="ignore"):  # overflow is reported below, by file
            x16 = np.asarray(x, dtype=np.float16)
            z16 = np.asarray(z, dtype=np.float16)
        if x16.ndim != 2 or x16.shape != z16.shape or len(times) != len(x16):
            raise ValueError(f"{path}: shapes disagree: times {times.shape}, x {x16.shape}, z {z16.shape}")
        if not (np.isfinite(x16).all() and np.isfinite(z16).all()):
            raise StoreError(f"{path}: embeddings overflow float16 (non-finite values)")
        t, d = x16.shape
        row = dict(path=canonical_path(path), size=int(size), mtime=float(mtime), fingerprint=fingerprint,
                   duration=duration, fps=fps, width=width, height=height, sample_fps=sample_fps,
                   frame_count=t, dim=d, max_frames=max_frames, encoder_id=encoder_id, agent_id=agent_id,
                   status="indexed", error=None, indexed_at=_now(), index_seconds=index_seconds)
        with self.db.atomic():
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
        self._writable()
        row = dict(path=canonical_path(path), size=size, mtime=mtime, fingerprint=fingerprint,
                   duration=None, fps=None, width=None, height=None, sample_fps=sample_fps,
                   frame_count=None, dim=None, max_frames=None, encoder_id=encoder_id, agent_id=agent_id,
                   status="failed", error=error, indexed_at=_now(), index_seconds=None)
        with self.db.atomic():
            vid = self._upsert_video(row)
            self.db.execute("DELETE FROM features WHERE video_id = ?", [vid])
        return self.get_video(vid)

    def update_events(self, video_id: int, z: np.ndarray, agent_id: str) -> VideoRow:
        """Replace a video's event features (after an agent change), in one transaction."""
        self._writable()
        z16 = np.asarray(z, dtype=np.float16)
        with self.db.atomic():
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

    def delete_video(self, video_id: int) -> None:
        self._writable()
        with self.db.atomic():
            self.db.execute("DELETE FROM features WHERE video_id = ?", [int(video_id)])
            self.db.execute("DELETE FROM videos WHERE id = ?", [int(video_id)])

    def _upsert_video(self, row: dict) -> int:
        old = self.db.execute("SELECT id FROM videos WHERE path = ?", [row["path"]]).fetchone()
        if old is not None:
            self.db["videos"].update(old[0], row)
            return int(old[0])
        return int(self.db["videos"].insert(row).last_pk)
