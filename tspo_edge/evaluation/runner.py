"""`tspo-edge eval needle`: every selection method at every frame budget on the needle benchmark.

Index the benchmark's videos (once; an index in the output folder by default), embed each
needle's question (the stem, as the agent sees it), choose frames per method and budget,
score them against the needle's [start, end), and let the answerer pick an option from the
chosen frames only. The frames every answer needs are decoded once per video.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tspo_edge.checks import check_range
from tspo_edge.errors import EvalError, InputError
from tspo_edge.limits import MAX_ASK_FRAMES
from tspo_edge.models.mllm import answerer_for
from tspo_edge.models import Models
from tspo_edge.pipeline import index_videos
from tspo_edge.selection import uniform_indices
from tspo_edge.storage.store import Store
from tspo_edge.media.video import read_frames_at

from tspo_edge.evaluation.metrics import hit_fraction, needle_recall, summarize
from tspo_edge.evaluation.needle import Benchmark
from tspo_edge.evaluation.methods import METHODS, choose, scores_for

Progress = Callable[[str, int, int], None]
# Not a selector: n frames spread evenly over the needle itself, the answerer's ceiling.
ORACLE = "oracle"


def check_methods(methods: Sequence[str], frames: Sequence[int]) -> None:
    bad = [m for m in methods if m not in METHODS and m != ORACLE]
    if bad:
        raise EvalError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join([*METHODS, ORACLE])}")
    if not methods or not frames or any(int(n) < 1 for n in frames):
        raise EvalError("give at least one method and frame budgets >= 1")


def budgets_from_options(frames: str, methods: str) -> tuple[list[int], list[str]]:
    """`eval needle`'s comma-separated --frames and --methods, parsed and checked (InputError
    naming the option; EvalError for an unknown method)."""
    parsed = []
    for flag, value, kind in (("--frames", frames, int), ("--methods", methods, str)):
        try:
            parsed.append([kind(v.strip()) for v in value.split(",") if v.strip()])
        except ValueError:
            raise InputError(f"{flag} {value!r}: expected a comma-separated list") from None
    for n in parsed[0]:
        check_range(n, "--frames", 1, MAX_ASK_FRAMES, integer=True)
    check_methods(parsed[1], parsed[0])
    return parsed[0], parsed[1]


def run_needle_eval(bench: Benchmark, *, db: str | Path, methods: Sequence[str], frames: Sequence[int],
                    models: Models, mllm="lite", index_progress=None,
                    progress: Progress | None = None) -> dict:
    """Evaluate `methods` x `frames` on `bench`; returns the result dict (summary rows + per question)."""
    check_methods(methods, frames)
    frames = sorted({int(n) for n in frames})
    t0 = time.perf_counter()
    enc = models.encoder
    answerer = answerer_for(mllm, models, memo=True) if isinstance(mllm, str) else mllm
    paths = [bench.video_path(v) for v in bench.videos]
    with Store(db) as store:
        results = index_videos(store, paths, models, progress=index_progress)
    failed = {str(Path(f.path).resolve()): f.error for f in results if f.status == "failed"}
    t_index = time.perf_counter() - t0

    records: list[dict] = []
    errors: list[str] = []
    n_questions = sum(len(v.needles) for v in bench.videos)
    done = 0
    with Store(db, readonly=True) as store:
        for v in bench.videos:
            path = bench.video_path(v)
            row = store.find_video(path)
            if row is None or row.status != "indexed":
                errors.append(failed.get(str(path.resolve())) or f"{path}: not indexed")
                done += len(v.needles)
                continue
            feats = store.load_features(row.id)
            q = enc.encode_texts([n.question for n in v.needles])
            picks = []  # (needle, method, n, times)
            for needle, qi in zip(v.needles, q):
                scores = scores_for(feats, qi)
                seg = [(needle.start, needle.end)]
                in_needle = np.flatnonzero((feats.times >= needle.start) & (feats.times < needle.end))
                for m in methods:
                    for n in frames:
                        if m == ORACLE:
                            times = feats.times[in_needle[uniform_indices(len(in_needle), n)]]
                        else:
                            times = feats.times[choose(scores, len(feats.times), m, n)]
                        picks.append((needle, m, n, times))
                        records.append({
                            "video": v.name, "needle": needle.source, "start": needle.start, "end": needle.end,
                            "method": m, "frames": n, "chosen": len(times),
                            "times": [round(float(t), 3) for t in times],
                            "hit": hit_fraction(times, seg), "recall": needle_recall(times, seg),
                            "answer": None, "letter": None, "correct": None})
            _answer(answerer, path, picks, records[len(records) - len(picks):])
            done += len(v.needles)
            if progress:
                progress("questions", done, n_questions)
    return {
        "benchmark": {"root": str(bench.root), "key": bench.config.key(), "config": _config(bench),
                      "videos": len(bench.videos), "questions": n_questions},
        "encoder": enc.id, "agent": models.agent_source, "agent_id": models.agent_id, "answerer": answerer.id,
        "methods": list(methods), "frames": frames,
        "summary": summarize(records), "questions": records, "errors": errors,
        "seconds": {"index": round(t_index, 2), "total": round(time.perf_counter() - t0, 2)},
    }


def _config(bench: Benchmark) -> dict:
    return asdict(bench.config)


def _answer(answerer, path: Path, picks: list, records: list[dict]) -> None:
    """Ask the answerer about each pick, decoding every needed frame of the video once."""
    if not getattr(answerer, "needs_frames", True):  # --mllm none: no accuracy
        return
    union = np.unique(np.concatenate([p[3] for p in picks])) if picks else np.zeros(0)
    size = getattr(answerer, "image_size", None)
    decoded = read_frames_at(path, union, size=size) if len(union) else None
    pos = {float(t): i for i, t in enumerate(union)}
    items = []
    for needle, _m, _n, times in picks:
        sel = decoded[[pos[float(t)] for t in times]] if decoded is not None else np.zeros((0, 1, 1, 3), np.uint8)
        items.append((sel, [float(t) for t in times], needle.question, needle.options))
    for rec, (needle, *_), ans in zip(records, picks, answerer.answer_batch(items)):
        rec["answer"] = ans.text
        rec["letter"] = ans.letter
        rec["correct"] = ans.letter == needle.answer  # no letter (unparseable reply) counts as wrong
