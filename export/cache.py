"""Writing the per-user ONNX cache (tspo_edge.models.onnx_cache) from a torch encoder a command loaded.

The entry is what `tspo-edge export --encoder SPEC` writes (the image and text towers and the
spec's default agent, fp32, by `export_model`), made in a staging folder and renamed into place.
Here, in the consumer layer, because writing it takes torch and the exporters: the library
only finds, checks and loads entries. The command line calls `write_cache` after a command's
own work, so the encoder (moved to the CPU in float32 for tracing) has done its job by then.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tspo_edge.errors import first_line
from tspo_edge.models import Models, load_models
from tspo_edge.models.onnx_cache import publish, staging_dir, writable_root

from tspo_edge.export.api import export_model


@dataclass(frozen=True)
class CacheWrite:
    """What `write_cache` did: `dir` the entry written (None: not written, `error` says why)."""
    spec: str
    dir: Path | None
    seconds: float
    was: str            # the entry's state before: missing, stale or damaged
    reason: str = ""    # why the old entry was unusable (stale, damaged)
    error: str = ""


def write_cache(models: Models) -> CacheWrite | None:
    """Write the cache entry of `models`' encoder when this process loaded it with torch and the
    cache has none usable (missing, stale, damaged); None when there is nothing to write.
    Never raises for a failed write (a read-only disk, an exporter error): the command's own
    result stands, and the CacheWrite says why."""
    todo = models.cache_to_write()
    if todo is None:
        return None
    name = models.spec.encoder_spec
    root, why = writable_root()
    if root is None:
        return CacheWrite(name, None, 0.0, todo.state, todo.reason, f"no writable cache folder ({why})")
    t0 = time.perf_counter()
    staging = None
    try:
        staging = staging_dir(root)
        # the spec's default agent, whatever agent this command ran: the cache serves default asks;
        # the torch encoder this command loaded (one loaded from a damaged entry is loaded anew, on the CPU)
        loaded = None if models.from_cache else models.encoder
        spec = replace(models.spec, runtime="torch", agent=None, device=models.spec.device if loaded else "cpu")
        torch_models = load_models(spec, loaded_encoder=loaded)
        with contextlib.redirect_stdout(sys.stderr):  # stdout may be carrying --json
            export_model(torch_models, staging)
        final = publish(staging, todo.key, name, damaged=todo.state == "damaged")
    except Exception as e:  # noqa: BLE001 - an optional speed-up: any failure leaves the command's result
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        return CacheWrite(name, None, time.perf_counter() - t0, todo.state, todo.reason, first_line(e))
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return CacheWrite(name, final, time.perf_counter() - t0, todo.state, todo.reason)


def describe(w: CacheWrite) -> str:
    """One line for the user."""
    if w.dir is None:
        return (f"note: ONNX towers for {w.spec} not cached ({w.error}); this command ran torch and later "
                "asks will too (set TSPO_EDGE_CACHE to a writable folder)")
    what = {"stale": "replaced stale cached", "damaged": "rebuilt damaged cached"}.get(w.was, "cached")
    why = f"; {w.reason}" if w.was == "damaged" and w.reason else ""
    return f"{what} ONNX towers for {w.spec} in {w.dir} ({w.seconds:.0f} s, once{why})"
