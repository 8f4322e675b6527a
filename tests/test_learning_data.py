"""train/synth.py: the training footage shares nothing with the needle evaluation's, and the
generated set is TSPO-10K that `tspo-edge train` reads, with temporal questions whose answer is
the scene right after the one they name."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from tspo_edge.train.data import load_rows
from tspo_edge.train.synth import (SEED_BASE, TRAIN_SOURCES, SynthConfig, footage_split, generate_training_set,
                         photo, pixel_hash, plan)
from tspo_edge.evaluation import needle
from tspo_edge.evaluation.sources import SOURCES, _photo

pytest.importorskip("skimage")

SMALL = SynthConfig(needle_videos=2, temporal_videos=2, clip_repeats=1, haystack_videos=2,
                    long_seconds=50, clip_seconds=3, haystack_seconds=6, fps=1, width=64, height=36)


def test_footage_names_are_disjoint():
    split = footage_split()
    assert split["train"] and split["eval"]
    assert not split["train"] & split["eval"]
    assert split["eval"] >= {"chelsea", "bikes.mp4", "carphone_pristine.mp4"}


def test_training_photos_are_not_evaluation_photos_by_pixels():
    train = {pixel_hash(photo(n)): n for n in TRAIN_SOURCES}
    assert len(train) == len(TRAIN_SOURCES)  # twelve different pictures
    evals = {pixel_hash(_photo(s.name)): s.name for s in SOURCES.values() if s.kind == "photo"}
    assert not set(train) & set(evals), [(train[h], evals[h]) for h in set(train) & set(evals)]
    # the check sees through names: scikit-image's `cat` is the evaluation's `chelsea`
    assert pixel_hash(photo("cat")) == pixel_hash(_photo("chelsea"))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_haystack_seeds_are_disjoint(seed):
    videos, _ = plan(replace(SynthConfig(), seed=seed))
    train = {p.seed for v in videos for p in v.parts}
    assert min(train) >= SEED_BASE
    for s in range(5):
        bench = needle.plan(needle.BenchConfig(videos=4, seed=s))
        assert max(seg.seed for v in bench for seg in v.segments) < SEED_BASE


def test_plan_is_seeded():
    a, ra = plan(SynthConfig(seed=3))
    b, rb = plan(SynthConfig(seed=3))
    c, rc = plan(SynthConfig(seed=4))
    assert ra == rb and [v.parts for v in a] == [v.parts for v in b]
    assert ra != rc


def test_generated_set_is_tspo10k_and_temporal_questions_point_after(tmp_path):
    data = generate_training_set(tmp_path, seed=0, config=SMALL)
    ds = load_rows(data, tmp_path / "videos", strict=True)
    videos, raw = plan(SMALL)
    assert len(ds.rows) == len(raw) == 2 * 2 + 2 * 2 + len(TRAIN_SOURCES)
    assert {r.kind for r in ds.rows} == {"general", "specific"}
    answers = {s.answer for s in TRAIN_SOURCES.values()}
    by_name = {v.name: v for v in videos}
    temporal = 0
    for row, obj in zip(ds.rows, raw):
        assert set(obj) == {"video", "original_question", "problem", "solution", "type"}
        answer = row.options[ord(row.answer) - ord("A")]
        assert answer in answers
        v = by_name[obj["video"][:-4]]
        photos = [p for p in v.parts if p.kind == "photo"]
        if row.question.startswith("What is shown right after"):
            temporal += 1
            # the named scene A is immediately followed by the answer's photo B
            a = next(p for p in photos if row.question.endswith(TRAIN_SOURCES[p.source].scene + "?"))
            b = next(p for p in photos if p.start == a.start + a.duration)
            assert TRAIN_SOURCES[b.source].answer == answer
            assert TRAIN_SOURCES[a.source].answer in row.options  # similarity's pick is a distractor
        else:
            src = next(s for s in TRAIN_SOURCES.values() if s.question == row.question)
            assert src.answer == answer and src.name in {p.source for p in photos}
    assert temporal == 2
    pool = (tmp_path / "pool.txt").read_text().split()
    assert len(pool) == 2 + len(TRAIN_SOURCES) and all(p.endswith(".mp4") for p in pool)
    # distractors: haystack and single-photo clips; never a video with two photos
    assert {str((tmp_path / "videos" / (n + ".mp4")).resolve()) for n in by_name
            if n.startswith(("haystack", "clip"))} == set(pool)
    # the videos decode with the length the plan gives them
    from tspo_edge.media.video import probe

    v = videos[0]
    assert probe(tmp_path / "videos" / f"{v.name}.mp4").duration == pytest.approx(SMALL.long_seconds, abs=1.5)
    # an identical set is reused, not rewritten
    mtime = data.stat().st_mtime_ns
    assert generate_training_set(tmp_path, seed=0, config=SMALL) == data and data.stat().st_mtime_ns == mtime
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["seed"] == 0


def test_rendered_photo_frames_are_seeded():
    from tspo_edge.train.synth import render_photo

    a = render_photo("clock", 3, (64, 36), np.random.default_rng(1))
    b = render_photo("clock", 3, (64, 36), np.random.default_rng(1))
    c = render_photo("clock", 3, (64, 36), np.random.default_rng(2))
    assert a.shape == (3, 36, 64, 3) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_train_stats_counts_steps_that_teach():
    from benchmarks.learning import train_stats

    recs = [{"step": i + 1, "reward_std": 0.5 * (i % 4 == 0), "grad_norm": 0.3 * (i % 4 == 0), "R_A": 1.0,
             "R_T": None if i % 2 else 0.5, "reward_mean": 1.0, "entropy": 2.0, "tau": 0.1} for i in range(40)]
    st = train_stats(recs)
    assert st["all"]["spread"] == st["all"]["nonzero_grad"] == 0.25
    assert (st["first"]["steps"], st["last"]["steps"], st["all"]["R_T"]) == (2, 8, 0.5)


# ---------------------------------------------------------------- feature-level event rows

def _bank(D=16, seed=0):
    from tspo_edge.train.events import Bank

    rng = np.random.default_rng(seed)
    names = sorted(TRAIN_SOURCES)[:5]
    # each photo's frames carry its own index in channel 0; haystack frames carry -1
    photos = {n: [np.full((20, D), float(i), np.float32) + rng.normal(0, 0.01, (20, D)).astype(np.float32)
                  for _ in range(2)] for i, n in enumerate(names)}
    hay = [np.full((30, D), -1.0, np.float32) for _ in range(4)]
    return Bank(photos, hay), names


def test_after_rows_put_b_right_after_a_and_ask_for_b():
    from tspo_edge.train.events import EventRows, Scene

    bank, names = _bank()
    scenes = {n: Scene(n, TRAIN_SOURCES[n].question, TRAIN_SOURCES[n].scene, TRAIN_SOURCES[n].answer,
                       TRAIN_SOURCES[n].distractors) for n in names}
    rows = EventRows(bank, scenes, 60, seed=3)
    kinds = {e.kind for e in rows.items}
    assert kinds == {"after", "needle"}
    assert len({r.video for r in rows.rows}) == 60                      # distinct rows
    for e in rows.items:
        assert len(e.x) == 90 and e.row.kind == "general" and e.row.span is not None
        val = {n: float(i) for i, n in enumerate(names)}
        for role, (a, b) in e.spans.items():
            np.testing.assert_allclose(e.x[int(a):int(b), 0], val[e.sources[role]], atol=0.1)
        outside = np.ones(90, bool)
        for a, b in e.spans.values():
            outside[int(a):int(b)] = False
        assert (e.x[outside, 0] == -1).all()                            # the rest is haystack
        if e.kind == "after":
            A, B, C = (scenes[e.sources[k]] for k in "ABC")
            assert e.spans["B"][0] == e.spans["A"][1] and e.row.span == e.spans["B"]
            assert e.row.question == f"What is shown right after {A.scene}?"
            assert e.row.options[ord(e.row.answer) - 65] == B.answer
            assert A.answer in e.row.options and C.answer in e.row.options
        else:
            P = scenes[e.sources["needle"]]
            assert e.row.question == P.question and e.row.span == e.spans["needle"]
            assert e.row.options[ord(e.row.answer) - 65] == P.answer
    again = EventRows(bank, scenes, 60, seed=3)
    np.testing.assert_array_equal(again.items[7].x, rows.items[7].x)
    other = EventRows(bank, scenes, 60, seed=4)
    assert any(a.row.question != b.row.question or a.spans != b.spans for a, b in zip(rows.items, other.items))


def test_lite_answerer_on_embeddings_equals_it_on_frames(lite_encoder):
    """Rollouts answered from stored embeddings give the letters the frames would."""
    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.train.events import EmbeddedImages
    from tspo_edge.train.synth import render_photo

    frames = render_photo("coins", 3, (160, 90), np.random.default_rng(0))
    opts = ["old coins", "playing cards", "a keyboard", "a book"]
    direct = load_answerer("lite", encoder=lite_encoder).answer(frames, np.arange(3.0), "q", opts)
    x = lite_encoder.encode_images(frames)
    stored = load_answerer("lite", encoder=EmbeddedImages(lite_encoder)).answer(x, np.arange(3.0), "q", opts)
    assert stored.letter == direct.letter
    np.testing.assert_allclose(stored.option_scores, direct.option_scores, atol=1e-3)


# ---------------------------------------------------------------- benchmarks/bootstrap.py

def test_two_level_bootstrap_covers_a_known_difference():
    from benchmarks.bootstrap import two_level

    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(9), 40)
    cover = 0
    for rep in range(20):
        effect = rng.normal(0, 0.03, 9)[clusters]           # per-source effects around the truth 0.10
        diffs = {s: 0.10 + effect + rng.normal(0, 0.02) + rng.normal(0, 0.3, len(clusters)) for s in range(3)}
        est, lo, hi = two_level(diffs, clusters, reps=2000, seed=rep)
        assert lo <= est <= hi
        cover += lo <= 0.10 <= hi
    assert cover >= 17                                       # nominal 95 %: 19 of 20 expected
    null = {s: rng.normal(0, 0.3, len(clusters)) for s in range(3)}
    _, lo, hi = two_level(null, clusters, reps=2000)
    assert lo < 0 < hi
    with pytest.raises(ValueError, match="cluster labels"):
        two_level(null, clusters[:-1])


def test_mcnemar_exact():
    from benchmarks.bootstrap import mcnemar

    a = [1, 1, 1, 0, 1, 0]
    b = [0, 0, 0, 0, 1, 0]
    assert mcnemar(a, b) == (3, 0, 0.25)                     # 2 * (1/2)**3
    assert mcnemar(b, b) == (0, 0, 1.0)
