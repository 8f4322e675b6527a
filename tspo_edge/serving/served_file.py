"""Handing an indexed video out over HTTP: the file the index decoded, or nothing.

    f = open_indexed(row)          # ServedFileError (404 / 409) unless it is the indexed file
    file_response(f, range_header) # 200 / 206 streamed from the open descriptor, or 400 / 416

The row must be `indexed`. Its path is opened without following a link in the last component
(O_NOFOLLOW) and without blocking (a FIFO swapped in), and everything is checked on the open
descriptor, never by a second look-up of the path: a regular file with the recorded size and
mtime whose device and inode are the ones recorded when it was indexed, or, for another identity
(an archive copied with its index, a row of an older index that recorded none), whose content
fingerprint is the recorded one. A file swapped for a link, or for another file,
under the indexed name is refused. The bytes are then read from that descriptor, so a swap after
the check changes nothing that is sent.

The Content-Type comes from the container PyAV decoded when the file was indexed (probed again on
the descriptor for rows that recorded none), never from the file name; no container maps to
anything but video/* or application/octet-stream.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import av
from fastapi.responses import JSONResponse, StreamingResponse

from tspo_edge.serving.guard import error
from tspo_edge.storage.store import VideoRow, fingerprint

CHUNK = 256 * 1024
# PyAV's demuxer names -> the media type browsers play them as (the first name of a demuxer's list)
MEDIA_TYPES = {
    "mov": "video/mp4", "mp4": "video/mp4", "matroska": "video/x-matroska", "webm": "video/webm",
    "avi": "video/x-msvideo", "mpegts": "video/mp2t", "mpeg": "video/mpeg", "flv": "video/x-flv",
    "ogg": "video/ogg", "asf": "video/x-ms-asf", "m4v": "video/mp4", "3gp": "video/3gpp",
}


class ServedFileError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class OpenFile:
    fd: int
    size: int
    name: str
    media_type: str

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def media_type(container: str | None) -> str:
    """video/* for a demuxer PyAV named, else application/octet-stream (never text/html)."""
    names = [n.strip() for n in (container or "").split(",")]
    if "webm" in names and "matroska" in names:
        return "video/x-matroska"
    return next((MEDIA_TYPES[n] for n in names if n in MEDIA_TYPES), "application/octet-stream")


def fd_path(fd: int, path: str) -> str:
    """A path that opens the very file of descriptor `fd` (Linux: /proc/self/fd/N), else `path`."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else path


def open_indexed(row: VideoRow) -> OpenFile:
    """The row's file, open, checked on the descriptor against what was indexed; see the module."""
    if row.status != "indexed":
        raise ServedFileError(404, f"video {row.id} is not indexed ({row.status})")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(row.path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ServedFileError(409, f"video {row.id}: its file was replaced by a link; re-index it") from None
        raise ServedFileError(404, f"video {row.id}: the indexed file is gone") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ServedFileError(409, f"video {row.id}: no longer a regular file; re-index it")
        if (st.st_size, st.st_mtime) != (row.size, row.mtime):
            raise ServedFileError(409, f"video {row.id}: changed since it was indexed; re-index it")
        # another identity (a copied archive, an index of an older schema): the content must match
        if (st.st_dev, st.st_ino) != (row.dev, row.inode) and \
                fingerprint(fd_path(fd, row.path), st.st_size) != row.fingerprint:
            raise ServedFileError(409, f"video {row.id}: another file now has its name; re-index it")
        container = row.container or _probe_container(fd_path(fd, row.path))
        return OpenFile(fd, st.st_size, Path(row.path).name, media_type(container))
    except BaseException:
        os.close(fd)
        raise


def _probe_container(path: str) -> str | None:
    try:
        with av.open(path) as c:
            return c.format.name
    except (av.error.FFmpegError, OSError, ValueError):
        return None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) of a single `bytes=` range, None for the whole file, 'bad' or 'unsatisfiable'."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return "bad"
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isascii() and last.isascii()) or not (first.isdigit() or first == "") \
            or not (last.isdigit() or last == "") or (first == "" and last == ""):
        return "bad"
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


def file_response(f: OpenFile, range_header: str | None) -> StreamingResponse | JSONResponse:
    """The open file as a response (206 for a range); the descriptor is closed when it is sent."""
    r = parse_range(range_header, f.size)
    if r == "bad":
        f.close()
        return error(400, f"bad Range header {range_header!r} (one range: bytes=START-END)")
    if r == "unsatisfiable":
        f.close()
        return error(416, f"range {range_header!r} is outside the file ({f.size} bytes)",
                     {"content-range": f"bytes */{f.size}"})
    start, end = (0, f.size - 1) if r is None else r
    headers = {"accept-ranges": "bytes", "content-length": str(max(0, end - start + 1)),
               "content-disposition": disposition(f.name), "cache-control": "private, no-cache",  # a swap is seen at once
               # a sandboxed document: whatever a browser makes of these bytes runs no script here
               "content-security-policy": "sandbox; default-src 'none'; media-src 'self'"}
    if r is not None:
        headers["content-range"] = f"bytes {start}-{end}/{f.size}"
    return StreamingResponse(_chunks(f, start, end), status_code=200 if r is None else 206,
                             media_type=f.media_type, headers=headers)


def disposition(name: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _chunks(f: OpenFile, start: int, end: int):
    try:
        pos = start
        while pos <= end:
            data = os.pread(f.fd, min(CHUNK, end - pos + 1), pos)
            if not data:
                break
            pos += len(data)
            yield data
    finally:
        f.close()
