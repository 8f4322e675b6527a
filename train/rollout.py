"""Rollouts: G Gumbel-top-k draws of keyframes, each answered greedily by the frozen MLLM.

Only the chosen frames are decoded, once per sample (the union over the G rollouts),
from their source videos; requests to an OpenAI-compatible server are sent concurrently.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import numpy as np
import torch

from tspo_edge.questions import parse_answer_letter
from tspo_edge.media.video import read_frames_at

from tspo_edge.train.policy import sample_frames

from tspo_edge.train.samples import Sample


class FrameSource(Protocol):
    def read(self, video: str, times: np.ndarray) -> np.ndarray:
        """uint8[N, H, W, 3] frames of `video` at `times` (seconds)."""


class VideoFrames:
    """Decodes frames with tspo_edge.media.video (PyAV or decord), short side `size`.

    `cache` keeps that many decoded frames by (video, time): worth it when the same frames
    come back step after step (the toy run), not over a 10k-video data set.
    """

    def __init__(self, size: int | None = 336, decoder: str = "pyav", cache: int = 0):
        self.size, self.decoder, self.cache_size = size, decoder, cache
        self.cache: OrderedDict[tuple[str, float], np.ndarray] = OrderedDict()

    def read(self, video: str, times: np.ndarray) -> np.ndarray:
        times = np.asarray(times, dtype=np.float64)
        if not self.cache_size:
            return read_frames_at(video, times, size=self.size, decoder=self.decoder)
        keys = [(video, float(t)) for t in times]
        todo = sorted({k[1] for k in keys if k not in self.cache})
        if todo:
            for t, img in zip(todo, read_frames_at(video, todo, size=self.size, decoder=self.decoder)):
                self.cache[(video, t)] = img
        out = []
        for k in keys:
            self.cache.move_to_end(k)
            out.append(self.cache[k])
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return np.stack(out)


def _resize(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if frames.shape[1:3] == hw:
        return frames
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    t = torch.nn.functional.interpolate(t, size=hw, mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def decode_positions(sample: Sample, positions: np.ndarray, frames: FrameSource) -> dict[int, np.ndarray]:
    """Frames of the sample at `positions`, one decode per source video, resized to one size
    (that of the first source video's frames, as the paper resizes spliced clips)."""
    positions = np.unique(positions)
    out: dict[int, np.ndarray] = {}
    hw: tuple[int, int] | None = None
    for vi in np.unique(sample.src[positions]):
        pos = positions[sample.src[positions] == vi]
        imgs = frames.read(sample.videos[vi], sample.times[pos])
        hw = hw or tuple(imgs.shape[1:3])
        imgs = _resize(imgs, hw)
        out.update({int(p): img for p, img in zip(pos, imgs)})
    return out


def draw(scores: torch.Tensor, n: int, group: int, generator: torch.Generator) -> torch.Tensor:
    """G independent Gumbel-top-k draws of n frames: LongTensor[G, min(n, T)], rows sorted."""
    s = scores.detach().float().cpu()
    return torch.stack([sample_frames(s, n, generator)[0] for _ in range(group)])


def answer_rollouts(sample: Sample, chosen: torch.Tensor, frames: FrameSource, answerer) -> list[str | None]:
    """The MLLM's answer letter (upper-case or None) for each rollout's frames.

    The G rollouts go to the answerer as one batch: a transformers MLLM batches them, an
    OpenAI-compatible answerer keeps them in flight concurrently (vLLM, trtllm-serve)."""
    idx = chosen.cpu().numpy()
    pics = decode_positions(sample, idx.ravel(), frames)
    row = sample.row
    items = [(np.stack([pics[int(p)] for p in sel]), sample.timeline[sel], row.question, list(row.options))
             for sel in idx]
    batch = getattr(answerer, "answer_batch", None)
    answers = batch(items) if batch is not None else [answerer.answer(*it) for it in items]
    letters = []
    for ans in answers:
        letter = getattr(ans, "letter", None) or parse_answer_letter(getattr(ans, "text", None), len(row.options))
        letters.append(letter.upper() if letter else None)
    return letters
