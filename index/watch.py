"""Continuous ingestion: keep an index current while recordings land in watched folders.

    watch(["/recordings"], db="tspo-edge.db", models=load_models(spec), stop=threading.Event())

runs until `stop` is set (from a signal handler, or from the thread of a server that runs the
watch beside its readers) and does, in order:

1. at start, checks every video under the watched paths against the store without loading a
   model (`tspo_edge.freshness`), and marks rows whose files are gone as `missing`;
2. then follows file-system events (`watchfiles`: inotify / FSEvents / ReadDirectoryChangesW, or
   polling with `poll=True`, for network mounts where events do not arrive);
3. a new or changed video is indexed once its size and mtime have stayed the same for `settle`
   seconds (a recording still being written is left alone until then, so it is indexed once,
   whole); a file that fails is recorded failed once and tried again only when it changes;
4. a video removed from disk is marked `missing` (kept out of search and ask; restored without
   decoding if the same file comes back). A watched folder that has vanished or is empty while
   the index holds videos under it (an unmounted network share) marks nothing missing.

The models load on the first video that needs them and stay loaded. `stop` is checked between
videos: the video in flight is finished and committed first. The watch opens its own Store
(SQLite connection), so it may run in a thread of a process whose other threads read the index.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import watchfiles

from tspo_edge.errors import InputError
from tspo_edge.freshness import Freshness
from tspo_edge.models import Models
from tspo_edge.pipeline import FileResult, Progress, Sampling, bind_models, index_video
from tspo_edge.storage.store import Store, canonical_path, fingerprint

from tspo_edge.index.files import admit_entry, find_videos, is_video_name

DEFAULT_SETTLE = 5.0   # seconds a file's size and mtime must stay the same before it is indexed


@dataclass
class WatchSummary:
    db: str
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def to_dict(self) -> dict:
        return {"db": self.db, "seconds": self.seconds,
                **{s: self.count(s) for s in ("indexed", "events", "failed", "missing", "restored")}}

    def stopped_line(self) -> str:
        """The watch's last line: "stopped: 2 indexed, 0 failed, 1 missing, 0 restored"."""
        return "stopped: " + ", ".join(f"{self.count(k)} {k}" for k in ("indexed", "failed", "missing", "restored"))


class _Pending:
    """Files seen changing, each with the (size, mtime_ns) last seen and since when it held."""

    def __init__(self, settle: float):
        self.settle = settle
        self.files: dict[str, tuple[int, int, float]] = {}

    def observe(self, key: str, now: float) -> None:
        try:
            st = os.stat(key)
        except OSError:
            self.files.pop(key, None)
            return
        old = self.files.get(key)
        if old is None or old[:2] != (st.st_size, st.st_mtime_ns):
            self.files[key] = (st.st_size, st.st_mtime_ns, now)

    def due(self, now: float) -> list[str]:
        """Files whose size and mtime held for `settle` seconds (checked again now), in path order."""
        for key in list(self.files):
            self.observe(key, now)
        return sorted(k for k, (_, _, since) in self.files.items() if now - since >= self.settle)

    def drop(self, key: str) -> None:
        self.files.pop(key, None)


