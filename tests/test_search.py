"""Archive-wide search: same moments as brute-force score_frames, NMS, no stale rows, empty index."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tspo_edge.storage import search as S
from tspo_edge.scoring import score_frames
from tspo_edge.storage.store import Store

D = 32


def _put(store, name, t, rng, *, agent="agent-1", boost=None, q=None):
    x = rng.standard_normal((t, D)).astype(np.float32) * rng.uniform(0.5, 3)
    z = x + rng.standard_normal((t, D)).astype(np.float32)
    if boost is not None:  # frames `boost` made to look like q (cosine about 0.9)
        size = np.linalg.norm(x, axis=1).mean()
        x[boost] = 0.4 * x[boost] + 2 * size * q
        z[boost] = 0.4 * z[boost] + 2 * size * q
    times = np.arange(t) * 1.0 + 0.5
    return store.put_video(path=f"/archive/{name}.mp4", size=t, mtime=0.0, fingerprint=name, times=times,
                           x=x, z=z, encoder_id="enc", agent_id=agent)


def _brute(store, q, top, per_video, nms_seconds, top_videos=None):
    """Today's way: load every video's features and score them with scoring.score_frames."""
    frames = []
    for v in store.videos(status="indexed"):
        f = store.load_features(v.id)
        s = score_frames(f.z, f.x, q, z_norm=f.z_norm, x_norm=f.x_norm)
        frames += [(float(s[i]), v.id, float(f.times[i]), i) for i in range(len(s))]
    frames.sort(key=lambda m: -m[0])
    kept, per = [], {}
    for score, vid, t, i in frames:
        ts = per.setdefault(vid, [])
        if len(ts) >= per_video or any(abs(t - u) < nms_seconds for u in ts):
            continue
        ts.append(t)
        kept.append((vid, i, score))
        if len(kept) == top:
            break
    best = {}
    for score, vid, _, _ in frames:
        best.setdefault(vid, score)
    return kept, list(best.items())[: top_videos or top]


@pytest.fixture()
def archive(tmp_path):
    rng = np.random.default_rng(7)
    store = Store(tmp_path / "i.db")
    for i in range(12):
        _put(store, f"v{i}", int(rng.integers(40, 400)), rng)
    yield store
    store.close()


def _check(res, kept, best):
    assert [(m.video_id, m.frame) for m in res.moments] == [(v, i) for v, i, _ in kept]
    np.testing.assert_allclose([m.score for m in res.moments], [s for _, _, s in kept], rtol=1e-4, atol=1e-3)
    assert [v.video_id for v in res.videos] == [v for v, _ in best]
    np.testing.assert_allclose([v.best_score for v in res.videos], [s for _, s in best], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("candidates", [1, 256])
def test_same_moments_as_brute_force(archive, candidates):
    rng = np.random.default_rng(1)
    for _ in range(5):
        q = rng.standard_normal((1, D)).astype(np.float32)
        res = S.search(archive, q, top=10, per_video=3, nms_seconds=20.0, candidates=candidates)
        kept, best = _brute(archive, q, 10, 3, 20.0)
        _check(res, kept, best)
        assert res.frames == sum(v.frame_count for v in archive.videos("indexed"))
        # with candidates=1 the first threshold is too high: the loop must lower it, never
        # rescoring everything on 2500+ frames
        assert res.rescored < res.frames
        assert all(m.path.startswith("/archive/") for m in res.moments)


def test_numpy_fallback_gives_the_same_answer(archive, monkeypatch):
    """Both int8 kernels against brute force: SimSIMD's where installed (the main and torch-free CI
    jobs install it), and NumPy's, which a machine without SimSIMD wheels uses."""
    if importlib.util.find_spec("simsimd") is not None:
        assert S._simsimd is not None  # installed, so the searches above and here ran its kernel
    rng = np.random.default_rng(2)
    for _ in range(3):
        q = rng.standard_normal(D).astype(np.float32)
        kept, best = _brute(archive, q, 8, 3, 30.0)
        _check(S.search(archive, q, top=8), kept, best)
        with monkeypatch.context() as m:
            m.setattr(S, "_simsimd", None)
            _check(S.search(archive, q, top=8), kept, best)


