"""The needle-in-a-haystack benchmark: long videos with planted needle segments, seeded.

A video is planned first (pure function of the seed): needle segments at whole seconds,
generated haystack segments filling the gaps, and for each needle a question with four
shuffled options. Rendering each segment uses its own seed, so any segment's frames can be
re-rendered alone (the tests check the written video against them). The plan is written to
`manifest.json` next to the videos; an existing benchmark with the same settings is reused.

Ground truth: needle i of a video covers [start, end) seconds; a frame sampled at time t
is inside when start <= t < end.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tspo_edge import limits as L
from tspo_edge.checks import check_range
from tspo_edge.errors import BenchmarkError
from tspo_edge.questions import option_letters
from tspo_edge.media.video import write_video

from tspo_edge.evaluation.sources import HAYSTACK_KINDS, SOURCES, render_haystack, render_needle

MANIFEST = "manifest.json"
FORMAT = "tspo-edge-needle-bench"
FORMAT_VERSION = 1


@dataclass
class Segment:
    start: int          # seconds (whole)
    duration: int       # seconds (whole)
    kind: str           # "needle" or a haystack kind
    source: str | None  # needle source name
    seed: int


@dataclass
class Needle:
    source: str
    start: int
    end: int
    question: str
    options: list[str]
    answer: str         # the correct letter


@dataclass
class BenchVideo:
    name: str
    duration: int
    segments: list[Segment]
    needles: list[Needle]
    path: str = ""      # relative to the benchmark folder in the manifest


@dataclass
class BenchConfig:
    videos: int = 4
    minutes: float = 10.0
    seed: int = 0
    fps: int = 2
    width: int = 320
    height: int = 180
    needles: int = 2                     # per video
    needle_seconds: tuple[int, int] = (8, 20)
    codec: str = "libx264"

    @classmethod
    def from_options(cls, *, videos: int, minutes: float, seed: int, needles: int, fps: int) -> "BenchConfig":
        """`eval needle`'s --videos, --minutes, --seed, --needles, --video-fps, checked before
        anything is generated (InputError naming the option)."""
        check_range(videos, "--videos", 1, L.MAX_BENCH_VIDEOS, integer=True)
        check_range(needles, "--needles", 1, L.MAX_BENCH_VIDEOS, integer=True)
        check_range(minutes, "--minutes", L.MIN_BENCH_MINUTES, L.MAX_BENCH_MINUTES)
        check_range(fps, "--video-fps", 1, L.MAX_BENCH_FPS, integer=True)
        check_range(seed, "--seed", 0, L.MAX_SEED, integer=True)
        return cls(videos=videos, minutes=minutes, seed=seed, fps=fps, needles=needles)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Benchmark:
    root: Path
    config: BenchConfig
    videos: list[BenchVideo] = field(default_factory=list)

    def video_path(self, v: BenchVideo) -> Path:
        return self.root / v.path


def _question(src_name: str, rng: np.random.Generator) -> tuple[list[str], str]:
    src = SOURCES[src_name]
    options = [src.answer, *src.distractors]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return options, option_letters(len(options))[int(np.flatnonzero(order == 0)[0])]


def _needle_stream(rng: np.random.Generator) -> Iterator[str]:
    """Needle sources in repeated shuffled passes, so every source is used about equally."""
    names = sorted(SOURCES)
    while True:
        yield from (names[i] for i in rng.permutation(len(names)))


def _place(rng: np.random.Generator, duration: int, lengths: list[int]) -> list[int]:
    """Non-overlapping whole-second starts for needles of `lengths`, at least 10 s apart."""
    gap = 10
    free = duration - sum(lengths) - gap * (len(lengths) + 1)
    if free < 0:
        raise BenchmarkError(f"{duration} s is too short for {len(lengths)} needles of {lengths} s")
    # split the free time into len+1 random parts (sorted uniform cut points)
    cuts = np.sort(rng.integers(0, free + 1, size=len(lengths)))
    starts, t = [], 0
    prev = 0
    for cut, length in zip(cuts, lengths):
        t += gap + int(cut - prev)
        starts.append(t)
        t += length
        prev = cut
    return starts


def plan_video(cfg: BenchConfig, index: int, rng: np.random.Generator, stream: Iterator[str]) -> BenchVideo:
    """Decide where needles go, which haystack fills the rest, and the questions."""
    duration = int(round(cfg.minutes * 60))
    names: list[str] = []
    while len(names) < min(cfg.needles, len(SOURCES)):
        name = next(stream)
        if name not in names:
            names.append(name)
    lo, hi = cfg.needle_seconds
    lengths = [int(rng.integers(lo, hi + 1)) for _ in names]
    starts = _place(rng, duration, lengths)
    order = np.argsort(starts)
    names, lengths, starts = [names[i] for i in order], [lengths[i] for i in order], [starts[i] for i in order]

    segments: list[Segment] = []
    needles: list[Needle] = []

    def haystack(a: int, b: int) -> None:
        while a < b:
            d = min(b - a, int(rng.integers(15, 61)))
            if 0 < b - a - d < 5:  # no sliver at the end
                d = b - a
            kind = HAYSTACK_KINDS[int(rng.integers(len(HAYSTACK_KINDS)))]
            segments.append(Segment(a, d, kind, None, int(rng.integers(2**31))))
            a += d

    t = 0
    for name, start, length in zip(names, starts, lengths):
        haystack(t, start)
        segments.append(Segment(start, length, "needle", name, int(rng.integers(2**31))))
        options, answer = _question(name, rng)
        needles.append(Needle(name, start, start + length, SOURCES[name].question, options, answer))
        t = start + length
    haystack(t, duration)
    return BenchVideo(f"needle_{cfg.seed}_{index:03d}", duration, segments, needles, f"needle_{cfg.seed}_{index:03d}.mp4")


def plan(cfg: BenchConfig) -> list[BenchVideo]:
    """The whole benchmark's plan: a pure function of the config (seed included)."""
    if cfg.videos < 1 or cfg.minutes <= 0 or cfg.fps <= 0 or cfg.needles < 1:
        raise BenchmarkError("needle benchmark: videos, minutes, fps and needles must be positive")
    rng = np.random.default_rng(cfg.seed)
    stream = _needle_stream(rng)
    return [plan_video(cfg, i, rng, stream) for i in range(cfg.videos)]


