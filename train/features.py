"""Frame embeddings for training, from the index: indexed once, never decoded again.

Training needs each video's raw embeddings x[T, D] and their times; the event
features z are recomputed every step by the agent being trained (the stored z were
made by the agent that indexed the videos).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from tspo_edge.errors import TspoError
from tspo_edge.models import Models
from tspo_edge.pipeline import Sampling, index_videos
from tspo_edge.storage.store import Store


class FeatureSource(Protocol):
    def features(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        """(times float64[T], x float32[T, D]) of a video at the index's sampling rate."""


class MemoryFeatures:
    """Features held in a dict {video: (times, x)} (synthetic runs and tests)."""

    def __init__(self, table: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.table = table

    def features(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        return self.table[video]


class StoreFeatures:
    """Features read from a tspo-edge index, with a small LRU cache (10k videos need not fit in RAM)."""

    def __init__(self, store, video_ids: dict[str, int], *, encoder_id: str | None = None, cache: int = 256):
        self.store, self.video_ids, self.encoder_id = store, video_ids, encoder_id
        self.cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.size = cache

    def features(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self.cache.get(video)
        if hit is not None:
            self.cache.move_to_end(video)
            return hit
        f = self.store.load_features(self.video_ids[video], encoder_id=self.encoder_id)
        out = (f.times, f.x)
        self.cache[video] = out
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return out


def indexed_features(videos: list[str], *, db: str | Path, models: Models, fps: float = 1.0,
                     progress: Callable | None = None) -> tuple[StoreFeatures, list[str]]:
    """Index the videos the index lacks (or holds at another rate), then serve features from it.

    Returns the feature source and the videos that could not be indexed (reported, skipped).
    """
    sampling = Sampling(fps=fps)

    def usable(row) -> bool:
        return row is not None and row.status == "indexed" and row.sample_fps is not None \
            and abs(row.sample_fps - fps) < 1e-9

    with Store(db) as store:
        if store.encoder_id:
            store.check_encoder(models.encoder.id)
        todo = [v for v in videos if not usable(store.find_video(v))]
        if todo:
            index_videos(store, [Path(v) for v in todo], models, sampling, progress=progress)
    store = Store(db, readonly=True)
    ids: dict[str, int] = {}
    failed: list[str] = []
    for v in videos:
        row = store.find_video(v)
        if usable(row):
            ids[v] = row.id
        else:
            failed.append(v)
    if not ids:
        raise TspoError(f"{db}: none of the {len(videos)} training videos could be indexed")
    return StoreFeatures(store, ids, encoder_id=models.encoder.id), failed
