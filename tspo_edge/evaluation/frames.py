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

from tspo_edge.errors import TspoError

from .formats import VideoFinder, default_method, frame_numbers, read_annotations, write_frame_idx

Progress = Callable[[str, int, int], None]
RULES = ("topk", "bin-max", "aks", "uniform")


@dataclass
class FramesResult:
    out: str
    benchmark: str
    method: str
    frames: int
    encoder: str
    agent: str
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
                     encoder="lite", agent=None, fps: float = 1.0, max_frames: int | None = None,
                     index_progress=None, progress: Progress | None = None) -> FramesResult:
    """Write `out`: the annotation records of `annotations`, each with its `frame_idx`."""
    from index import index_paths, resolve_agent
    from tspo_edge.agent import score_frames
    from tspo_edge.encoders import load_encoder
    from tspo_edge.select import select_frames
    from tspo_edge.store import Store

    t0 = time.perf_counter()
    method = method or default_method(benchmark)
    if method not in RULES:
        raise TspoError(f"--method {method!r}: choose from {', '.join(RULES)}")
    if frames < 1:
        raise TspoError(f"--frames must be at least 1, got {frames}")
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

    encoder_spec = encoder if isinstance(encoder, str) else None
    enc = load_encoder(encoder) if isinstance(encoder, str) else encoder
    agent_obj, agent_desc = resolve_agent(agent, enc, encoder_spec=encoder_spec)
    result = FramesResult(str(out), benchmark, method, frames, enc.id, agent_desc, questions=len(items),
                          videos=len(by_video), missing_videos=missing)
    chosen: list[list[float] | None] = [None] * len(items)  # by position: ids need not be unique
    if by_video:
        summary = index_paths(list(by_video), db=db, encoder=enc, agent=agent_obj, fps=fps,
                              max_frames=max_frames, progress=index_progress)
        result.failed_videos = [f.error or f.path for f in summary.failed]
        with Store(db, readonly=True) as store:
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
