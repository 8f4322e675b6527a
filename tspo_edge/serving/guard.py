"""The server's trust boundary, as one ASGI middleware in front of every route (docs/security.md).

In order, before any route runs or any body is read:

1. Host allow-list (DNS rebinding): the Host header must name a loopback address or `localhost`,
   the address the server is bound to, or a name given with `--allow-host`; a server bound to
   every interface (0.0.0.0, ::) also takes IP literals, which no DNS answer can stand for.
   Anything else: 421.
2. Origin: a request that is not GET/HEAD and carries an `Origin` (a browser's) must come from an
   allowed host as well: 403. A page on another site cannot make the user's browser post here.
3. The bearer token on /api/ (any UTF-8 token; the header is read as UTF-8), or the session cookie
   (an HMAC of the token, never the token itself): 401.
4. A body size limit: 413.

Every response, errors included, carries `X-Content-Type-Options: nosniff`, a Content-Security-
Policy that allows only this origin's own scripts, styles, images and media (no inline script),
`Cross-Origin-Resource-Policy: same-origin`, `Referrer-Policy: no-referrer` and
`X-Frame-Options: DENY`. An exception no handler expected becomes a one-line JSON 500 and one log
line, never a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Iterable
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tspo_edge.serving")

COOKIE = "tspo_edge_session"
SESSION = "/api/session"      # where a token becomes the session cookie
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
WILDCARD = ("0.0.0.0", "::", "")


def one_line(text) -> str:
    return " ".join(str(text).split())


def error(status: int, message, headers: dict | None = None) -> JSONResponse:
    """The one error body of the server: {"error": "one line"}."""
    return JSONResponse({"error": one_line(message) or "error"}, status_code=status, headers=headers)


def host_name(value: str) -> str | None:
    """The host of a Host header or an authority (no port, no brackets, lower case); None when malformed."""
    value = value.strip().lower()
    if not value or any(c.isspace() or c in "/\\@?#" for c in value):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not value[end + 1:].startswith(":")):
            return None
        return value[1:end]
    if value.count(":") == 1:
        value, _, port = value.partition(":")
        if port and not port.isdigit():
            return None
    elif value.count(":") > 1:  # an unbracketed IPv6 literal is no valid Host
        return None
    return value.rstrip(".")


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`."""
    name = host_name(host) if host.strip().startswith("[") else host.strip().lower()
    if name in ("localhost", "localhost."):
        return True
    ip = _ip(name or "")
    return bool(ip and ip.is_loopback)


class HostPolicy:
    """Which Host (and Origin) names this server answers to."""

    def __init__(self, bound: str = "127.0.0.1", allow: Iterable[str] = ()):
        bound = bound.strip().strip("[]").lower()
        self.wildcard = bound in WILDCARD
        self.names = {"localhost", bound} | {a.strip().strip("[]").lower().rstrip(".") for a in allow if a.strip()}

    def allows(self, name: str | None) -> bool:
        if not name:
            return False
        if name in self.names:
            return True
        ip = _ip(name)
        return ip is not None and (ip.is_loopback or self.wildcard)


class Guard:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app, *, hosts: HostPolicy, secret: str | None, cookie_value: str | None, max_body: int):
        self.app, self.hosts, self.max_body = app, hosts, max_body
        self.secret = secret.encode() if secret else None
        self.cookie_value = cookie_value.encode() if cookie_value else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _with_headers(send)
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.lower(), v)
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.hosts.allows(host_name(host)):
            return await _send(send, error(421, f"this server does not answer to Host {host!r} "
                                                "(start it with --allow-host NAME to serve that name)"))
        origin = headers.get(b"origin")
        if origin is not None and scope.get("method", "GET") not in SAFE_METHODS:
            parts = urlsplit(origin.decode("latin-1"))
            if not self.hosts.allows(host_name(parts.netloc) if parts.scheme in ("http", "https") else None):
                return await _send(send, error(403, f"requests from the page at {origin.decode('latin-1')!r} "
                                                    f"are refused (another site)"))
        # /api/session checks the token itself: a page sends it in the body (a browser cannot put
        # a non-Latin-1 token in a header)
        if self.secret is not None and scope["path"].startswith("/api/") and scope["path"] != SESSION \
                and not self._authorised(headers):
            return await _send(send, error(401, "missing or wrong bearer token (Authorization: Bearer …)",
                                           {"www-authenticate": "Bearer"}))
        length = headers.get(b"content-length")
        if length is not None:
            if not (length.isdigit() and len(length) < 19):
                return await _send(send, error(400, "bad Content-Length"))
            if int(length) > self.max_body:
                return await _send(send, error(413, f"request body over {self.max_body} bytes"))
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise TooLarge(self.max_body)
            return message

        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except Exception as e:  # noqa: BLE001 - the last line of defence: one log line, a JSON 500
            log.error("%s %s: internal error: %s: %s", scope.get("method"), one_line(scope.get("path", ""))[:200],
                      type(e).__name__, one_line(e)[:300])
            if not started:
                await _send(send, error(500, f"internal error ({type(e).__name__})"))

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        return token_matches(headers.get(b"authorization", b""), self.secret) or \
            cookie_matches(headers.get(b"cookie", b""), self.cookie_value)


def token_matches(authorization: bytes, secret: bytes | None) -> bool:
    """`Bearer <token>` against the secret, as UTF-8 bytes, in constant time."""
    if secret is None or authorization[:7].lower() != b"bearer ":
        return False
    return hmac.compare_digest(authorization[7:].strip(), secret)


def cookie_matches(cookie: bytes, value: bytes | None) -> bool:
    if value is None:
        return False
    for part in cookie.split(b";"):
        name, _, got = part.strip().partition(b"=")
        if name == COOKIE.encode() and hmac.compare_digest(got, value):
            return True
    return False


def check_token(token: str | None) -> str | None:
    """The token to require (surrounding spaces dropped), None for none; ValueError for a token
    that is set but empty, or holds control characters (no client could send it)."""
    if token is None:
        return None
    stripped = token.strip()
    if not stripped:
        raise ValueError("TSPO_EDGE_TOKEN is set but empty: set a real token or unset it")
    if any(not c.isprintable() for c in stripped):
        raise ValueError("TSPO_EDGE_TOKEN holds control characters: no client could send it")
    return stripped


class TooLarge(StarletteHTTPException):
    """Raised from the body stream; an HTTPException, so FastAPI's body parsing passes it on (413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes")


def _with_headers(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            have = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": list(message.get("headers", []))
                       + [(k, v) for k, v in SECURITY_HEADERS if k not in have]}
        await send(message)
    return wrapped


async def _send(send, resp: JSONResponse) -> None:
    await send({"type": "http.response.start", "status": resp.status_code, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})