def test_nms_spreads_moments_in_time_and_over_videos(tmp_path):
    rng = np.random.default_rng(3)
    q = rng.standard_normal(D).astype(np.float32)
    q /= np.linalg.norm(q)
    with Store(tmp_path / "i.db") as store:
        hot = _put(store, "hot", 300, rng, boost=slice(100, 160), q=q)  # 60 s that all match
        for i in range(4):
            _put(store, f"cold{i}", 200, rng)
        # no suppression: the 10 best frames all come from the hot stretch
        res = S.search(store, q, top=10, per_video=10, nms_seconds=0.0)
        assert {m.video_id for m in res.moments} == {hot.id}
        assert all(100 <= m.frame < 160 for m in res.moments)
        # 20 s apart, at most 3 per video: the hot video gives 3, spread out; the rest come from others
        res = S.search(store, q, top=10, per_video=3, nms_seconds=20.0)
        hot_times = sorted(m.time for m in res.moments if m.video_id == hot.id)
        assert len(hot_times) == 3 and np.diff(hot_times).min() >= 20.0
        assert len({m.video_id for m in res.moments}) >= 4
        assert res.videos[0].video_id == hot.id
        kept, best = _brute(store, q, 10, 3, 20.0)
        _check(res, kept, best)


def test_reindexed_failed_and_removed_videos_never_come_from_stale_rows(tmp_path):
    rng = np.random.default_rng(4)
    q = rng.standard_normal(D).astype(np.float32)
    q /= np.linalg.norm(q)
    db = tmp_path / "i.db"
    with Store(db) as store:
        a = _put(store, "a", 200, rng, boost=slice(50, 52), q=q)
        b = _put(store, "b", 200, rng, boost=slice(10, 12), q=q)
        for i in range(3):
            _put(store, f"c{i}", 100, rng)
        S.refresh(store)
        assert S.search(store, q, top=2, per_video=1).moments[0].video_id in (a.id, b.id)
        # re-index a (same id, new features, no match any more) and fail b, without a refresh
        _put(store, "a", 150, rng)
        store.put_failed(path="/archive/b.mp4", size=1, mtime=0.0, fingerprint="b", error="corrupt")
    with Store(db, readonly=True) as ro:  # a reader that cannot refresh
        res = S.search(ro, q, top=5, per_video=1)
        assert res.direct == 1 and res.unsearched == 0              # the re-indexed a, from the index file
        assert b.id not in {m.video_id for m in res.moments}        # never from its stale rows
        assert res.frames == 450
        kept, best = _brute(ro, q, 5, 1, 30.0)
        _check(res, kept, best)
    with Store(db) as store:
        res = S.search(store, q, top=5, per_video=1)              # refreshes first
        assert res.unsearched == 0 and res.direct == 0 and res.frames == 450
        kept, best = _brute(store, q, 5, 1, 30.0)
        _check(res, kept, best)
        with store.write("removing a video"):  # a video removed from the index (its features row goes)
            store.db.execute("DELETE FROM features WHERE video_id = ?", [a.id])
            store.db.execute("DELETE FROM videos WHERE id = ?", [a.id])
        res = S.search(store, q, top=5, per_video=1, refresh_first=False)
        assert a.id not in {m.video_id for m in res.moments} and res.frames == 300


