"""`tspo-edge serve`'s routes: the models held warm behind a JSON API and a web page (an ASGI app).

    create_app(db, models, answerer) -> FastAPI app; tspo_edge.serving.serve runs it with uvicorn

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
(readers never wait in WAL mode) and its own Asker (tspo_edge.serving.archive); model calls (the
text encoder, a local answerer) hold one lock, since tokenizers and torch modules are not safe to
share between threads (tspo_edge.serving.shared_models).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import tempfile
from pathlib import Path
from typing import List, Optional, Union

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from tspo_edge import __version__
from tspo_edge.checks import json_safe
from tspo_edge.errors import (AskError, InputError, ServeError, StoreDamagedError, StoreError, TspoError,
                              VideoError)
from tspo_edge.media.clip import cut_clip, format_time
from tspo_edge.limits import MAX_OPTIONS
from tspo_edge.models import Models
from tspo_edge.selection import METHODS
from tspo_edge.serving.archive import ApiError, Archive, open_row
from tspo_edge.serving.guard import COOKIE, Guard, HostPolicy, check_token, error, token_matches
from tspo_edge.serving.served_file import fd_path, file_response
from tspo_edge.storage import search as search_mod
from tspo_edge.storage.store import Store, VideoRow
from tspo_edge.timestamps import mmss

WEB = Path(__file__).resolve().parent / "web"
MAX_BODY = 64 * 1024          # bytes of a request body
MAX_FRAMES = 256              # keyframes an ask may request
MAX_TOP = 100                 # moments a search may return
MAX_FOLDERS = 32              # `in` folders a search may name
MAX_QUESTION = 2000           # characters
THUMB_SIZES = (64, 640)       # short side of a thumbnail, min and max
MAX_CLIP_SECONDS = 300.0      # the longest clip the clip route cuts


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: Union[StrictInt, StrictStr] = Field(description="The video's id, or its path as indexed.")
    question: str = Field(min_length=1, max_length=MAX_QUESTION)
    options: Optional[List[str]] = Field(default=None, max_length=MAX_OPTIONS)
    frames: Optional[int] = Field(default=None, ge=1, le=MAX_FRAMES)
    method: str = "topk"
    mllm: Optional[str] = Field(default=None, description="'none' skips the answerer; default: the served one.")


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
        return file_response(open_row(row), request.headers.get("range"))

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


def clip_response(archive: Archive, video_id: int, t: float, seconds: float) -> FileResponse:
    """The clip route: `cut_clip` (stream copy) into a temporary file, sent as an attachment
    named after the video and the clip's start, and deleted once sent."""
    if not (math.isfinite(t) and math.isfinite(seconds)):
        raise ApiError(422, "t, seconds: not finite numbers")
    row = archive.video(video_id)
    f = open_row(row)  # the indexed file, checked on its descriptor (tspo_edge.serving.served_file)
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
