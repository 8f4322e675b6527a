"""Archive-wide search: the agent's score of every indexed frame against one question.

The agent scores frame t for question q as s_t = (cos(z_t, q) + cos(x_t, q)) / tau. Since
cos(z,q) + cos(x,q) = (z/|z| + x/|x|) . q/|q|, one question-independent *unit-sum* vector
u_t = z_t/|z_t| + x_t/|x_t| per frame turns a search of the whole archive into one inner
product per frame. tspo_edge.storage.search_cache keeps those vectors, quantised to int8 (one scale per
row), in a per-user cache folder, memory-mapped at search time; the index file says which rows
belong to which video (`search_segments`) and how to tell a good cache from a bad one.

A search (NumPy only; SimSIMD's int8 kernels when installed):

1. scans every live row's int8 code against the int8 question: an approximate score a_t and a
   proven bound |exact_t - a_t| <= e_t (quantisation of u and q, the scorer's epsilon, float
   rounding), so hi_t = a_t + e_t bounds the exact score from above;
2. rescores exactly (from a copy of the stored float16 x, z and norms in the cache: the
   numbers `Store.load_features` + `scoring.score_frames` use; random access into SQLite blobs
   walks their overflow pages, ~10 ms a video) every frame whose hi_t reaches a threshold;
3. keeps moments greedily, best first, skipping any frame within `nms_seconds` of a moment
   already kept in the same video and any video that has `per_video` moments already;
4. stops when the threshold is at or below the last kept moment's score (and the last listed
   video's best score): every frame left out is then proven to score below what was returned,
   so the answer is the brute-force answer. Otherwise it lowers the threshold and repeats.

The index file is the one source of truth: videos the cache does not hold (a read-only index
whose cache is missing, a cache that could not be brought up to date because another process
held the write lock, a corrupt cache) are scored exactly from the index itself and merged, so
the answer is the same, only slower. A video whose stored features fail their check is skipped
with one warning (`SearchResult.warnings`); `unsearched` counts them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from tspo_edge.errors import SearchError, StoreDamagedError, StoreError
from tspo_edge.scoring import EPS, TAU
from tspo_edge.storage.search_filters import DEFAULT_MIN_SCORE, Filters, allowed_videos, make_filters
from tspo_edge.storage.search_cache import (TABLE, CacheUnusable, RefreshSummary, has_tables, open_cache, quantize,
                                    refresh, search_dir, state, unit_sum)

try:  # int8 dot products with AVX-512 VNNI / AVX2 / NEON kernels; NumPy does the same slower
    import simsimd as _simsimd
except ImportError:  # pragma: no cover - exercised where simsimd is not installed
    _simsimd = None

__all__ = ["Moment", "VideoHit", "SearchResult", "RefreshSummary", "Filters", "DEFAULT_MIN_SCORE", "search",
           "refresh", "search_dir", "make_filters", "exact_scores", "unit_sum", "quantize"]

ROUNDING_SLACK = 1e-4  # float32 rounding of u and the scale, in cosine units; plus 8*D*2^-24 below
LOCK_WAIT = 1.0        # seconds each try of a search's cache update waits for another writer's lock


class Moment(NamedTuple):
    video_id: int
    path: str
    time: float      # seconds
    score: float     # the agent's logit, (cos(z,q) + cos(x,q)) / tau
    frame: int       # index of the frame in the video's stored features


class VideoHit(NamedTuple):
    video_id: int
    path: str
    best_score: float


@dataclass
class SearchResult:
    moments: list[Moment]
    videos: list[VideoHit]
    frames: int = 0                 # frames searched
    unsearched: int = 0             # indexed videos left out (their stored features are damaged)
    rescored: int = 0               # frames scored exactly from the cache
    direct: int = 0                 # videos scored from the index file (the cache did not hold them)
    searched: int = 0               # videos searched (those the folder and time filters let through)
    filters: Filters = field(default_factory=Filters)
    warnings: list[str] = field(default_factory=list)          # one line each
    timings: dict[str, float] = field(default_factory=dict)    # milliseconds

    def to_dict(self) -> dict:
        return {"moments": [m._asdict() for m in self.moments],
                "videos": [v._asdict() for v in self.videos],
                "frames": self.frames, "unsearched": self.unsearched, "rescored": self.rescored,
                "direct": self.direct, "searched": self.searched, "filters": self.filters.to_dict(),
                "warnings": self.warnings, "timings": self.timings}


# ----------------------------------------------------------------------------- searching

def _question(q, dim: int | None) -> np.ndarray:
    q = np.asarray(q, dtype=np.float32)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 1:
        raise SearchError(f"question embedding must be [1, D] or [D], got shape {tuple(q.shape)}")
    if dim is not None and q.shape[0] != dim:
        raise SearchError(f"question embedding has width {q.shape[0]}, the index {dim}")
    if not np.isfinite(q).all() or not np.any(q):
        raise SearchError("question embedding is zero or not finite")
    return q


def _dot_int8(codes: np.ndarray, k8: np.ndarray, out: np.ndarray, threads: int) -> None:
    if _simsimd is not None:
        _simsimd.cdist(k8[None, :], codes, metric="dot", out=out[None, :], out_dtype="float32", threads=threads)
        return
    kf = k8.astype(np.float32)
    step = 1 << 16
    for i in range(0, len(codes), step):
        np.matmul(codes[i:i + step].astype(np.float32), kf, out=out[i:i + step])


def exact_scores(x: np.ndarray, z: np.ndarray, x_norm: np.ndarray, z_norm: np.ndarray, q: np.ndarray,
                 tau: float = TAU) -> np.ndarray:
    """score_frames' formula for one question row, in NumPy (same numbers, no torch)."""
    qn = float(np.linalg.norm(q))
    # einsum, not `@`: BLAS's threaded matrix-vector product is 5-40x slower on a busy machine
    event = np.einsum("ij,j->i", np.asarray(z, np.float32), q) / (z_norm * qn + EPS)
    clip = np.einsum("ij,j->i", np.asarray(x, np.float32), q) / (x_norm * qn + EPS)
    return ((event + clip) / tau).astype(np.float32)


