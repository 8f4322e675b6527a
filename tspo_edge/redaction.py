"""Masking credentials in text that may be shown to a user (server error bodies, URLs, logs).

`redact(text, known=...)` replaces, with `***`:
- the password (or lone token) in URL credentials: `http://user:pass@host` -> `http://user:***@host`;
- Authorization / Proxy-Authorization header values and `Bearer|Basic|Token <value>`;
- OpenAI-style keys (`sk-...`), and values of keys named like api_key, api-key, x-api-key, token,
  access_token, secret, password (in `k=v`, `k: v` and JSON `"k": "v"` form);
- every literal string in `known` (the API key actually in use), wherever it appears.
"""

from __future__ import annotations

import re
from typing import Iterable

MASK = "***"

_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s/@:]*)(?::(?P<pw>[^\s/@]*))?@")
_AUTH_HEADER = re.compile(r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)"
                          r"(?:(bearer|basic|token|digest)\s+)?([^\s\"',;}]+)")
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic|token)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_SK = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")
_NAMED = re.compile(r"(?i)([\"']?\b(?:x-)?(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|"
                    r"client[_-]?secret|password|passwd)\b[\"']?\s*[:=]\s*[\"']?)([^\s\"',&;}]+)")


def _url(m: re.Match) -> str:
    if m.group("pw") is not None:
        return f"{m.group('scheme')}{m.group('user')}:{MASK}@"
    return f"{m.group('scheme')}{MASK}@" if m.group("user") else m.group(0)


def redact(text: object, known: Iterable[str | None] = ()) -> str:
    """`text` as a string with anything that looks like a credential replaced by `***`."""
    s = str(text)
    for secret in known:
        if secret and len(secret) >= 4:
            s = s.replace(secret, MASK)
    s = _URL_CREDENTIALS.sub(_url, s)
    s = _AUTH_HEADER.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, s)
    s = _SCHEME_TOKEN.sub(lambda m: m.group(1) + m.group(2) + MASK, s)
    s = _SK.sub("sk-" + MASK, s)
    s = _NAMED.sub(lambda m: m.group(1) + MASK, s)
    return s
