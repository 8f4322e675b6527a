"""Whether a file needs indexing, decided before any model loads.

A rerun over an archive that is already indexed should cost a stat and a fingerprint per file,
not a model load. A file is skipped without loading anything when all of these hold:

1. its stored row is `indexed` and still describes the file: size, mtime and fingerprint match,
   sampled with the same fps and frame limit (`is_current`);
2. the index has recorded, for the model spec asked now, which encoder and agent ids that spec
   gave when it was last loaded (meta key `models:<hash of the spec>`, written by every run that
   loads models), and nothing that could change those ids has changed since: the spec strings
   themselves (runtime, encoder, agent, export folder), the tspo-edge version, and for a spec that
   is a file or a folder, the size and mtime of every file in it (a retrained checkpoint saved
   over the old one changes them);
3. the row's encoder id and agent id are the recorded ones.

A file recorded as failed that has not changed since (size, mtime and fingerprint) is not tried
again either (`failed_unchanged`): its stored error is its result, and nothing loads; a changed
file, or a run asked to retry failures, tries it again.

Anything else (a new or changed file, a spec never loaded against this index, a checkpoint that
changed) leaves the decision to `pipeline.index_video`, with the models loaded.
A hub id is compared as a string: the weights a hub id resolves to are taken as fixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tspo_edge import __version__
from tspo_edge.models import LITE, ModelSpec
from tspo_edge.storage.store import Store, VideoRow, canonical_path, fingerprint

MODELS_KEY = "models:"   # meta key prefix; the rest is a hash of the spec


def is_current(row: VideoRow | None, size: int, mtime: float, fp: str, sampling) -> bool:
    """Whether a stored row still describes the file as it is, sampled as asked
    (`sampling`: anything with `fps` and `max_frames`)."""
    # the fingerprint samples 3 MiB, so an edit elsewhere shows only in mtime: all three must match
    if row is None or row.status != "indexed" or (row.size, row.mtime, row.fingerprint) != (size, mtime, fp):
        return False
    if row.sample_fps is None or abs(row.sample_fps - sampling.fps) > 1e-9:
        return False
    return row.max_frames == sampling.max_frames


def _as_path(spec: str | None) -> str | None:
    """A spec string that names an existing file or folder, as an absolute path (else as given)."""
    if spec is None or spec.lower() == LITE or spec.startswith("similarity:"):
        return spec
    p = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    return str(p.resolve()) if p.exists() else spec


def _files(spec: str | None) -> dict[str, list[int]]:
    """{path: [size, mtime_ns]} of a spec that is a file, or of every file under a folder spec."""
    if spec is None or not os.path.exists(spec):
        return {}
    if os.path.isfile(spec):
        st = os.stat(spec)
        return {spec: [st.st_size, st.st_mtime_ns]}
    out: dict[str, list[int]] = {}
    for root, dirs, names in os.walk(spec):
        dirs.sort()
        for name in names:
            f = os.path.join(root, name)
            try:
                st = os.stat(f)
            except OSError:
                continue
            out[f] = [st.st_size, st.st_mtime_ns]
    return dict(sorted(out.items()))


def models_stamp(spec: ModelSpec) -> dict:
    """What decides the encoder and agent ids a spec gives, read without loading anything."""
    encoder = spec.encoder_spec if spec.runtime != "onnx" else spec.encoder
    named = {"runtime": spec.runtime, "encoder": _as_path(encoder), "agent": _as_path(spec.agent),
             "model_dir": _as_path(spec.model_dir)}
    files: dict[str, list[int]] = {}
    for value in (named["encoder"], named["agent"], named["model_dir"]):
        files.update(_files(value))
    return {**named, "version": __version__, "files": files}


def stamp_key(stamp: dict) -> str:
    named = json.dumps([stamp["runtime"], stamp["encoder"], stamp["agent"], stamp["model_dir"]])
    return MODELS_KEY + hashlib.blake2b(named.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class RecordedModels:
    """The ids a spec gave when it was last loaded against this index."""
    encoder_id: str
    agent_id: str
    agent_source: str


def record_models(store: Store, stamp: dict, encoder_id: str, agent_id: str, agent_source: str) -> None:
    """Record which ids the spec of `stamp` gave (call it with the stamp taken before loading)."""
    value = json.dumps({**stamp, "encoder_id": encoder_id, "agent_id": agent_id, "agent_source": agent_source},
                       sort_keys=True)
    key = stamp_key(stamp)
    if store.meta(key) != value:
        store.set_meta(key, value)


def recorded_models(store: Store, stamp: dict) -> RecordedModels | None:
    """The recorded ids for this stamp's spec, if nothing that decides them has changed."""
    raw = store.meta(stamp_key(stamp))
    if raw is None:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    if any(rec.get(k) != v for k, v in stamp.items()):
        return None
    if rec.get("encoder_id") != store.encoder_id:  # the index was re-bound since
        return None
    return RecordedModels(rec["encoder_id"], rec["agent_id"], rec.get("agent_source") or "")


@dataclass
class FileState:
    """A file as it is on disk now, and its stored row."""
    key: str
    size: int
    mtime: float
    fingerprint: str
    row: VideoRow | None


class Freshness:
    """Checks files against the store for one spec and sampling, loading no model.

    `Freshness(store, spec, sampling).current(path)` -> the stored row when the file needs no
    work (see the module docstring), else None. `recorded` is None when this spec's ids are not
    known to the index (then every file needs the models)."""

    def __init__(self, store: Store, spec: ModelSpec, sampling):
        self.store = store
        self.sampling = sampling
        self.stamp = models_stamp(spec)
        self.recorded = recorded_models(store, self.stamp)
        self._rows: dict[str, VideoRow] | None = None

    def rows(self) -> dict[str, VideoRow]:
        """Every stored row by path, read once (one query, not one per file)."""
        if self._rows is None:
            self._rows = {r.path: r for r in self.store.videos()}
        return self._rows

    def forget(self) -> None:
        """Read the rows and the recorded ids again (after writes: a long-running watch calls it)."""
        self._rows = None
        self.recorded = recorded_models(self.store, self.stamp)

    def state(self, path) -> FileState:
        """Stat and fingerprint the file (OSError when it cannot be read)."""
        key = canonical_path(path)
        st = os.stat(key)
        return FileState(key, st.st_size, st.st_mtime, fingerprint(key, st.st_size), self.rows().get(key))

    def failed_unchanged(self, path) -> VideoRow | None:
        """The stored row of a file recorded as failed that has not changed since, else None."""
        try:
            s = self.state(path)
        except OSError:
            return None
        row = s.row
        if row is None or row.status != "failed" or row.size is None:
            return None
        return row if (row.size, row.mtime, row.fingerprint) == (s.size, s.mtime, s.fingerprint) else None

    def current(self, path) -> VideoRow | None:
        if self.recorded is None:
            return None
        try:
            s = self.state(path)
        except OSError:
            return None  # index_video records why
        row = s.row
        if not is_current(row, s.size, s.mtime, s.fingerprint, self.sampling):
            return None
        if (row.encoder_id, row.agent_id) != (self.recorded.encoder_id, self.recorded.agent_id):
            return None
        return row