def _nms(cands, top: int, per_video: int, nms_seconds: float) -> list[Moment]:
    kept: list[Moment] = []
    by_video: dict[int, list[float]] = {}
    for m in cands:  # best first
        times = by_video.setdefault(m.video_id, [])
        if len(times) >= per_video or any(abs(m.time - t) < nms_seconds for t in times):
            continue
        times.append(m.time)
        kept.append(m)
        if len(kept) == top:
            break
    return kept


def search(store, q, *, top: int = 10, per_video: int = 3, nms_seconds: float = 30.0,
           top_videos: int | None = None, tau: float = TAU, refresh_first: bool = True,
           threads: int | None = None, candidates: int = 256, under=None, since=None, until=None,
           min_score: float | None = None, filters: Filters | None = None) -> SearchResult:
    """The `top` best moments across the archive for question embedding `q` ([1,D] or [D]).

    Filters (tspo_edge.storage.search_filters): only videos under the folders `under`, recorded at or
    after `since` and before `until` (epoch seconds or what `parse_when` reads: '2026-11-01',
    '7d'), are searched -- the others are never scored; only moments scoring at least
    `min_score` are listed (None: no floor; the CLI and API default to DEFAULT_MIN_SCORE).
    `filters` (from `make_filters`) replaces those four arguments.

    Moments are kept best first with per-video non-maximum suppression: none within
    `nms_seconds` of one already kept in its video, at most `per_video` per video. `videos`
    lists the `top_videos` (default `top`) videos whose best frame scores highest. The result
    equals scoring every indexed frame with `scoring.score_frames` (see the module docstring).
    On a writable store the cache is brought up to date first (`refresh_first`); when that cannot
    be done (a lock held past a short wait, a full disk) the search goes on and says why.
    Raises StoreError for an index that cannot be read, SearchError for a bad question.
    """
    if top < 1 or per_video < 1 or nms_seconds < 0:
        raise SearchError(f"bad search limits: top={top}, per_video={per_video}, nms_seconds={nms_seconds}")
    top_videos = top if top_videos is None else top_videos
    if filters is None:
        filters = make_filters(under, since, until, min_score)
    floor = -np.inf if filters.min_score is None else float(filters.min_score)
    threads = threads or 1  # one thread: a threaded scan stalls on a busy core (see docs/search.md)
    t0 = time.perf_counter()
    db = store.db
    timings: dict[str, float] = {}
    warnings: list[str] = []
    with store.read("searching"):
        names = set(db.table_names())
    if "features" not in names:
        return SearchResult([], [], filters=filters, timings={"total_ms": 0.0})
    if refresh_first and not store.readonly:
        try:
            done = refresh(store, wait=LOCK_WAIT)
            if done.rebuilt:
                warnings.append(f"search cache rebuilt ({done.rebuilt})")
        except (StoreError, SearchError) as e:  # the index is read directly for what the cache lacks
            warnings.append(f"search cache not brought up to date: {e}")
        timings["refresh_ms"] = _ms(t0)
    with store.read("searching"):  # one snapshot for segments, cache state and the features read
        segs, maps = [], None
        allowed = allowed_videos(db, filters)  # None: every video; filtered-out ones are never scored
        if has_tables(db):
            segs = db.execute(
                f"SELECT s.video_id, v.path, s.row0, s.frames, s.dim, s.gen, s.max_inv, s.crc FROM {TABLE} s "
                f"JOIN videos v ON v.id = s.video_id AND v.status = 'indexed' AND v.indexed_at IS s.indexed_at "
                f"AND v.agent_id IS s.agent_id JOIN features f ON f.video_id = s.video_id "
                f"AND f.frames = s.frames AND f.dim = s.dim ORDER BY s.row0").fetchall()
            if allowed is not None:
                segs = [s for s in segs if int(s[0]) in allowed]
            if segs:
                st = state(db)
                try:
                    if {int(s[5]) for s in segs} != {int(st.get("gen", -1))}:
                        raise CacheUnusable("segments of another generation")
                    maps = open_cache(search_dir(store), st, [(s[0], s[2], s[3], s[7]) for s in segs])
                except CacheUnusable as e:  # said once: not again after a failed update
                    if not any(w.startswith("search cache not brought up to date") for w in warnings):
                        warnings.append(f"search cache unusable ({e}); the index was searched directly")
                    segs = []
        cached = {int(s[0]) for s in segs}
        others = [(int(r[0]), r[1]) for r in db.execute(
            "SELECT v.id, v.path FROM videos v WHERE v.status = 'indexed' ORDER BY v.path").fetchall()
            if int(r[0]) not in cached and (allowed is None or int(r[0]) in allowed)]
        dim = int(segs[0][4]) if segs else None
        qv = _question(q, dim)
        direct, skipped, direct_frames = _score_directly(store, others, qv, tau, dim, warnings,
                                                         per_video=per_video, nms_seconds=nms_seconds)
        n_videos = len(segs) + len(others) - skipped
        if not segs:
            moments, videos = _finish(direct, top, per_video, nms_seconds, top_videos, floor)
            timings["total_ms"] = _ms(t0)
            return SearchResult(moments, videos, frames=direct_frames, unsearched=skipped,
                                direct=len(others) - skipped, searched=n_videos, filters=filters,
                                warnings=warnings, timings=timings)
        moments, videos, live_rows, rescored = _search_cache(maps, segs, qv, dim, direct, n_videos, top=top,
                                                             per_video=per_video, nms_seconds=nms_seconds,
                                                             top_videos=top_videos, tau=tau, threads=threads,
                                                             candidates=candidates, timings=timings, floor=floor)
    timings["total_ms"] = _ms(t0)
    return SearchResult(moments, videos, frames=live_rows + direct_frames, unsearched=skipped,
                        rescored=rescored, direct=len(others) - skipped, searched=n_videos, filters=filters,
                        warnings=warnings, timings=timings)


