"""What the server's request handlers share (`Archive`): the models (loaded once; model calls
under one lock, tspo_edge.serving.shared_models), the index path, and one SQLite connection and
one Asker per request thread (sqlite3 connections belong to the thread that made them; readers
never wait in WAL mode); the look-up of a video by id or indexed path (nothing else is ever read),
and a cache of thumbnails. A request it refuses raises `ApiError` (an HTTP status and one line).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Union

from PIL import Image

from tspo_edge.ask import Asker
from tspo_edge.errors import IndexMismatchError, StoreError, VideoError
from tspo_edge.media import video as video_mod
from tspo_edge.models import Models, load_models
from tspo_edge.models.mllm import NoneAnswerer
from tspo_edge.serving.guard import one_line
from tspo_edge.serving.served_file import ServedFileError, fd_path, open_indexed
from tspo_edge.serving.shared_models import Locked, SharedEncoder
from tspo_edge.storage.store import Store, VideoRow, canonical_path

MAX_ID = 2**63 - 1            # SQLite's largest integer


class ApiError(Exception):
    """A request the server refuses: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Archive:
    """What the handlers share: the models, the index path, per-thread connections."""

    def __init__(self, db, models: Models, answerer, *, allow_index: bool, index_roots=(), thumbs: int = 512,
                 cache_videos: int = 8):
        self.cache_videos = cache_videos
        self.db = Path(db)
        self.allow_index = bool(allow_index)
        self.index_roots = [Path(r).expanduser().resolve() for r in index_roots]
        self.lock = threading.RLock()
        base = models.encoder  # loaded now: the first request should not pay for it
        self.encoder = base if isinstance(base, SharedEncoder) else SharedEncoder(base, self.lock)
        self.models = load_models(models.spec, loaded_encoder=self.encoder)
        # a remote server takes concurrent calls, and `none` holds no model: only a local model is locked
        local = not type(answerer).__module__.endswith("openai_api") and getattr(answerer, "needs_frames", True)
        self.answerer = Locked(answerer, self.lock, ("answer",)) if local else answerer
        self.none = NoneAnswerer()
        self._local = threading.local()
        self._stores: list[Store] = []
        self._stores_lock = threading.Lock()
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._thumb_size = thumbs
        with Store(self.db, readonly=True) as store:  # fails now (no index, not an index), not per request
            encoder_id = store.encoder_id
        if encoder_id is not None and encoder_id != base.id:
            raise IndexMismatchError(f"{self.db}: index was built with encoder {encoder_id!r}, "
                                     f"the server loaded {base.id!r}")

    # per-thread objects: sqlite3 connections belong to the thread that made them
    def store(self) -> Store:
        s = getattr(self._local, "store", None)
        if s is None:
            s = Store(self.db, readonly=not self.allow_index)
            self._local.store = s
            with self._stores_lock:
                self._stores.append(s)
        return s

    def asker(self) -> Asker:
        a = getattr(self._local, "asker", None)
        if a is None:
            a = Asker(store=self.store(), models=self.models, answerer=self.answerer, cache_videos=self.cache_videos)
            self._local.asker = a
        return a

    def close(self) -> None:
        with self._stores_lock:
            for s in self._stores:
                try:
                    s.close()
                except Exception:  # noqa: BLE001 - another thread's connection: best effort at shutdown
                    pass
            self._stores.clear()

    # ---- videos ----------------------------------------------------------------------------
    def video(self, ref: Union[int, str]) -> VideoRow:
        """The index row of an id or an indexed path; ApiError 404 for anything else."""
        store = self.store()
        if isinstance(ref, bool):
            raise ApiError(422, "video: an id or an indexed path, not true/false")
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
            if not 0 < int(ref) <= MAX_ID:
                raise ApiError(404, f"no video with id {ref} in the index")
            try:
                return store.get_video(int(ref))
            except StoreError:
                raise ApiError(404, f"no video with id {ref} in the index") from None
        if not isinstance(ref, str) or not ref.strip() or "\x00" in ref:
            raise ApiError(404, "no such video in the index")
        row = store.find_video(canonical_path(ref))
        if row is None:
            raise ApiError(404, f"{ref}: not in the index")
        return row

    def usable(self, row: VideoRow) -> Path:
        """The row's file, fit to ask: the indexed file, unchanged (tspo_edge.serving.served_file), or with
        allow_index one to index again."""
        try:
            open_indexed(row).close()
        except ServedFileError as e:
            if e.status == 404 and row.status == "indexed":
                raise ApiError(404, f"{row.path}: the indexed file is gone") from None
            if not self.allow_index:
                why = str(e) if row.status == "indexed" else f"{row.path}: not indexed ({row.status})"
                raise ApiError(409, f"{why} (this server opened the index read-only)") from None
        return Path(row.path)

    def new_path(self, ref: str) -> Path:
        """A file not yet in the index, accepted only with allow_index and under an index root."""
        if "\x00" in ref or not ref.strip():
            raise ApiError(404, "no such video in the index")
        path = Path(ref).expanduser().resolve()
        if not self.allow_index or not any(path.is_relative_to(r) for r in self.index_roots):
            raise ApiError(404, f"{ref}: not in the index")
        if not path.is_file():
            raise ApiError(404, f"{ref}: no such file")
        return path

    # ---- thumbnails ------------------------------------------------------------------------
    def thumb(self, row: VideoRow, t: float, size: int) -> bytes:
        key = (row.id, row.indexed_at, round(t, 2), size)
        with self._stores_lock:
            hit = self._thumbs.get(key)
            if hit is not None:
                self._thumbs.move_to_end(key)
                return hit
        f = open_row(row)
        try:
            frame = video_mod.read_frames_at(fd_path(f.fd, row.path), [t], size=size)[0]
        except (VideoError, ValueError, OSError) as e:
            raise ApiError(404, f"video {row.id}: cannot decode a frame at {t:g} s ({one_line(e)})") from None
        finally:
            f.close()
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=82)
        data = buf.getvalue()
        with self._stores_lock:
            self._thumbs[key] = data
            while len(self._thumbs) > self._thumb_size:
                self._thumbs.popitem(last=False)
        return data


def open_row(row: VideoRow):
    """The row's indexed file, opened and checked (tspo_edge.serving.served_file); ApiError otherwise."""
    try:
        return open_indexed(row)
    except ServedFileError as e:
        raise ApiError(e.status, str(e)) from None
