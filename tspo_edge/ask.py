"""Question -> keyframes -> answer, over an index.

    find the video (index it first when missing or changed) -> encode the question stem ->
    score the stored event features (score_frames) -> select keyframes -> decode only those,
    by timestamp, at the size the answerer wants -> answer.

Everything is validated before the index is touched, so a failed ask leaves it as it was.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from tspo_edge.answers import AskResult, Keyframe
from tspo_edge.media import video
from tspo_edge.checks import in_range, json_safe
from tspo_edge.errors import AskError, InputError, TspoError, VideoError
from tspo_edge.limits import MAX_ASK_FRAMES, MAX_QUESTION_CHARS
from tspo_edge.models import Models
from tspo_edge.pipeline import Sampling, agent_events, ensure_indexed
from tspo_edge.questions import Question, parse_question
from tspo_edge.scoring import TAU, score_frames
from tspo_edge.selection import METHODS, select_frames
from tspo_edge.storage.store import VideoFeatures, canonical_path
from tspo_edge.timestamps import mmss
LONG_VIDEO_SECONDS = 600.0   # the paper evaluates long videos with 64 frames
SHEET_SIZE = 240             # short side of contact-sheet tiles when nothing else was decoded
_IMPORTED = time.perf_counter()


def process_seconds() -> float:
    """Seconds since this process started: what a user of a command has waited so far
    (interpreter start, imports, model loading). Linux reads the start from /proc; elsewhere
    it counts from this module's import, which comes early in the command line."""
    try:
        with open("/proc/self/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime
        now = time.clock_gettime(time.CLOCK_BOOTTIME)  # the clock starttime counts on
        return max(0.0, now - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


def default_frames(duration: float | None) -> int:
    """16 frames for videos up to 10 minutes, 64 beyond."""
    return 64 if duration is not None and duration > LONG_VIDEO_SECONDS else 16


def check_inputs(video, question: str, *, frames: int | None, method: str,
                 options: Sequence[str] | None = None) -> Path:
    """Reject bad input before anything is loaded or written."""
    if question is None or not str(question).strip():
        raise AskError("the question is empty")
    length = len(str(question)) + sum(len(str(o)) for o in options or ())
    if length > MAX_QUESTION_CHARS:
        raise AskError(f"the question has {length} characters with its options; "
                       f"at most {MAX_QUESTION_CHARS} are taken")
    if method not in METHODS:
        raise AskError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if frames is not None and not in_range(frames, 1, MAX_ASK_FRAMES, integer=True):
        raise AskError(f"the number of keyframes must be a positive whole number (at most {MAX_ASK_FRAMES}), "
                       f"got {frames}")
    path = Path(video).expanduser()
    try:
        path.stat()
    except FileNotFoundError:
        raise VideoError(f"{video}: no such file") from None
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, no permission
        raise VideoError(f"{video}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not path.is_file():
        raise VideoError(f"{video}: not a file")
    return path


class Asker:
    """Models loaded once; asks many questions (features of recent videos kept in memory).

    Which event features a question is scored against: a video indexed and unchanged is used
    as stored, whatever agent the index ran (an ask of an indexed video loads no agent). An
    agent given explicitly (`agent=`) that is not the one the index ran has its events computed
    from the stored embeddings for this ask, in memory: the index is not changed, so later
    plain asks see what they saw before.
    """

    def __init__(self, *, store, models: Models, answerer, agent: str | None = None, decoder: str = "pyav",
                 progress: Callable | None = None, cache_videos: int = 4):
        self.store = store
        self.models = models
        self.answerer = answerer
        self.decoder = decoder
        self.progress = progress
        self.explicit = models.with_agent(agent) if agent is not None else None
        if self.explicit is not None:  # load it now, so that a bad checkpoint fails first
            self.explicit.agent_id  # noqa: B018
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = max(0, cache_videos)
        self.last_index_seconds = 0.0

    @property
    def encoder(self):
        return self.models.encoder

    def _features(self, path: Path) -> tuple[VideoFeatures, str, bool]:
        """(features, agent id of their events, indexed_now)."""
        key = canonical_path(path)
        st = path.stat()
        stamp = (st.st_size, st.st_mtime)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp:
            self._cache.move_to_end(key)
            return cached[1], cached[2], False
        before = self.store.find_video(key)
        fresh = (before is not None and before.status == "indexed"
                 and (before.size, before.mtime) == stamp)
        indexed_now = False
        if fresh:
            row = before
        else:
            video.probe(path, decoder=self.decoder)  # unreadable: VideoError, index untouched
            models = self.explicit or self.models
            if hasattr(self.progress, "agent_id"):
                self.progress.agent_id = models.agent_id
            t0 = time.perf_counter()
            sampling = None
            if before is not None and before.sample_fps:
                sampling = Sampling(fps=before.sample_fps, max_frames=before.max_frames, decoder=self.decoder)
            # a video that fails here changes nothing: no failed row (an ask is not an index run)
            row = ensure_indexed(self.store, path, models, sampling, progress=self.progress, record_failure=False)
            self.last_index_seconds = time.perf_counter() - t0
            indexed_now = True
        feats = self.store.load_features(row.id, encoder_id=self.encoder.id)
        agent_id = row.agent_id or ""
        if self.explicit is not None and self.explicit.agent_id != agent_id:
            feats = dataclasses.replace(feats, z=agent_events(self.explicit, feats.x, key), z_norm=None)
            agent_id = self.explicit.agent_id
        if self._cache_size:
            self._cache[key] = (stamp, feats, agent_id)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return feats, agent_id, indexed_now

    def ask(self, video_path, question: str, *, options: Sequence[str] | None = None, frames: int | None = None,
            method: str = "topk", tau: float | None = None, keep_pixels: bool = False) -> AskResult:
        path = check_inputs(video_path, question, frames=frames, method=method, options=options)
        try:
            q: Question = parse_question(question, options)
        except ValueError as e:
            raise AskError(str(e)) from e
        timings: dict[str, float] = {}

        t = time.perf_counter()
        self.last_index_seconds = 0.0
        feats, agent_id, indexed_now = self._features(path)
        timings["lookup"] = time.perf_counter() - t - self.last_index_seconds
        if indexed_now:
            timings["index"] = self.last_index_seconds

        t = time.perf_counter()
        qv = np.asarray(self.encoder.encode_texts([q.stem]), dtype=np.float32)
        timings["text"] = time.perf_counter() - t

        t = time.perf_counter()
        s = score_frames(feats.z, feats.x, qv, TAU if tau is None else tau,
                         z_norm=feats.z_norm, x_norm=feats.x_norm)
        timings["score"] = time.perf_counter() - t

        t = time.perf_counter()
        n = int(frames) if frames is not None else default_frames(feats.video.duration)
        idx = select_frames(s, min(n, len(s)), method)
        timings["select"] = time.perf_counter() - t

        times = feats.times[idx]
        pixels = None
        if self.answerer.needs_frames or keep_pixels:
            t = time.perf_counter()
            size = self.answerer.image_size if self.answerer.needs_frames else SHEET_SIZE
            pixels = video.read_frames_at(path, times, size=size, decoder=self.decoder)
            timings["decode"] = time.perf_counter() - t

        t = time.perf_counter()
        ans = self.answerer.answer(pixels, times, q.stem, q.options)
        timings["answer"] = time.perf_counter() - t
        timings["total"] = sum(timings.values())

        return AskResult(
            video=str(path), question=q.text, stem=q.stem, options=list(q.options),
            answer=ans.text or None, letter=ans.letter,
            frames=[Keyframe(int(i), float(feats.times[i]), float(s[i])) for i in idx],
            method=method, timings=timings,
            models={"encoder": self.encoder.id, "agent": agent_id, "answerer": ans.model_id},
            note=ans.note, indexed_now=indexed_now, option_scores=ans.option_scores, warning=q.warning,
            pixels=pixels if keep_pixels else None)

    def ask_batch(self, batch, video=None, *, options: Sequence[str] | None = None, frames: int | None = None,
                  method: str = "topk") -> Iterator["BatchAnswer"]:
        """Each line of a loaded batch file (tspo_edge.question_batch), in its order: the answer,
        or the line's one-line error naming file:line. A bad line costs only itself; a line
        without "video" asks about `video`; `options`, `frames`, `method` are the defaults of
        the lines that do not give their own."""
        for line, it in batch.entries:
            where = f"{batch.path}:{line}"
            if isinstance(it, str):  # a line that is no question
                yield BatchAnswer(line, where, {"line": line, "error": it}, error=it, skipped=True)
                continue
            rid, target = it.get("id", line), it.get("video") or video
            try:
                if target is None:
                    raise InputError(f"{where}: no \"video\" on this line, and no VIDEO argument")
                r = self.ask(target, it["question"], options=it.get("options") or options or None,
                             frames=it.get("frames", frames), method=it.get("method", method))
            except (TspoError, OSError) as e:  # OSError: a path the system refuses (too long, say)
                e = getattr(e, "strerror", None) or e
                msg = str(e) if str(e).startswith(where + ":") else f"{where}: {e}"
                failed = {"id": rid, "line": line, "video": None if target is None else str(target),
                          "question": it["question"], "error": msg}
                yield BatchAnswer(line, where, failed, error=msg)
                continue
            yield BatchAnswer(line, where, json_safe({"id": rid, **r.to_dict()}), warning=r.warning)


@dataclasses.dataclass
class BatchAnswer:
    """One line of a batch file, answered or not."""
    line: int
    where: str                  # "<file>:<line>"
    record: dict                # its JSON line: the answer with the line's id, or the error
    error: str | None = None    # one line, when the line failed (or, `skipped`, is no question)
    skipped: bool = False
    warning: str | None = None  # the answer's warning (AskResult.warning)


def ask(video_path, question: str, *, store, models: Models, answerer, agent: str | None = None,
        frames: int | None = None, method: str = "topk", options: Sequence[str] | None = None,
        decoder: str = "pyav", progress: Callable | None = None, keep_pixels: bool = False) -> AskResult:
    """One question about one video (see Asker for many)."""
    check_inputs(video_path, question, frames=frames, method=method, options=options)
    return Asker(store=store, models=models, answerer=answerer, agent=agent, decoder=decoder,
                 progress=progress, cache_videos=0).ask(video_path, question, options=options, frames=frames,
                                                        method=method, keep_pixels=keep_pixels)


def contact_sheet(frames: np.ndarray, times: Sequence[float], out, *, scores: Sequence[float] | None = None,
                  tile: int = 320, columns: int | None = None) -> Path:
    """A JPEG/PNG grid of the chosen frames, each labelled with its mm:ss timestamp."""
    n = len(frames)
    if n == 0:
        raise AskError("no frames for a contact sheet")
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h0, w0 = frames.shape[1:3]
    tw, th = tile, max(1, int(round(tile * h0 / w0)))
    sheet = Image.new("RGB", (cols * tw, rows * th), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, (f, t) in enumerate(zip(frames, times)):
        x, y = (i % cols) * tw, (i // cols) * th
        sheet.paste(Image.fromarray(f).resize((tw, th)), (x, y))
        label = mmss(t) + (f"  s={scores[i]:.1f}" if scores is not None else "")
        box = draw.textbbox((x + 4, y + 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((x + 4, y + 4), label, fill=(255, 255, 255))
    out = Path(out)
    try:
        sheet.save(out)
    except (OSError, ValueError) as e:
        raise AskError(f"{out}: cannot write the contact sheet ({e})") from e
    return out