def _score_directly(store, videos: list[tuple[int, str]], q: np.ndarray, tau: float, dim: int | None,
                    warnings: list[str], *, per_video: int, nms_seconds: float) -> tuple[list[Moment], int, int]:
    """Every frame of `videos` scored exactly from the index file; of each video the frames the NMS
    could keep, best first. A damaged video is skipped with one warning.
    (moments, videos skipped, frames scored)"""
    out: list[Moment] = []
    skipped = frames = 0
    for vid, path in videos:
        try:
            f = store.load_features(vid)
        except StoreDamagedError as e:
            warnings.append(f"skipped {e}")
            skipped += 1
            continue
        if dim is not None and f.x.shape[1] != dim or q.shape[0] != f.x.shape[1]:
            raise SearchError(f"{store.path}: {path} has width {f.x.shape[1]}, the question {q.shape[0]}")
        s = exact_scores(f.x, f.z, f.x_norm, f.z_norm, q, tau)
        frames += len(s)
        k = _keepable(f.times, per_video, nms_seconds)
        idx = np.argpartition(s, -k)[-k:] if k < len(s) else np.arange(len(s))
        out += [Moment(vid, path, float(f.times[i]), float(s[i]), int(i)) for i in idx.tolist()]
    out.sort(key=lambda m: -m.score)
    return out, skipped, frames


