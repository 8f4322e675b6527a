"""Index files and folders into one SQLite file: find the videos, run the batch, sum it up.

The per-video work (decode -> encode -> events -> one transaction) is the library's
`tspo_edge.pipeline`; this package finds the files and reports on the run. Incremental
(unchanged files are skipped), resumable (a run stopped at any point loses at most the video
in flight), and a file that fails is recorded with its error while the batch goes on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from tspo_edge.errors import StoreError
from tspo_edge.models import Models
from tspo_edge.pipeline import FileResult, Progress, Sampling, iter_index_videos, run_model_ids
from tspo_edge.storage.store import Store

from tspo_edge.index.files import find_videos


@dataclass
class IndexSummary:
    db: str
    encoder_id: str | None
    agent_id: str | None
    agent_source: str | None
    files: list[FileResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None      # why the run stopped early (a storage fault), the rest not tried

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def frames(self) -> int:
        """Frames decoded and encoded in this run (skipped files count none)."""
        return sum(f.frames for f in self.files if f.status == "indexed")

    @property
    def frames_per_s(self) -> float | None:
        """Frames per second of indexing work (decode + encode + events + write)."""
        busy = sum(f.seconds for f in self.files if f.status == "indexed")
        return self.frames / busy if busy > 0 and self.frames else None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing and self.stopped is None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(indexed=self.count("indexed"), skipped=self.count("skipped"),
                 events_recomputed=self.count("events"), failed=len(self.failed), frames=self.frames,
                 frames_per_s=self.frames_per_s, ok=self.ok)
        return d


def index_paths(paths, *, db, models: Models, sampling: Sampling = Sampling(), force: bool = False,
                retry_failed: bool = False, progress: Progress | None = None,
                threaded: bool | None = None) -> IndexSummary:
    """Index files and folders (recursively, by video extension) into the SQLite file `db`.

    Raises IndexMismatchError when `db` was built with another encoder; per-file failures are
    recorded and reported in the summary. A file that failed before and has not changed since is
    reported with its stored error and not tried again, unless `retry_failed` (or `force`).
    """
    def run(store: Store, files, emit) -> None:
        for i, r in enumerate(iter_index_videos(store, files, models, sampling, force=force,
                                                retry_failed=retry_failed, progress=progress, threaded=threaded)):
            emit(i, r)

    return run_engine(paths, db=db, models=models, run=run)


def run_engine(paths, *, db, models: Models, run, summary=IndexSummary, **fields) -> IndexSummary:
    """What every engine (plain, worker processes, Ray) does around its run: find the files, open
    the index, collect the results `run(store, files, emit)` emits as (position, result), keep what
    was committed when a storage fault stops the run part-way, and sum it up (`summary(**fields)`)."""
    t0 = time.perf_counter()
    files, missing = find_videos(paths)
    done: list[tuple[int, FileResult]] = []
    stopped = None
    with Store(db) as store:
        try:
            run(store, files, lambda order, r: done.append((order, r)))
        except StoreError as e:  # a storage fault mid-run: what was committed stays, the rest waits
            if not any(r.status in ("indexed", "events") for _, r in done):
                raise
            stopped = str(e)
        ids = run_model_ids(store, models)  # loads nothing a run with nothing to do did not load
    return summary(str(db), *ids, files=[r for _, r in sorted(done, key=lambda d: d[0])],
                   missing=[str(m) for m in missing], seconds=time.perf_counter() - t0, stopped=stopped, **fields)