def render_segment(seg: Segment, cfg: BenchConfig) -> np.ndarray:
    """The frames of one segment (uint8 [duration * fps, H, W, 3])."""
    n = seg.duration * cfg.fps
    rng = np.random.default_rng(seg.seed)
    size = (cfg.width, cfg.height)
    if seg.kind == "needle":
        return render_needle(seg.source, n, cfg.fps, size, rng)
    return render_haystack(seg.kind, n, cfg.fps, size, rng)


def render_frames(video: BenchVideo, cfg: BenchConfig) -> Iterator[np.ndarray]:
    """Every frame of a planned video, in order (frame k shows time k / fps)."""
    for seg in video.segments:
        yield from render_segment(seg, cfg)


def _to_json(bench: Benchmark) -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "key": bench.config.key(),
            "config": asdict(bench.config), "videos": [asdict(v) for v in bench.videos]}


def load_benchmark(root: str | Path) -> Benchmark:
    """Read a benchmark folder's manifest."""
    root = Path(root)
    try:
        data = json.loads((root / MANIFEST).read_text())
        cfg = data["config"]
        cfg["needle_seconds"] = tuple(cfg["needle_seconds"])
        videos = [BenchVideo(v["name"], v["duration"], [Segment(**s) for s in v["segments"]],
                             [Needle(**n) for n in v["needles"]], v["path"]) for v in data["videos"]]
        return Benchmark(root, BenchConfig(**cfg), videos)
    except FileNotFoundError:
        raise BenchmarkError(f"{root / MANIFEST}: no needle benchmark here") from None
    except (KeyError, TypeError, ValueError) as e:
        raise BenchmarkError(f"{root / MANIFEST}: not a needle benchmark manifest ({e})") from None


def generate(root: str | Path, cfg: BenchConfig,
             progress: Callable[[str, int, int], None] | None = None) -> Benchmark:
    """Plan and write the benchmark's videos and manifest into `root`; reuse an identical one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        old = load_benchmark(root)
        if old.config.key() == cfg.key() and all(old.video_path(v).is_file() for v in old.videos):
            return old
    except BenchmarkError:
        pass
    bench = Benchmark(root, cfg, plan(cfg))
    (root / MANIFEST).unlink(missing_ok=True)  # a half-written benchmark is never reused
    total = sum(v.duration * cfg.fps for v in bench.videos)
    done = 0
    for v in bench.videos:
        write_video(bench.video_path(v), render_frames(v, cfg), fps=cfg.fps, codec=cfg.codec,
                    options={"preset": "veryfast"} if cfg.codec == "libx264" else None)
        done += v.duration * cfg.fps
        if progress:
            progress(v.name, done, total)
    (root / MANIFEST).write_text(json.dumps(_to_json(bench), indent=1))
    return bench