class _Watch:
    def __init__(self, store: Store, roots: list[Path], models: Models, sampling: Sampling, settle: float,
                 on_result: Callable[[FileResult], None] | None, progress: Progress | None):
        self.store, self.roots, self.models, self.sampling = store, roots, models, sampling
        self.files = {str(r) for r in roots if r.is_file()}       # files watched by name
        self.keys = [str(r) for r in roots]                       # where a link may point
        self.pending = _Pending(settle)
        self.on_result, self.progress = on_result, progress
        self.fresh = Freshness(store, models.spec, sampling)
        self.bound = False
        self.summary = WatchSummary(str(store.path))

    # ---- what is watched ------------------------------------------------------------------
    def wanted(self, key: str) -> bool:
        if key in self.files:
            return True
        if not is_video_name(os.path.basename(key)):
            return False
        return any(key.startswith(str(r) + os.sep) for r in self.roots if str(r) not in self.files)

    def _report(self, r: FileResult) -> None:
        self.summary.results.append(r)
        if self.on_result is not None:
            self.on_result(r)

    # ---- start and events -------------------------------------------------------------------
    def scan(self, now: float) -> None:
        """Every video under the roots goes through the settle wait; rows of vanished files are marked missing."""
        videos, _ = find_videos([str(r) for r in self.roots if r.exists()], roots=self.keys)
        for v in videos:
            self.pending.observe(canonical_path(v), now)
        self.reconcile(self.roots)

    def reconcile(self, under: Iterable[Path]) -> None:
        """Mark missing the rows under these paths whose files are gone (not under a vanished root)."""
        rows = [r for r in self.store.videos() if r.status != "missing"]
        for top in under:
            top_s = str(top)
            if not self._available(top):
                continue
            for row in rows:
                if (row.path == top_s or row.path.startswith(top_s + os.sep)) and not os.path.exists(row.path):
                    self.pending.drop(row.path)
                    self._missing(row.path)

    def _available(self, top: Path) -> bool:
        """Whether a removed file under `top` can be trusted to be gone: its watched root exists and,
        for a folder, is not empty (an unmounted share shows as an empty mount point)."""
        root = next((r for r in self.roots if top == r or r in top.parents), None)
        if root is None:
            return False
        if str(root) in self.files:
            return root.parent.is_dir()
        try:
            return root.is_dir() and any(os.scandir(root))
        except OSError:
            return False

    def _missing(self, key: str) -> None:
        row = self.store.mark_missing(key)
        if row is not None:
            self._report(FileResult(key, "missing", 0, 0.0, row.duration, error=row.error, video_id=row.id))

    def changed(self, change: str, path: str, now: float) -> None:
        key = os.path.abspath(path)
        if change == "deleted":
            self.pending.drop(key)
            self.reconcile([Path(key)])
            return
        if os.path.isdir(key) and not os.path.islink(key):  # a folder moved in: its videos
            for v in find_videos([key], roots=self.keys)[0]:
                self.pending.observe(canonical_path(v), now)
            return
        if self.wanted(key):
            admitted = key if key in self.files else admit_entry(key, self.keys)
            if admitted is not None:
                self.pending.observe(admitted, now)

    # ---- work -------------------------------------------------------------------------------
    def work(self, now: float, stop: threading.Event) -> None:
        due = self.pending.due(now)
        if not due:
            return
        self.fresh.forget()
        for key in due:
            if stop.is_set():
                return  # the rest stays pending; a restart settles it again
            self.pending.drop(key)
            self._one(key)

    def _one(self, key: str) -> None:
        try:
            st = os.stat(key)
        except OSError:
            return  # gone meanwhile: its deletion event marks it
        try:
            fp = fingerprint(key, st.st_size)
        except OSError:
            fp = None
        row = self.fresh.rows().get(key)
        same = row is not None and (row.size, row.mtime) == (st.st_size, st.st_mtime) and row.fingerprint == fp
        if same and row.status == "failed":
            return  # failed before, unchanged since: not retried until it changes
        if same and row.status == "missing":
            row = self.store.mark_found(row.id)
            self._report(FileResult(key, "restored", row.frame_count or 0, 0.0, row.duration, video_id=row.id))
            self.fresh.forget()
        if self.fresh.current(key) is not None:
            return  # up to date: nothing loads
        if not self.bound:
            bind_models(self.store, self.models, self.fresh.stamp)  # the models load here, once
            self.bound = True
        r = index_video(self.store, key, self.models, self.sampling, progress=self.progress)
        self.fresh.forget()
        if r.status == "failed" and not os.path.exists(key):
            self._missing(key)  # removed while it was being indexed: gone, not broken
            return
        if r.status != "skipped":
            self._report(r)


