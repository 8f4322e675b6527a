"""Hugging Face hub ids, offline first: the local cache, else one fast probe, else one clear line.

Both the encoders and the MLLM answerers take hub ids. Left to itself, transformers asks the
hub for file after file and retries each one, so with no network a model that is not cached
fails only after minutes of retry warnings. Here a hub id is settled before transformers sees it:

1. its config.json is in the local cache: load from the cache only (no request at all);
2. the hub is off by setting (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE): fail at once;
3. otherwise one request for the model's info, with a short timeout and no retry: if the hub
   answers, download as usual; if it cannot be reached, or has no such model, fail at once.

Errors are ModelLoadError, one line naming the id and the cause.
"""

from __future__ import annotations

import os

from huggingface_hub import HfApi, constants, try_to_load_from_cache
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                   RevisionNotFoundError)

from tspo_edge.errors import ModelLoadError

PROBE_TIMEOUT = 5.0  # seconds; HF_HUB_ETAG_TIMEOUT, when set, is used instead
_TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    """True when the user turned the hub off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(k, "0").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def probe_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or PROBE_TIMEOUT)
    except ValueError:
        return PROBE_TIMEOUT


def in_cache(repo_id: str, revision: str | None = None) -> bool:
    """Whether the local Hugging Face cache holds the model's config.json (at `revision`)."""
    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def local_files_only(repo_id: str, revision: str | None = None, *, what: str = "a model") -> bool:
    """How to load hub id `repo_id`: True = from the local cache only, False = download (the hub
    answered). Raises ModelLoadError, one line, when neither can work. `what` names the kind of
    model in the advice ("an encoder", "a video MLLM")."""
    if in_cache(repo_id, revision):
        return True
    advice = f"download it once where the hub is reachable, or pass {what} folder"
    if offline():
        raise ModelLoadError(f"{repo_id}: not in the local Hugging Face cache and the hub is off "
                             f"(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); {advice}")
    probe(repo_id, revision, advice)
    return False


def probe(repo_id: str, revision: str | None = None, advice: str = "") -> None:
    """One request for the model's info (short timeout, no retry); ModelLoadError if it fails."""
    ep = endpoint()
    tail = f"; {advice}" if advice else ""
    try:
        HfApi(endpoint=ep).model_info(repo_id, revision=revision, timeout=probe_timeout())
    except GatedRepoError as e:
        raise ModelLoadError(f"{repo_id}: a gated model: accept its terms on the hub and set HF_TOKEN{tail}") from e
    except RevisionNotFoundError as e:
        raise ModelLoadError(f"{repo_id}: the hub at {ep} has no revision {revision!r}{tail}") from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(f"{repo_id}: no such model on the hub at {ep} (or a private one: set HF_TOKEN){tail}") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise ModelLoadError(f"{repo_id}: the hub at {ep} answered HTTP {status}{tail}") from e
    except Exception as e:  # the transport (httpx or requests): refused, timed out, no DNS, TLS …
        cause = " ".join(str(e).split())[:200] or type(e).__name__
        raise ModelLoadError(f"{repo_id}: not in the local Hugging Face cache, and the hub at {ep} "
                             f"cannot be reached ({type(e).__name__}: {cause}){tail}") from e