def test_refresh_compacts_dead_rows_and_stays_exact(tmp_path):
    rng = np.random.default_rng(5)
    with Store(tmp_path / "i.db") as store:
        for i in range(4):
            _put(store, f"v{i}", 100, rng)
        S.refresh(store)
        compacted = []
        for _ in range(3):  # every re-index leaves 100 dead rows behind
            _put(store, "v0", 100, rng, agent="agent-2")
            # the write itself dropped v0's segment (a trigger, same transaction)
            assert S.search(store, np.ones(D, np.float32), refresh_first=False).direct == 1
            summary = S.refresh(store)
            assert summary.added == 1 and summary.frames == 400
            compacted.append(summary.compacted)
        assert compacted == [False, True, False]                    # 200 dead > 25% of 400 live
        files = sorted(p.name for p in S.search_dir(store).iterdir())
        codes = [f for f in files if f.startswith("codes-")]
        assert len(codes) <= 2                                      # older generations dropped
        q = rng.standard_normal(D).astype(np.float32)
        kept, best = _brute(store, q, 6, 2, 10.0)
        _check(S.search(store, q, top=6, per_video=2, nms_seconds=10.0), kept, best)
        assert S.refresh(store).added == 0                          # up to date: nothing to do


def test_empty_index_and_bad_questions(tmp_path):
    with Store(tmp_path / "i.db") as store:
        res = S.search(store, np.ones(D, np.float32))
        assert res.moments == [] and res.videos == [] and res.frames == 0
        _put(store, "v", 50, np.random.default_rng(0))
        with pytest.raises(S.SearchError, match="width 16, the index 32"):
            S.search(store, np.ones(16, np.float32))
        with pytest.raises(S.SearchError, match="shape"):
            S.search(store, np.ones((2, D), np.float32))
        with pytest.raises(S.SearchError, match="zero"):
            S.search(store, np.zeros(D, np.float32))
        with pytest.raises(S.SearchError, match="top=0"):
            S.search(store, np.ones(D, np.float32), top=0)
    with Store(tmp_path / "i.db", readonly=True) as ro, pytest.raises(S.SearchError, match="read-only"):
        S.refresh(ro)


def test_few_long_videos_need_no_full_rescore(tmp_path):
    rng = np.random.default_rng(6)
    with Store(tmp_path / "i.db") as store:
        for i in range(3):
            _put(store, f"long{i}", 2000, rng)
        q = rng.standard_normal(D).astype(np.float32)
        # 3 videos < top_videos 10: proven once every video has a rescored frame
        res = S.search(store, q, top=5, per_video=3, nms_seconds=10.0, top_videos=10)
        kept, best = _brute(store, q, 5, 3, 10.0, top_videos=10)
        _check(res, kept, best)
        assert len(res.videos) == 3 and res.rescored < res.frames // 4
        # at most 3 moments can exist (one per video): all of them, the brute-force ones
        res = S.search(store, q, top=5, per_video=1)
        kept, best = _brute(store, q, 5, 1, 30.0)
        _check(res, kept, best)
        assert len(res.moments) == 3


@pytest.mark.parametrize("top, per_video, nms", [(10, 3, 20.0), (5, 1, 0.0), (20, 5, 3.0), (3, 2, 500.0)])
def test_with_no_cache_the_index_file_gives_the_same_answer(tmp_path, top, per_video, nms):
    """A read-only copy of the index has no cache (another path): every frame is scored from the
    index file, and only the frames the NMS could keep are ranked; the answer is the brute force's.
    Each video's best frames come in one run of 25 (what the NMS suppresses), so ranking too few
    frames per video would give another answer."""
    rng = np.random.default_rng(11)
    q = rng.standard_normal(D).astype(np.float32)
    q /= np.linalg.norm(q)
    with Store(tmp_path / "i.db") as store:
        for i in range(6):
            start = int(rng.integers(0, 150))
            _put(store, f"v{i}", 200, rng, boost=slice(start, start + 25), q=q)
    with Store(tmp_path / "i.db", readonly=True) as ro:
        for qq in (q, q + 0.3 * rng.standard_normal(D).astype(np.float32)):
            res = S.search(ro, qq, top=top, per_video=per_video, nms_seconds=nms, refresh_first=False)
            assert res.direct == 6 and res.rescored == 0 and res.frames == 1200
            kept, best = _brute(ro, qq, top, per_video, nms)
            _check(res, kept, best)
