"""`tspo-edge serve` as one call: `serve(ServeOptions(...))` returns when the server stops.

In order: the address and the token are checked and the port bound (tspo_edge.serving.listen),
before any model loads; torch's threads are set; the models and the answerer load; a watch of
folders starts beside the server when asked for; the app is built (tspo_edge.serving.app); one
line says where it serves; uvicorn serves on the bound socket until it is stopped (Ctrl-C,
SIGTERM); then the watch is stopped between videos and waited for.

The watch itself belongs to the indexing layer (`tspo_edge.index.watch.WatchService`), which this
library does not import: the caller hands its class in as `watcher`, and this module gives it the
models to load, the stop event, and what to do after each video (bring the search data up to
date, so the server finds the new moments; one line). Lines meant for the user go to `say`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import uvicorn

from tspo_edge import limits as L
from tspo_edge.checks import check_range
from tspo_edge.errors import InputError
from tspo_edge.models import ModelSpec, load_models
from tspo_edge.models.mllm import answerer_for
from tspo_edge.serving.app import create_app
from tspo_edge.serving.listen import bind, check_bind
from tspo_edge.storage.search import refresh as search_refresh
from tspo_edge.storage.store import Store

REFRESHING = ("indexed", "events", "missing", "restored")  # watch results that change what search finds
WATCH_JOIN_SECONDS = 600  # the video in flight is finished, or never committed


@dataclass
class ServeOptions:
    db: Path
    spec: ModelSpec
    host: str = "127.0.0.1"
    port: int = 8008
    token: str | None = None              # the bearer token clients send; needed off loopback
    mllm: str = "lite"                    # the answerer of /api/ask (tspo_edge.models.mllm.load_answerer)
    mllm_model: str | None = None
    trust_remote_code: bool = False
    index_roots: Sequence[Path] = ()      # an ask may index new videos under these (the index opens writable)
    allow_hosts: Sequence[str] = ()       # Host names answered besides loopback and `host`
    threads: int = 8                      # request threads
    torch_threads: int = 1                # threads of one torch model call
    watch: Sequence[Path] = ()            # folders (or files) kept indexed beside the server
    settle: float | None = None           # the watch's settle seconds (None: the watcher's default)

    def check(self) -> "ServeOptions":
        """The options as `serve` flags give them, checked before anything binds or loads (InputError)."""
        if not 0 < self.port < 65536:
            raise InputError(f"--port {self.port}: must be 1 to 65535")
        check_range(self.threads, "--threads", 1, L.MAX_WORKERS, integer=True)
        check_range(self.torch_threads, "--torch-threads", 1, L.MAX_WORKERS, integer=True)
        check_range(self.settle, "--settle", 0, L.MAX_SECONDS)
        if not Path(self.db).is_file():
            raise InputError(f"{self.db}: no such index (run `tspo-edge index` first)")
        for root in self.index_roots:
            if not Path(root).is_dir():
                raise InputError(f"{root}: --index-root is not a folder")
        for folder in self.watch:
            if not Path(folder).exists():
                raise InputError(f"{folder}: --watch needs an existing file or folder")
        return self


class Watcher(Protocol):
    def start(self) -> object: ...
    def status(self) -> dict: ...
    def join(self, timeout: float | None = None) -> None: ...


# WatchService's constructor: (folders, *, db, models, settle, stop, on_result, on_error) -> Watcher
WatcherFactory = Callable[..., Watcher]


def serve(options: ServeOptions, *, watcher: WatcherFactory | None = None,
          say: Callable[[str], None] = lambda line: None) -> None:
    """Serve `options.db` until the server stops; TspoError (ServeError, StoreError, ...) before it starts."""
    o = options
    if o.watch and watcher is None:
        raise ValueError("serve: options.watch needs a watcher (tspo_edge.index.watch.WatchService)")
    check_bind(o.host, o.token)
    sock = bind(o.host, o.port)
    stop = threading.Event()
    watch = None
    try:
        if o.spec.runtime == "torch":
            import torch  # optional: the [torch] extra (the torch runtime loads it anyway)

            torch.set_num_threads(o.torch_threads)
        models = load_models(o.spec)
        answerer = answerer_for(o.mllm, models, model=o.mllm_model, trust_remote_code=o.trust_remote_code)
        if o.watch:
            watch = _watch(o, watcher, stop, say)
        app = create_app(o.db, models, answerer, token=o.token, allow_index=bool(o.index_roots),
                         index_roots=o.index_roots, threads=o.threads, host=o.host, allow_hosts=o.allow_hosts,
                         watch_status=watch.status if watch is not None else None)
        say(startup_line(o))
        if watch is not None:
            watch.start()
        config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        stop.set()
        if watch is not None:
            watch.join(timeout=WATCH_JOIN_SECONDS)
        sock.close()


def startup_line(o: ServeOptions) -> str:
    """The line that says where it serves, whether a token is needed, and whether the index is writable."""
    host = o.host.strip().strip("[]")
    shown_host = f"[{host}]" if ":" in host else host
    index = "writable under " + ", ".join(map(str, o.index_roots)) if o.index_roots else "read-only"
    return (f"serving {o.db} on http://{shown_host}:{o.port}/ (API: /docs; "
            f"{'token required' if o.token else 'no token: loopback only'}; index {index})")


def _watch(o: ServeOptions, watcher: WatcherFactory, stop: threading.Event, say: Callable[[str], None]) -> Watcher:
    """The watch beside the server, with its own models (the server's are used by its request
    threads) and its own writing connection; after each video the search data is brought up to date."""

    def on_result(r) -> None:
        say(f"watch: {r.status} {r.path}")
        if r.status in REFRESHING:
            with Store(o.db) as store:
                search_refresh(store)

    settle = {} if o.settle is None else {"settle": o.settle}
    return watcher(list(o.watch), db=o.db, models=lambda: load_models(o.spec), stop=stop, on_result=on_result,
                   on_error=lambda message: say(f"watch failed: {message}"), **settle)
