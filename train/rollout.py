"""Rollouts: G Gumbel-top-k draws of keyframes, each answered greedily by the frozen MLLM.

Only the chosen frames are decoded, once per sample (the union over the G rollouts),
from their source videos; requests to an OpenAI-compatible server are sent concurrently.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from tspo_edge.questions import parse_answer_letter
from tspo_edge.select import sample_frames

from .samples import Sample


class FrameSource(Protocol):
    def read(self, video: str, times: np.ndarray) -> np.ndarray:
        """uint8[N, H, W, 3] frames of `video` at `times` (seconds)."""


class VideoFrames:
    """Decodes frames with tspo_edge.video (PyAV or decord), short side `size`."""

    def __init__(self, size: int | None = 336, decoder: str = "pyav"):
        self.size, self.decoder = size, decoder

    def read(self, video: str, times: np.ndarray) -> np.ndarray:
        from tspo_edge.video import read_frames_at

        return read_frames_at(video, times, size=self.size, decoder=self.decoder)


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


def concurrency_for(answerer) -> int:
    """Requests in flight: many for a server, one for an in-process model."""
    spec = str(getattr(answerer, "id", ""))
    return 8 if spec.startswith(("openai", "http")) else 1


def answer_rollouts(sample: Sample, chosen: torch.Tensor, frames: FrameSource, answerer,
                    workers: int = 1) -> list[str | None]:
    """The MLLM's answer letter (upper-case or None) for each rollout's frames."""
    idx = chosen.cpu().numpy()
    pics = decode_positions(sample, idx.ravel(), frames)
    row = sample.row

    def one(g: int) -> str | None:
        sel = idx[g]
        imgs = np.stack([pics[int(p)] for p in sel])
        ans = answerer.answer(imgs, sample.timeline[sel], row.question, list(row.options))
        letter = getattr(ans, "letter", None) or parse_answer_letter(getattr(ans, "text", None), len(row.options))
        return letter.upper() if letter else None

    if workers > 1 and len(idx) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(idx))) as ex:
            return list(ex.map(one, range(len(idx))))
    return [one(g) for g in range(len(idx))]
