"""The decoders by name: the one place a `--decoder` name becomes a backend.

    DECODERS        name -> backend (pyav.py, decord.py, nvdec.py; the interface: base.Decoder)
    available()     the names installed here
    get(name)       the backend, or a TspoError saying the name is unknown or what to install
    resolve(name)   the name to decode with on this machine, and why when it is not the one asked
    choose(name)    resolve, with the one line a user reads when the decoder falls back
    status()        name -> "ok" or why not (tspo-edge doctor)
"""

from __future__ import annotations

from tspo_edge.errors import TspoError
from tspo_edge.media import decord, nvdec, pyav
from tspo_edge.media.base import Decoder

DECODERS: dict[str, Decoder] = {d.name: d for d in (pyav.DECODER, decord.DECODER, nvdec.DECODER)}


def available() -> list[str]:
    """Decoders whose package is installed (NVDEC: whether or not a GPU is here; see resolve)."""
    return [name for name, d in DECODERS.items() if d.missing() is None]


def get(name: str) -> Decoder:
    decoder = DECODERS.get(name)
    if decoder is None:
        raise TspoError(f"unknown decoder {name!r}: choose one of {', '.join(available())}")
    why = decoder.missing()
    if why is not None:
        raise TspoError(why)
    return decoder


def resolve(name: str) -> tuple[str, str | None]:
    """(name, None) where `name` can decode here (or is not a decoder: `get` says so later), else
    (its fallback, why `name` cannot run here): NVDEC without a GPU decodes with PyAV."""
    decoder = DECODERS.get(name)
    why = decoder.cannot_run() if decoder is not None else None
    if why is None:
        return name, None
    return decoder.fallback or "pyav", why


def choose(name: str) -> tuple[str, str | None]:
    """`resolve` for a user: (the decoder to use here, None), or (its fallback, the one line
    saying why: "nvdec: <why>; decoding with PyAV")."""
    used, why = resolve(name)
    return used, None if why is None else f"{name}: {why}; decoding with {title(used)}"


def title(name: str) -> str:
    """The decoder as a message names it ("PyAV")."""
    return DECODERS[name].title


def status() -> dict[str, str]:
    """Decoder -> 'ok' or why it cannot run here."""
    return {name: d.status() for name, d in DECODERS.items()}
