"""Where `tspo-edge serve` listens: the address and the token checked, and the socket bound,
before any model loads, so that a bad address, a busy port or an unsendable token is one line
at once; uvicorn then serves on that socket (no second bind, no race).

    check_bind("0.0.0.0", token)   # ServeError: off loopback without a token, or a token no client can send
    bind("::1", 8008) -> socket    # ServeError: not an address of this machine, the port in use
"""

from __future__ import annotations

import errno
import socket

from tspo_edge.errors import ServeError
from tspo_edge.serving.guard import check_token, is_loopback, one_line


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token, or with a token no client can send."""
    try:
        token = check_token(token)
    except ValueError as e:
        raise ServeError(str(e)) from None
    if not is_loopback(host) and not token:
        raise ServeError(f"host {host} is reachable from other machines: set TSPO_EDGE_TOKEN "
                         f"(a bearer token clients must send) or serve on 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (IPv6 as `::1` or `[::1]`), listening, inheritable."""
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
