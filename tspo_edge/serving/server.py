"""`tspo-edge serve`: the models held warm behind a JSON API and a web page (an ASGI app).

    create_app(db, models, answerer) -> FastAPI app; run it with uvicorn (cli.py does)

    GET  /                              the web page (tspo_edge/serving/web/)
    GET  /api/videos                    the archive: id, name, duration, frames, status
    GET  /api/search?q=…&top=…          moments across the archive (tspo_edge.storage.search); filters in=…
                                        (repeatable), since=…, until=…, min_score=…
    POST /api/ask                       {"video", "question", "options"?, "frames"?, "method"?, "mllm"?}
                                        -> the JSON of `tspo-edge ask --json`
    GET  /api/videos/{id}/thumb?t=…     a JPEG of the frame at t seconds
    GET  /api/videos/{id}/file          the video file (HTTP range requests: a browser seeks)
    GET  /api/videos/{id}/clip?t=…&seconds=…  an MP4 clip from t (tspo_edge.media.clip, stream copy), as a download
    POST /api/session                   with the bearer token: a cookie for the page's <img>/<video>
    GET  /docs, /openapi.json           the OpenAPI page

What it trusts: a video is named by its id or its indexed path, and only files that are rows of
the index are read or served (a path not in the index is a 404; ids are whole numbers, never
paths). The index is opened read-only unless `allow_index` is given; then a video of the index
that changed on disk is re-indexed by an ask, and new files are indexed only under `index_roots`.
With a `token`, every /api/ request needs `Authorization: Bearer <token>` (or the session
cookie, an HMAC of the token, never the token itself). Bodies over `max_body` bytes get 413,
`frames` over `max_frames` 422; every error is a 4xx (or 500) with a one-line JSON body
{"error": "..."}, never a traceback.

Concurrency: request handlers run in a thread pool; each thread has its own SQLite connection
(readers never wait in WAL mode) and its own Asker; model calls (the text encoder, a local
answerer) hold one lock, since tokenizers and torch modules are not safe to share between threads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import math
import os
import socket
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Union

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from tspo_edge import __version__
from tspo_edge.storage import search as search_mod
from tspo_edge.media import video as video_mod
from tspo_edge.ask import Asker
from tspo_edge.checks import json_safe
from tspo_edge.media.clip import cut_clip, format_time
from tspo_edge.errors import (AskError, IndexMismatchError, InputError, ServeError, StoreDamagedError, StoreError, TspoError,
                     VideoError)
from tspo_edge.serving.guard import COOKIE, Guard, HostPolicy, check_token, error, is_loopback, one_line, token_matches
from tspo_edge.models.mllm import NoneAnswerer
from tspo_edge.models import Models, load_models
from tspo_edge.selection import METHODS
from tspo_edge.serving.served_file import ServedFileError, fd_path, file_response, open_indexed
from tspo_edge.storage.store import Store, VideoRow, canonical_path
from tspo_edge.timestamps import mmss

WEB = Path(__file__).resolve().parent / "web"
MAX_BODY = 64 * 1024          # bytes of a request body
MAX_FRAMES = 256              # keyframes an ask may request
MAX_TOP = 100                 # moments a search may return
MAX_FOLDERS = 32              # `in` folders a search may name
MAX_QUESTION = 2000           # characters
MAX_OPTIONS = 8               # A to H: what an ask takes (tspo_edge.questions)
MAX_ID = 2**63 - 1            # SQLite's largest integer
THUMB_SIZES = (64, 640)       # short side of a thumbnail, min and max
MAX_CLIP_SECONDS = 300.0      # the longest clip the clip route cuts


class ApiError(Exception):
    """A request the server refuses: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token, or with a token no client can send."""
    try:
        token = check_token(token)
    except ValueError as e:
        raise ServeError(str(e)) from None
    if not is_loopback(host) and not token:
        raise ServeError(f"host {host} is reachable from other machines: set TSPO_EDGE_TOKEN "
                         f"(a bearer token clients must send) or serve on 127.0.0.1")


class _Locked:
    """An answerer (or encoder) whose model calls hold one lock (other attributes pass through)."""

    def __init__(self, inner, lock: threading.RLock, methods: tuple[str, ...]):
        self._inner, self._lock = inner, lock
        for name in methods:
            if hasattr(inner, name):
                setattr(self, name, self._wrap(getattr(inner, name)))

    def _wrap(self, fn):
        def call(*a, **kw):
            with self._lock:
                return fn(*a, **kw)
        return call

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Job:
    __slots__ = ("texts", "out", "error", "done")

    def __init__(self, texts: list[str]):
        self.texts, self.out, self.error, self.done = texts, None, None, False


class SharedEncoder(_Locked):
    """The served encoder, shared by the request threads.

    Model calls hold one lock. Texts asked for while a text batch is being encoded wait and go
    together in the next call (one forward pass for eight questions costs little more than for
    one), and the last `cache` texts' embeddings are kept (identical text, identical embedding).
    """

    def __init__(self, inner, lock: threading.RLock, cache: int = 1024):
        super().__init__(inner, lock, ("encode_images",))
        self._cv = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache
        self.batches = 0   # encoder calls made for texts
        self.encoded = 0   # texts encoded by them (encoded / batches: the mean batch)

    def encode_texts(self, texts) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self._inner.dim), np.float32)
        with self._cv:
            hit = [self._cache.get(t) for t in texts]
            if all(h is not None for h in hit):
                for t in texts:
                    self._cache.move_to_end(t)
                return np.stack(hit)
            job = _Job(texts)
            self._queue.append(job)
            while not job.done:
                if self._busy:  # someone is encoding: our texts go in the next batch
                    self._cv.wait()
                    continue
                self._busy = True
                batch, self._queue = self._queue, []
                self._cv.release()
                try:
                    self._encode(batch)
                finally:
                    self._cv.acquire()
                    self._busy = False
                    self._cv.notify_all()
        if job.error is not None:
            raise job.error
        return job.out

    def _encode(self, batch: list[_Job]) -> None:
        unique = list(dict.fromkeys(t for job in batch for t in job.texts))
        try:
            with self._lock:
                emb = np.asarray(self._inner.encode_texts(unique), np.float32)
            self.batches += 1
            self.encoded += len(unique)
        except Exception as e:  # noqa: BLE001 - handed to every waiting request, raised there
            for job in batch:
                job.error, job.done = e, True
            return
        row = dict(zip(unique, emb))
        with self._cv:
            for t, v in row.items():
                self._cache[t] = v
                self._cache.move_to_end(t)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        for job in batch:
            job.out, job.done = np.stack([row[t] for t in job.texts]), True


# ---- request bodies ------------------------------------------------------------------------------

class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: Union[StrictInt, StrictStr] = Field(description="The video's id, or its path as indexed.")
    question: str = Field(min_length=1, max_length=MAX_QUESTION)
    options: Optional[List[str]] = Field(default=None, max_length=MAX_OPTIONS)
    frames: Optional[int] = Field(default=None, ge=1, le=MAX_FRAMES)
    method: str = "topk"
    mllm: Optional[str] = Field(default=None, description="'none' skips the answerer; default: the served one.")


# ---- the archive: per-thread stores and askers ---------------------------------------------------

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
        self.answerer = _Locked(answerer, self.lock, ("answer",)) if local else answerer
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
        f = _open(row)
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


def _open(row: VideoRow):
    try:
        return open_indexed(row)
    except ServedFileError as e:
        raise ApiError(e.status, str(e)) from None


def _video_json(row: VideoRow) -> dict:
    return json_safe({"id": row.id, "path": row.path, "name": Path(row.path).name, "duration": row.duration,
                   "frames": row.frame_count, "width": row.width, "height": row.height, "status": row.status,
                   "error": row.error, "indexed_at": row.indexed_at})


# ---- the app -------------------------------------------------------------------------------------

def create_app(db, models: Models, answerer, *, token: str | None = None, allow_index: bool = False,
               index_roots=(), max_body: int = MAX_BODY, refresh_search: bool = True, threads: int = 8,
               cache_videos: int = 8, host: str = "127.0.0.1", allow_hosts=(), watch_status=None) -> FastAPI:
    """The ASGI app serving the index `db` with `models` (loaded once, here) and `answerer`.

    `host`: the address it will be bound to; with `allow_hosts`, the names a Host header may
    carry (tspo_edge.serving.guard). `watch_status`: a callable whose dict `/api/health` shows as "watch".

    `threads`: request threads (each with its own SQLite connection and Asker); `cache_videos`:
    videos whose features each thread's Asker keeps in memory (a one-hour video at width 384: 11 MB).

    `refresh_search`: bring the search cache up to date once at start (needs a writable index
    file; skipped where it is read-only, or locked past a short wait): searches read whatever the
    cache lacks from the index file itself, so a read-only server still searches every video.
    """
    db = Path(db)
    if not db.is_file():
        raise ServeError(f"{db}: no index here (run `tspo-edge index` first)")
    if refresh_search:
        try:
            with Store(db) as store:
                if not store.readonly:
                    search_mod.refresh(store, wait=search_mod.LOCK_WAIT)
        except TspoError:
            pass  # a read-only or busy index is still served; searches read it directly
    if threads < 1 or cache_videos < 0:
        raise ServeError(f"threads must be at least 1 and cache_videos 0 or more (got {threads}, {cache_videos})")
    archive = Archive(db, models, answerer, allow_index=allow_index, index_roots=index_roots,
                      cache_videos=cache_videos)
    try:
        secret = check_token(token)
    except ValueError as e:
        raise ServeError(str(e)) from None
    cookie_value = hmac.new(secret.encode(), b"tspo-edge session", hashlib.sha256).hexdigest() if secret else None

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # request handlers run in this many threads: each holds a connection and an Asker whose
        # feature cache is its own, and model calls are serialised anyway
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        try:
            yield
        finally:
            archive.close()

    app = FastAPI(title="tspo-edge", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Keyframes, answers and archive-wide search over a tspo-edge index.")
    app.state.archive = archive

    # ---- errors: one line of JSON, never a traceback ----
    @app.exception_handler(ApiError)
    async def _api_error(_req, e: ApiError):
        return error(e.status, e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req, e: StarletteHTTPException):
        return error(e.status_code, e.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            return error(422, "body: not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid request"))

    @app.exception_handler(TspoError)
    async def _tspo_error(_req, e: TspoError):
        status = 404 if isinstance(e, VideoError) and "no such file" in str(e) else \
            409 if isinstance(e, StoreDamagedError) else 503 if isinstance(e, StoreError) else \
            422 if isinstance(e, (AskError, InputError)) else 400
        return error(status, e)

    # ---- Host, Origin, the token, limits, security headers, the last-resort 500 (tspo_edge.serving.guard) ----
    app.add_middleware(Guard, hosts=HostPolicy(host, allow_hosts), secret=secret, cookie_value=cookie_value,
                       max_body=max_body)

    # ---- the API ----
    @app.get("/api/videos", summary="The archive")
    def videos() -> dict:
        rows = archive.store().videos()
        return {"videos": [_video_json(r) for r in rows], "db": db.name}

    @app.get("/api/search", summary="Moments across the archive")
    def search(q: str = Query(..., min_length=1, max_length=MAX_QUESTION),
               top: int = Query(10, ge=1, le=MAX_TOP), per_video: int = Query(3, ge=1, le=MAX_TOP),
               nms_seconds: float = Query(30.0, ge=0, le=86400),
               in_: Optional[List[str]] = Query(None, alias="in", description="only videos under this folder "
                                                "(an absolute path on the server; repeatable)"),
               since: Optional[str] = Query(None, max_length=64, description="recorded at or after: 2026-11-01, "
                                            "2026-11-01T08:00 (the server's local time unless a zone is given), 7d, 12h"),
               until: Optional[str] = Query(None, max_length=64, description="recorded before (a date alone: "
                                            "to the end of that day)"),
               min_score: float = Query(search_mod.DEFAULT_MIN_SCORE, description="the relevance floor "
                                        "(the agent's logit)")) -> dict:
        if not q.strip():
            raise ApiError(422, "q: the question is empty")
        folders = [p for p in in_ or () if p.strip()]
        if len(folders) > MAX_FOLDERS or any(len(p) > 4096 or not os.path.isabs(p) for p in folders):
            raise ApiError(422, f"in: at most {MAX_FOLDERS} absolute folder paths on the server")
        filters = search_mod.make_filters(folders, since, until, min_score)  # InputError: a 422
        qv = np.asarray(archive.models.encoder.encode_texts([q]), np.float32)
        res = search_mod.search(archive.store(), qv, top=top, per_video=per_video, nms_seconds=nms_seconds,
                                refresh_first=archive.allow_index, filters=filters)
        out = res.to_dict()
        out["moments"] = [{**m, "name": Path(m["path"]).name, "timestamp": mmss(m["time"])} for m in out["moments"]]
        out["videos"] = [{**v, "name": Path(v["path"]).name} for v in out["videos"]]
        out["question"] = q
        return json_safe(out)

    @app.post("/api/ask", summary="Keyframes and an answer (the JSON of `tspo-edge ask --json`)")
    def ask(body: AskBody) -> dict:
        if body.method not in METHODS:
            raise ApiError(422, f"method: {body.method!r} is not one of {', '.join(METHODS)}")
        if body.mllm not in (None, "", "none", "default"):
            raise ApiError(422, f"mllm: {body.mllm!r}: this server answers with its own answerer "
                                f"({archive.answerer.id}) or none")
        if body.options is not None and any(len(o) > MAX_QUESTION for o in body.options):
            raise ApiError(422, f"options: an option is longer than {MAX_QUESTION} characters")
        try:
            row = archive.video(body.video)
        except ApiError:
            if not isinstance(body.video, str) or body.video.isdigit():
                raise
            row = None  # not in the index: a new file, if indexing under a root is allowed
        path = archive.usable(row) if row is not None else archive.new_path(body.video)
        asker = archive.asker()
        asker.answerer = archive.none if body.mllm == "none" else archive.answerer  # this thread's asker
        r = asker.ask(path, body.question, options=body.options, frames=body.frames, method=body.method)
        return json_safe(r.to_dict())

    @app.get("/api/videos/{video_id}/thumb", summary="A JPEG of the frame at t seconds",
             responses={200: {"content": {"image/jpeg": {}}}}, response_class=Response)
    def thumb(video_id: str, t: float = Query(0.0, ge=0, le=1e7), size: int = Query(160)) -> Response:
        if not (THUMB_SIZES[0] <= size <= THUMB_SIZES[1]):
            raise ApiError(422, f"size: between {THUMB_SIZES[0]} and {THUMB_SIZES[1]}")
        if not math.isfinite(t):
            raise ApiError(422, "t: not a finite number")
        row = archive.video(_id(video_id))
        return Response(archive.thumb(row, t, size), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/videos/{video_id}/file", summary="The video file (range requests)", response_class=Response,
             responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "a byte range"}})
    def file(video_id: str, request: Request) -> Response:
        row = archive.video(_id(video_id))
        return file_response(_open(row), request.headers.get("range"))

    @app.get("/api/videos/{video_id}/clip", summary="An MP4 clip from t seconds (stream copy from the keyframe at or before t)",
             responses={200: {"content": {"video/mp4": {}}}}, response_class=FileResponse)
    def clip(video_id: str, t: float = Query(..., ge=0, le=1e7),
             seconds: float = Query(10.0, gt=0, le=MAX_CLIP_SECONDS)) -> FileResponse:
        return clip_response(archive, _id(video_id), t, seconds)

    @app.post("/api/session", summary="A session cookie for the web page (the token as a bearer header or "
                                      "in the body: {\"token\": \"…\"})")
    async def session(request: Request) -> Response:
        if secret is not None and not token_matches(request.headers.get("authorization", "").encode("latin-1"), secret.encode()):
            try:
                given = (await request.json()).get("token")
            except (ValueError, AttributeError):
                given = None
            if not (isinstance(given, str) and hmac.compare_digest(given.strip().encode(), secret.encode())):
                return error(401, "missing or wrong token", {"www-authenticate": "Bearer"})
        resp = JSONResponse({"ok": True, "token_required": secret is not None})
        if cookie_value:
            resp.set_cookie(COOKIE, cookie_value, httponly=True, samesite="strict", path="/")
        return resp

    @app.get("/api/health", summary="Liveness and the models served")
    def health() -> dict:
        out = {"ok": True, "encoder": archive.models.encoder.id, "answerer": archive.answerer.id,
               "readonly": not archive.allow_index, "token_required": secret is not None,
               "text_batches": archive.encoder.batches, "texts_encoded": archive.encoder.encoded}
        if watch_status is not None:
            out["watch"] = watch_status()
            out["ok"] = out["watch"].get("state") != "failing"
        return json_safe(out)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:  # bundled: works offline, no CDN, no inline script
        return FileResponse(WEB / "api.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (IPv6 as `::1` or `[::1]`), before any model loads, so that a busy
    port or a bad address is one line at once; uvicorn then serves on it (no second bind, no race)."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ServeError(f"--host {host}: not an address of this machine ({one_line(e)})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(2048)  # a bound socket that does not listen yet would not meet the other program
    except OSError as e:
        sock.close()
        shown = f"[{name}]" if ":" in name else name
        if e.errno == errno.EADDRINUSE:
            raise ServeError(f"{shown}:{port}: the port is in use by another program; choose another with --port") from None
        raise ServeError(f"{shown}:{port}: cannot listen there ({e.strerror or one_line(e)})") from None
    sock.set_inheritable(True)
    return sock


def clip_response(archive: Archive, video_id: int, t: float, seconds: float) -> FileResponse:
    """The clip route: `cut_clip` (stream copy) into a temporary file, sent as an attachment
    named after the video and the clip's start, and deleted once sent."""
    if not (math.isfinite(t) and math.isfinite(seconds)):
        raise ApiError(422, "t, seconds: not finite numbers")
    row = archive.video(video_id)
    f = _open(row)  # the indexed file, checked on its descriptor (tspo_edge.serving.served_file)
    fd, tmp = tempfile.mkstemp(prefix="tspo-edge-clip-", suffix=".mp4")
    os.close(fd)
    try:
        c = cut_clip(fd_path(f.fd, row.path), tmp, at=t, seconds=seconds, overwrite=True)
    except TspoError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ApiError(422, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        f.close()
    name = f"{Path(row.path).stem}_{format_time(c.start).replace(':', '-')}.mp4"
    return FileResponse(tmp, media_type="video/mp4", filename=name, content_disposition_type="attachment",
                        background=BackgroundTask(Path(tmp).unlink, missing_ok=True))


def _id(text: str) -> int:
    """A video id from a URL: ASCII digits, or 404 (never a path)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ApiError(404, "no such video in the index")
    return int(text)


