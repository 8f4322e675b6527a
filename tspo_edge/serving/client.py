"""A client of `tspo-edge serve`: an ask sent to a running server (standard library only: it
imports no NumPy, Pillow, decoder, SQLite layer or web framework; tests/test_client.py checks it).

    ask_remote("http://127.0.0.1:8008", "talk.mp4", "When does the demo start?") -> RemoteAnswer
        .data     the server's JSON (what `ask --json` prints)
        .result   the same as an AskResult (what `format_result` prints)

The server answers with the JSON of `tspo-edge ask --json`, so a remote ask prints what a local one
prints. The token (`$TSPO_EDGE_TOKEN`) goes in an Authorization header, never in a URL or a message.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence
from urllib.parse import urlsplit

from tspo_edge.answers import AskResult, Keyframe
from tspo_edge.errors import ClientError, InputError
from tspo_edge.limits import MAX_QUESTION_CHARS
from tspo_edge.selection_methods import METHODS


class RemoteAnswer(NamedTuple):
    data: dict          # the server's JSON: what `ask --json` prints
    result: AskResult   # the same answer, for format_result


def base_url(url: str) -> str:
    """http(s)://host:port with no trailing slash; anything else is refused."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"{url}: a server URL is http://HOST:PORT (or https://)")
    if parts.username or parts.password:
        raise ClientError(f"{parts.hostname}: put the token in TSPO_EDGE_TOKEN, not in the URL")
    return url


def video_ref(video) -> str | int:
    """What the server is sent: an existing local file as its absolute path (the server looks it
    up among its indexed paths), a whole number as an id, anything else as given."""
    text = str(video)
    path = Path(text).expanduser()
    if path.is_file():
        return str(path.resolve())
    return int(text) if text.isdigit() else text


def ask_remote(url: str, video, question: str | None, *, options: Sequence[str] | None = None,
               frames: int | None = None, method: str = "topk", mllm: str | None = None,
               token: str | None = None, timeout: float = 120.0,
               local_only: Mapping[str, object] | None = None) -> RemoteAnswer:
    """POST /api/ask on a running server, checked first: `ask --server`.

    `local_only`: what the caller was given that only a local ask can use (a contact sheet, a
    batch, its own models), by the name the user gave it; any that is set is refused. `mllm`:
    "none" asks the server to skip its answerer; anything else leaves the server's own.
    Raises InputError for bad input (nothing sent), ClientError for what the server says."""
    given = [name for name, value in (local_only or {}).items() if value is not None]
    if given:
        raise InputError(f"{', '.join(given)}: not with --server (the server's models answer); "
                         f"ask locally without --server")
    if video is None or question is None:
        raise InputError("give VIDEO and QUESTION")
    length = len(question) + sum(len(o) for o in options or [])
    if length > MAX_QUESTION_CHARS:
        raise InputError(f"the question has {length} characters with its options; at most {MAX_QUESTION_CHARS} are taken")
    if method not in METHODS:
        raise InputError(f"--method {method}: choose from {' | '.join(METHODS)}")
    body: dict = {"video": video_ref(video), "question": question, "method": method}
    if options:
        body["options"] = list(options)
    if frames is not None:
        body["frames"] = int(frames)
    if mllm is not None and mllm.strip() == "none":
        body["mllm"] = "none"
    data = request(url, "/api/ask", body, token=token, timeout=timeout)
    return RemoteAnswer(data, result_from_dict(data))


def request(url: str, path: str, body: dict | None = None, *, token: str | None = None,
            timeout: float = 120.0) -> dict:
    base = base_url(url)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        # bytes: http.client would send a str header as Latin-1, and refuse any other token
        req.add_header("Authorization", b"Bearer " + token.strip().encode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read().decode()).get("error") or e.reason
        except (ValueError, AttributeError, OSError, RecursionError):
            msg = e.reason
        raise ClientError(f"{base}: {e.code} {' '.join(str(msg).split())}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise ClientError(f"{base}: cannot reach the server ({reason})") from None
    except ValueError as e:  # not JSON
        raise ClientError(f"{base}: not a tspo-edge server (answer is not JSON: {e})") from None
    except RecursionError:  # JSON nested deeper than Python's stack: no answer of ours
        raise ClientError(f"{base}: not a tspo-edge server (answer is JSON nested too deeply)") from None


def result_from_dict(d: dict) -> AskResult:
    """The AskResult a server's JSON describes (for printing; no pixels)."""
    try:
        return AskResult(
            video=d["video"], question=d["question"], stem=d["stem"], options=list(d.get("options") or []),
            answer=d.get("answer"), letter=d.get("letter"),
            frames=[Keyframe(int(k["index"]), float(k["time"]), float(k["score"])) for k in d["frames"]],
            method=d["method"], timings={k: float(v) for k, v in d["timings"].items()},
            models=dict(d["models"]), note=d.get("note") or "", indexed_now=bool(d.get("indexed_now")),
            option_scores=d.get("option_scores"),
            warning=d["warning"] if isinstance(d.get("warning"), str) else None)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ClientError(f"the server's answer is not an ask result (missing {e})") from None
