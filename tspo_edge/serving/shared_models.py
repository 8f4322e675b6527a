"""The models the server's request threads share: each model call holds one lock (tokenizers and
torch modules are not safe to share between threads), and question texts are batched.

    Locked(answerer, lock, ("answer",))   the answerer's calls under the lock; other attributes pass through
    SharedEncoder(encoder, lock)          images under the lock; texts batched across threads and cached
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np


class Locked:
    """An answerer (or encoder) whose model calls hold one lock (other attributes pass through)."""

    def __init__(self, inner, lock: threading.RLock, methods: tuple[str, ...]):
        self._inner, self._lock = inner, lock
        for name in methods:
            if hasattr(inner, name):
                setattr(self, name, self._wrap(getattr(inner, name)))

    def _wrap(self, fn):
        def call(*a, **kw):
            with self._lock:
                return fn(*a, **kw)
        return call

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Job:
    __slots__ = ("texts", "out", "error", "done")

    def __init__(self, texts: list[str]):
        self.texts, self.out, self.error, self.done = texts, None, None, False


class SharedEncoder(Locked):
    """The served encoder, shared by the request threads.

    Model calls hold one lock. Texts asked for while a text batch is being encoded wait and go
    together in the next call (one forward pass for eight questions costs little more than for
    one), and the last `cache` texts' embeddings are kept (identical text, identical embedding).
    """

    def __init__(self, inner, lock: threading.RLock, cache: int = 1024):
        super().__init__(inner, lock, ("encode_images",))
        self._cv = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache
        self.batches = 0   # encoder calls made for texts
        self.encoded = 0   # texts encoded by them (encoded / batches: the mean batch)

    def encode_texts(self, texts) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self._inner.dim), np.float32)
        with self._cv:
            hit = [self._cache.get(t) for t in texts]
            if all(h is not None for h in hit):
                for t in texts:
                    self._cache.move_to_end(t)
                return np.stack(hit)
            job = _Job(texts)
            self._queue.append(job)
            while not job.done:
                if self._busy:  # someone is encoding: our texts go in the next batch
                    self._cv.wait()
                    continue
                self._busy = True
                batch, self._queue = self._queue, []
                self._cv.release()
                try:
                    self._encode(batch)
                finally:
                    self._cv.acquire()
                    self._busy = False
                    self._cv.notify_all()
        if job.error is not None:
            raise job.error
        return job.out

    def _encode(self, batch: list[_Job]) -> None:
        unique = list(dict.fromkeys(t for job in batch for t in job.texts))
        try:
            with self._lock:
                emb = np.asarray(self._inner.encode_texts(unique), np.float32)
            self.batches += 1
            self.encoded += len(unique)
        except Exception as e:  # noqa: BLE001 - handed to every waiting request, raised there
            for job in batch:
                job.error, job.done = e, True
            return
        row = dict(zip(unique, emb))
        with self._cv:
            for t, v in row.items():
                self._cache[t] = v
                self._cache.move_to_end(t)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        for job in batch:
            job.out, job.done = np.stack([row[t] for t in job.texts]), True