def _keepable(times: np.ndarray, per_video: int, nms_seconds: float) -> int:
    """How many of a video's best frames can hold every frame the NMS might keep. A kept frame of
    rank j has above it at most per_video - 1 kept frames and the frames within nms_seconds of
    them (at most n each, n the most frames in any open window of 2 * nms_seconds), so
    j <= (per_video - 1) * (n + 1) + 1. (Its best frame is among them: the videos list holds.)"""
    t = np.sort(np.asarray(times, np.float64))
    if len(t) == 0:
        return 0
    n = int((np.searchsorted(t, t + nms_seconds, side="left") - np.searchsorted(t, t - nms_seconds, side="right")).max())
    return min(len(t), (per_video - 1) * (n + 1) + 1)


def _finish(cands: list[Moment], top, per_video, nms_seconds, top_videos,
            floor: float = -np.inf) -> tuple[list[Moment], list[VideoHit]]:
    if floor > -np.inf:  # best first: the ones at or above the floor are a prefix
        cands = cands[:next((i for i, m in enumerate(cands) if m.score < floor), len(cands))]
    moments = _nms(cands, top, per_video, nms_seconds)
    best: dict[int, Moment] = {}
    for m in cands:
        best.setdefault(m.video_id, m)
    return moments, [VideoHit(m.video_id, m.path, m.score) for m in list(best.values())[:top_videos]]


