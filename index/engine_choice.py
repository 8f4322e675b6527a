"""Which engine indexes a command's paths: Ray, decoding processes feeding one encoder, or the
plain path in this process (index/engine.py). The same index and summary whichever runs."""

from __future__ import annotations

from tspo_edge.checks import check_range
from tspo_edge.errors import InputError
from tspo_edge.limits import MAX_WORKERS
from tspo_edge.models import Models
from tspo_edge.pipeline import Progress, Sampling

from tspo_edge.index.engine import IndexSummary, index_paths
from tspo_edge.index.parallel import default_workers, index_paths_parallel

ENGINES = ("local", "ray")


def check_engine(engine: str, workers: int | None = None, ray_address: str | None = None) -> None:
    """The engine options of a command, checked before anything loads (InputError naming the option)."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine}: choose local or ray")
    check_range(workers, "--workers", 1, MAX_WORKERS, integer=True)
    if ray_address is not None and engine != "ray":
        raise InputError("--ray-address goes with --engine ray")
    if engine == "ray" and workers is not None:
        raise InputError("--workers is for --engine local (Ray's workers are the cluster's CPUs)")


def index_with_engine(paths, *, db, models: Models, sampling: Sampling = Sampling(), force: bool = False,
                      retry_failed: bool = False, progress: Progress | None = None, engine: str = "local",
                      workers: int | None = None, ray_address: str | None = None) -> IndexSummary:
    """`index_paths` on the engine asked for: Ray (`ray_address`, default a local Ray), `workers`
    decoding processes (default: the cores less one), or with one worker this process alone."""
    check_engine(engine, workers, ray_address)
    if engine == "ray":
        from tspo_edge.index.ray_engine import index_paths_ray  # optional: the [ray] extra

        return index_paths_ray(paths, db=db, models=models, sampling=sampling, address=ray_address, force=force,
                               retry_failed=retry_failed, progress=progress)
    n = default_workers() if workers is None else workers
    if n > 1:
        return index_paths_parallel(paths, db=db, models=models, sampling=sampling, workers=n, force=force,
                                    retry_failed=retry_failed, progress=progress)
    return index_paths(paths, db=db, models=models, sampling=sampling, force=force, retry_failed=retry_failed,
                       progress=progress)
