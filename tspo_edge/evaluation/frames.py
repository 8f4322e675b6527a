"""`tspo-edge eval frames`: keyframes for every question of a benchmark, as the paper's frame_idx JSON.

For each annotated question: find its video under the video root, index it if needed (1 fps,
as the paper), score the stored frames against the question stem with the agent, pick
`frames` of them by `method` (paper: bin-max for Video-MME, top-k otherwise; every frame when
the video has fewer), and convert the chosen sample times to native frame numbers
round(t * native_fps). The paper's lmms-eval harness then decodes exactly those frames.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tspo_edge.checks import check_positive
from tspo_edge.errors import InputError, TspoError
from tspo_edge.models import Models
from tspo_edge.pipeline import Sampling, index_videos
from tspo_edge.scoring import score_frames
from tspo_edge.selection import METHODS, select_frames
from tspo_edge.storage.store import Store

from tspo_edge.evaluation.formats import VideoFinder, default_method, frame_numbers, read_annotations, write_frame_idx

Progress = Callable[[str, int, int], None]


@dataclass
class FramesResult:
    out: str
    benchmark: str
    method: str
    frames: int
    encoder: str
    agent: str                  # which agent, and why (TSPO-0.4B selector from …, similarity:768 …)
    agent_id: str = ""          # the id of the agent whose event features were scored
    questions: int = 0
    written: int = 0
    videos: int = 0
    missing_videos: list[str] = field(default_factory=list)
    failed_videos: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.written == self.questions

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def export_frame_idx(annotations: str | Path, benchmark: str, out: str | Path, *, db: str | Path,
                     video_root: str | Path | None = None, frames: int = 64, method: str | None = None,
                     models: Models, sampling: Sampling = Sampling(),
                     index_progress=None, progress: Progress | None = None) -> FramesResult:
    """Write `out`: the annotation records of `annotations`, each with its `frame_idx`."""
    t0 = time.perf_counter()
    method = method or default_method(benchmark)
    if method not in METHODS:
        raise InputError(f"selection method {method!r}: choose from {', '.join(METHODS)}")
    check_positive(frames, "the number of keyframes", integer=True)
    items = read_annotations(annotations, benchmark)
    root = Path(video_root) if video_root is not None else Path(annotations).parent
    if not root.is_dir():
        raise TspoError(f"{root}: video root is not a folder")
    finder = VideoFinder(root)
    by_video: dict[Path, list] = {}
    missing: list[str] = []
    for i, it in enumerate(items):
        p = finder.find(it.video)
        if p is None:
            missing.append(it.video)
        else:
            by_video.setdefault(p.resolve(), []).append((i, it))
    missing = list(dict.fromkeys(missing))

    enc = models.encoder
    agent_id = models.agent_id  # resolves the agent, so that its source is known before it is reported
    result = FramesResult(str(out), benchmark, method, frames, enc.id, models.agent_source, agent_id,
                          questions=len(items), videos=len(by_video), missing_videos=missing)
    chosen: list[list[float] | None] = [None] * len(items)  # by position: ids need not be unique
    if by_video:
        with Store(db) as store:
            results = index_videos(store, list(by_video), models, sampling, progress=index_progress)
            result.failed_videos = [f.error or f.path for f in results if f.status == "failed"]
            done = 0
            for path, its in by_video.items():
                row = store.find_video(path)
                done += len(its)
                if row is None or row.status != "indexed" or not row.fps:
                    if row is not None and row.status == "indexed":
                        result.failed_videos.append(f"{path}: native frame rate unknown")
                    continue
                feats = store.load_features(row.id)
                # (the row's frame_count counts sampled frames; the native count comes from the duration)
                native_frames = int(round(row.duration * row.fps)) if row.duration else None
                q = enc.encode_texts([it.query for _, it in its])
                for (i, it), qi in zip(its, q):
                    s = score_frames(feats.z, feats.x, qi, z_norm=feats.z_norm, x_norm=feats.x_norm)
                    idx = select_frames(s, frames, method)
                    chosen[i] = frame_numbers(feats.times[idx], row.fps, native_frames)
                if progress:
                    progress("questions", done, len(items))
    write_frame_idx(out, items, chosen)
    result.written = sum(c is not None for c in chosen)
    result.seconds = round(time.perf_counter() - t0, 2)
    return result
