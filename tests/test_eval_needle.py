"""The needle benchmark: seeded generation, ground truth against the written video, metrics, CLI."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from tspo_edge.evaluation.metrics import hit_fraction, inside, needle_recall, summarize
from tspo_edge.evaluation.needle import (BenchConfig, BenchmarkError, generate, load_benchmark, plan,
                                         render_segment)
from tspo_edge.evaluation.sources import SOURCES

SMALL = BenchConfig(videos=2, minutes=1.5, seed=3, needles=2, needle_seconds=(6, 9))


def test_plan_is_a_function_of_the_seed():
    a, b = plan(SMALL), plan(SMALL)
    assert [asdict(v) for v in a] == [asdict(v) for v in b]
    other = plan(replace(SMALL, seed=4))
    assert [asdict(v) for v in other] != [asdict(v) for v in a]


def test_plan_tiles_the_video_and_questions_are_right():
    for v in plan(BenchConfig(videos=3, minutes=10, seed=0, needles=3)):
        # segments tile [0, duration) exactly, in order
        assert v.segments[0].start == 0
        for s, t in zip(v.segments, v.segments[1:]):
            assert s.start + s.duration == t.start
        assert v.segments[-1].start + v.segments[-1].duration == v.duration == 600
        needles = [s for s in v.segments if s.kind == "needle"]
        assert len(needles) == len(v.needles) == 3
        assert len({n.source for n in v.needles}) == 3  # distinct needles per video
        for seg, n in zip(needles, v.needles):
            assert (seg.start, seg.start + seg.duration, seg.source) == (n.start, n.end, n.source)
            assert 8 <= n.end - n.start <= 20
            src = SOURCES[n.source]
            assert sorted(n.options) == sorted([src.answer, *src.distractors])
            assert n.options["ABCD".index(n.answer)] == src.answer
            assert n.question == src.question


def test_no_distractor_names_another_needle():
    answers = {s.answer for s in SOURCES.values()}
    for s in SOURCES.values():
        assert not answers & set(s.distractors), s.name
        assert s.answer.split()[-1] not in s.question  # the stem never names the answer


def test_too_many_needles_for_the_length_is_refused():
    with pytest.raises(BenchmarkError, match="too short"):
        plan(BenchConfig(videos=1, minutes=0.5, needles=3, needle_seconds=(20, 20)))


def test_written_video_shows_the_needle_at_its_times(tmp_path):
    from tspo_edge.media.video import iter_frames

    cfg = replace(SMALL, videos=1)
    bench = generate(tmp_path, cfg)
    v = bench.videos[0]
    path = bench.video_path(v)
    frames = {round(float(t), 3): f for c in iter_frames(path, fps=1.0, size=None) for t, f in zip(c.times, c.frames)}
    assert len(frames) == v.duration

    def err(a, b):
        return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())

    for seg in v.segments:  # every sampled frame is the frame its segment renders (up to compression)
        rendered = render_segment(seg, cfg)
        for k in range(seg.duration):
            assert err(frames[float(seg.start + k)], rendered[k * cfg.fps]) < 6, (seg.kind, seg.source, k)
    for n, seg in zip(v.needles, [s for s in v.segments if s.kind == "needle"]):
        rendered = render_segment(seg, cfg)
        assert err(frames[float(n.start - 1)], rendered[0]) > 15   # just before: haystack
        assert err(frames[float(n.end)], rendered[-1]) > 15        # just after: haystack

    # same settings: the written benchmark is reused, and the manifest reads back as planned
    mtime = path.stat().st_mtime_ns
    again = generate(tmp_path, cfg)
    assert path.stat().st_mtime_ns == mtime
    assert [asdict(x) for x in load_benchmark(tmp_path).videos] == [asdict(x) for x in again.videos]
    assert [asdict(x) for x in again.videos] == [asdict(x) for x in plan(cfg)]


def test_rendering_is_deterministic():
    v = plan(SMALL)[0]
    for seg in v.segments[:4]:
        np.testing.assert_array_equal(render_segment(seg, SMALL), render_segment(seg, SMALL))


def test_metrics_against_hand_computed_values():
    seg = [(10, 20)]
    times = [0, 9.5, 10, 15, 19.99, 20, 30]
    assert inside(times, seg).tolist() == [False, False, True, True, True, False, False]
    assert hit_fraction(times, seg) == pytest.approx(3 / 7)
    assert needle_recall(times, seg) == 1.0
    assert needle_recall([0, 20, 40], seg) == 0.0
    assert hit_fraction([], seg) == 0.0
    assert hit_fraction([1, 12, 31], [(0, 5), (30, 35)]) == pytest.approx(2 / 3)
    rows = summarize([
        {"method": "uniform", "frames": 8, "hit": 0.25, "recall": 1.0, "correct": True},
        {"method": "uniform", "frames": 8, "hit": 0.0, "recall": 0.0, "correct": False},
        {"method": "uniform", "frames": 4, "hit": 0.5, "recall": 1.0, "correct": False},
        {"method": "agent", "frames": 4, "hit": 1.0, "recall": 1.0, "correct": None},
    ])
    assert rows == [
        {"method": "uniform", "frames": 4, "questions": 1, "hit": 0.5, "recall": 1.0, "accuracy": 0.0},
        {"method": "uniform", "frames": 8, "questions": 2, "hit": 0.125, "recall": 0.5, "accuracy": 0.5},
        {"method": "agent", "frames": 4, "questions": 1, "hit": 1.0, "recall": 1.0, "accuracy": None},
    ]


def test_eval_needle_cli_end_to_end(tmp_path, cli_lite_encoder):
    from typer.testing import CliRunner

    from tspo_edge.cli import app

    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "needle", "--out", str(out), "--videos", "1", "--minutes", "1",
                                 "--needles", "1", "--seed", "0", "--frames", "4,8",
                                 "--methods", "uniform,similarity", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [(s["method"], s["frames"]) for s in summary["summary"]] == [
        ("uniform", 4), ("uniform", 8), ("similarity", 4), ("similarity", 8)]
    full = json.loads((out / "needle.json").read_text())
    bench = load_benchmark(out / "bench")
    (needle,) = bench.videos[0].needles
    for q in full["questions"]:  # per-question metrics agree with the manifest's ground truth
        assert q["chosen"] == q["frames"] == len(q["times"])
        assert q["hit"] == pytest.approx(hit_fraction(q["times"], [(needle.start, needle.end)]))
        assert q["correct"] == (q["letter"] == needle.answer)
    by = {(s["method"], s["frames"]): s for s in summary["summary"]}
    assert by[("similarity", 4)]["hit"] > by[("uniform", 4)]["hit"]  # the needle is findable by its stem
    assert (out / "needle.png").stat().st_size > 10_000
    assert "| similarity |" in (out / "needle.md").read_text()

    # a trained checkpoint via --agent: same videos (reused), event features recomputed for it
    import torch

    from tspo_edge.models.agent import TemporalAgent, save_agent

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        ckpt = save_agent(TemporalAgent(384, 8, 12), tmp_path / "agent")
    r = CliRunner().invoke(app, ["eval", "needle", "--out", str(out), "--videos", "1", "--minutes", "1",
                                 "--needles", "1", "--seed", "0", "--frames", "4", "--methods", "agent,bin-max",
                                 "--mllm", "none", "--agent", str(ckpt), "--json"])
    assert r.exit_code == 0, r.output
    trained = json.loads(r.stdout)
    assert trained["agent_id"] != summary["agent_id"] and trained["benchmark"]["key"] == summary["benchmark"]["key"]
    assert [s["accuracy"] for s in trained["summary"]] == [None, None]  # --mllm none: no answers


def test_eval_needle_cli_bad_method(tmp_path):
    from typer.testing import CliRunner

    from tspo_edge.cli import app

    r = CliRunner().invoke(app, ["eval", "needle", "--out", str(tmp_path), "--methods", "uniform,best"])
    assert r.exit_code == 2
    assert "unknown method(s) best" in r.output