def watch(paths, *, db, models: Models, sampling: Sampling = Sampling(), settle: float = DEFAULT_SETTLE,
          poll: bool = False, poll_interval: float = 1.0, stop: threading.Event | None = None,
          on_result: Callable[[FileResult], None] | None = None, progress: Progress | None = None,
          on_ready: Callable[[], None] | None = None) -> WatchSummary:
    """Index the videos under `paths` (folders or files) into `db` as they appear, change and settle,
    until `stop` is set; see the module docstring. `on_result` receives each file's result
    (indexed, events, failed, missing, restored); `on_ready` is called once the start scan is
    done and events are followed. Raises InputError for a path that does not exist, IndexMismatchError
    / StoreError for faults of the index itself (they stop the watch)."""
    if not settle >= 0:
        raise InputError(f"settle time {settle}: expected a number of seconds >= 0")
    if not poll_interval > 0:
        raise InputError(f"poll interval {poll_interval}: expected a positive number of seconds")
    roots = []
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file or folder to watch")
        roots.append(Path(canonical_path(p)))
    stop = stop if stop is not None else threading.Event()
    tick_ms = int(max(50, min(500, settle * 250)))
    t0 = time.monotonic()
    with Store(db) as store:
        w = _Watch(store, roots, models, sampling, settle, on_result, progress)
        watcher = watchfiles.watch(*roots, watch_filter=None, debounce=tick_ms, step=50, stop_event=stop,
                                   rust_timeout=tick_ms, yield_on_timeout=True, raise_interrupt=False,
                                   force_polling=poll, poll_delay_ms=int(poll_interval * 1000),
                                   ignore_permission_denied=True)
        started = False
        try:
            for changes in watcher:  # the first yield comes once the watcher is live (after a tick)
                now = time.monotonic()
                if not started:  # scanned after the watcher started: nothing lands unseen in between
                    w.scan(now)
                    started = True
                    if on_ready is not None:
                        on_ready()
                for change, path in sorted(changes, key=lambda c: c[1]):
                    w.changed(change.name, path, now)
                w.work(time.monotonic(), stop)
                if stop.is_set():
                    break
        finally:
            watcher.close()
    w.summary.seconds = time.monotonic() - t0
    return w.summary


def watch_until_signal(paths, **kw) -> tuple[WatchSummary, int | None]:
    """`watch` in the main thread of a command, until SIGTERM or Ctrl-C (SIGINT); either stops
    between videos (the video in flight is finished first). A second Ctrl-C raises
    KeyboardInterrupt at once (the video in flight is not saved). Returns the summary and the
    signal that stopped the watch (None: none did); the handlers before are restored.
    Keywords: those of `watch`."""
    stop, got = threading.Event(), []

    def on_signal(signum, frame) -> None:
        if got and signum == signal.SIGINT:
            raise KeyboardInterrupt
        got.append(signum)
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = watch(paths, stop=stop, **kw)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return summary, (got[0] if got else None)


class WatchService:
    """`watch` in a thread beside a server, restarted after a failure (1 s, doubling to 60 s), with
    its state for `/api/health`: `running`, `starting`, `failing` (since when, the last error,
    restarts so far) or `stopped`. `models` is a callable giving the loaded models (loaded once)."""

    def __init__(self, paths, *, db, models: Callable[[], Models], settle: float = DEFAULT_SETTLE,
                 stop: threading.Event, on_result: Callable[[FileResult], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.paths, self.db, self._models, self.settle = [str(p) for p in paths], db, models, settle
        self.stop, self.on_result, self.on_error = stop, on_result, on_error
        self.state, self.failing_since, self.last_error, self.restarts = "starting", None, None, 0
        self._loaded: Models | None = None
        self.thread = threading.Thread(target=self._run, name="tspo-edge-watch", daemon=True)

    def start(self) -> "WatchService":
        self.thread.start()
        return self

    def status(self) -> dict:
        return {"state": self.state, "folders": self.paths, "failing_since": self.failing_since,
                "last_error": self.last_error, "restarts": self.restarts}

    def _ready(self) -> None:
        self.state, self.failing_since = "running", None

    def _run(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                if self._loaded is None:
                    self._loaded = self._models()
                watch(self.paths, db=self.db, models=self._loaded, settle=self.settle, stop=self.stop,
                      on_result=self.on_result, on_ready=self._ready)
                break
            except Exception as e:  # noqa: BLE001 - whatever stopped it, the watch is tried again
                self.state = "failing"
                self.failing_since = self.failing_since or time.strftime("%Y-%m-%dT%H:%M:%S%z")
                self.last_error = " ".join(f"{type(e).__name__}: {e}".split())[:500]
                self.restarts += 1
                if self.on_error is not None:
                    self.on_error(f"{self.last_error}; restarting in {delay:g} s")
                self.stop.wait(delay)
                delay = min(delay * 2, 60.0)
        self.state = "stopped"

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)