def _search_cache(maps, segs, q, dim, direct: list[Moment], n_videos: int, *, top, per_video, nms_seconds,
                  top_videos, tau, threads, candidates, timings, floor=-np.inf):
    """Scan the cache, rescore above a falling threshold, merge the directly scored `direct`.
    No frame below `floor` (a logit) is listed, so none below it is rescored either."""
    qn = float(np.linalg.norm(q))
    qh = q / qn
    r = float(np.abs(qh).max()) / 127.0
    k8 = np.clip(np.rint(qh / r), -127, 127).astype(np.int8)
    q_l1 = float(np.abs(qh).sum())
    vid = np.array([s[0] for s in segs], np.int64)
    row0 = np.array([s[2] for s in segs], np.int64)
    nfr = np.array([s[3] for s in segs], np.int64)
    paths = [s[1] for s in segs]
    n_rows = int((row0 + nfr).max())
    codes, aux = maps["codes"], maps["aux"]
    # 1. scan: hi = upper bound of the exact cosine sum, per live row
    ts = time.perf_counter()
    hi = np.full(n_rows, -np.inf, np.float32)
    # float32 dot products of D terms with |u| <= 2, |q| = 1: error <= 2*D*2^-24 each (scan, rescore)
    slack = ROUNDING_SLACK + 8 * dim * 2.0**-24 + EPS * max(float(s[6] or 0.0) for s in segs) / qn
    for a, b in _ranges(row0, nfr):
        part = hi[a:b]
        _dot_int8(codes[a:b], k8, part, threads)
        sc = aux[a:b, 0]
        # a = s*r*dot; |u.q - a| <= s*(r/2)*|c|_1 + (s/2)*|q|_1
        part *= np.float32(r)
        part += aux[a:b, 1] * np.float32(r / 2)
        part += np.float32(q_l1 / 2)
        part *= sc
        part += np.float32(slack)
    timings["scan_ms"] = _ms(ts)
    # 2-4. rescore above a threshold until the threshold is proven low enough
    ts = time.perf_counter()
    live_rows = int(nfr.sum())
    want = max(candidates, 4 * top * per_video, 4 * top_videos)
    # the first thresholds come from the live rows' bounds (a filtered search leaves most rows -inf)
    live_hi = hi if n_rows == live_rows else np.concatenate([hi[a:b] for a, b in _ranges(row0, nfr)])
    thr = _initial_threshold(live_hi, want, live_rows)
    exact: dict[int, float] = {}
    cache_rows: dict[int, tuple[int, float]] = {}   # global row -> (frame, time)
    while True:
        rows = np.flatnonzero(hi >= thr) if np.isfinite(thr) else np.flatnonzero(hi > -np.inf)
        new = [int(x) for x in rows if int(x) not in exact]
        _rescore(maps, new, row0, dim, q, tau, exact, cache_rows)
        cands = []
        for g, s in sorted(exact.items(), key=lambda kv: -kv[1]):
            i = int(np.searchsorted(row0, g, side="right") - 1)
            frame, t = cache_rows[g]
            cands.append(Moment(int(vid[i]), paths[i], t, s, frame))
        if direct:  # exact already: merged in, best first
            cands = sorted(cands + direct, key=lambda m: -m.score)
        moments, videos = _finish(cands, top, per_video, nms_seconds, top_videos, floor)
        # scores are logits (cosine sum / tau); the bound hi is in cosine units
        # fewer videos than asked for: proven once every video has a scored frame
        # (every video listed: with a floor, one whose rescored frames are all below it is not)
        full_v = len(videos) == top_videos or (videos and len(videos) == n_videos)
        need = min(moments[-1].score if len(moments) == top else -np.inf,
                   videos[-1].best_score if full_v else -np.inf) * tau
        need = max(need, floor * tau)  # a frame below the floor cannot be listed
        if thr <= need or len(rows) == live_rows:
            break
        if np.isfinite(need):
            thr = need
        else:  # too few moments or videos so far: widen the candidate set 8x, not to everything
            want *= 8
            lower = _initial_threshold(live_hi, want, live_rows)
            thr = lower if lower < thr else -np.inf
    timings["rescore_ms"] = _ms(ts)
    return moments, videos, live_rows, len(exact)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 3)


def _ranges(row0: np.ndarray, nfr: np.ndarray):
    """Contiguous live row ranges (segments sorted by row0, adjacent ones merged)."""
    a, b = int(row0[0]), int(row0[0] + nfr[0])
    for s, n in zip(row0[1:].tolist(), nfr[1:].tolist()):
        if s == b:
            b += n
        else:
            yield a, b
            a, b = s, s + n
    yield a, b


def _initial_threshold(hi: np.ndarray, want: int, live_rows: int) -> float:
    if live_rows <= want:
        return -np.inf
    stride = max(1, len(hi) // (1 << 16))
    sample = hi[::stride]
    k = max(1, min(len(sample), math.ceil(want / stride)))
    return float(np.partition(sample, -k)[-k])


def _rescore(maps, rows: list[int], row0, dim, q, tau, exact, cache_rows) -> None:
    """Exact scores of some rows from the stored float16 values (one gather per file)."""
    if not rows:
        return
    rows_a = np.array(sorted(rows), np.int64)
    for i in range(0, len(rows_a), 1 << 14):  # bounded gathers: 16 k rows at a time
        g = rows_a[i:i + (1 << 14)]
        xz, aux, times = maps["exact"][g], maps["aux"][g], maps["times"][g, 0]
        s = exact_scores(xz[:, :dim], xz[:, dim:], aux[:, 2], aux[:, 3], q, tau)
        frames = g - row0[np.searchsorted(row0, g, side="right") - 1]
        for gi, fi, si, ti in zip(g.tolist(), frames.tolist(), s.tolist(), times.tolist()):
            exact[gi] = si
            cache_rows[gi] = (fi, ti)
