"""Frame batches in NumPy: the checks and the crop every encoder backend shares."""

from __future__ import annotations

import numpy as np
from PIL import Image


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate a uint8 N×H×W×3 batch (a single H×W×3 frame is promoted to N = 1)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 N×H×W×3, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def center_crop(frames: np.ndarray, crop_hw) -> np.ndarray:
    """torchvision's center_crop offsets (Python round) on N×H×W×3; frames at least crop size."""
    ch, cw = crop_hw
    h, w = frames.shape[1:3]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return frames[:, top:top + ch, left:left + cw]


_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


def resize_crop_pil(frames: np.ndarray, *, shortest_edge: int | None = None, size_hw=None, crop_hw=None,
                    interpolation: str = "bicubic") -> np.ndarray:
    """N×H×W×3 uint8 -> N×H'×W'×3 uint8: preprocess.resize_crop's sizes, done by Pillow (antialiased),
    for installs without torch. Its pixels differ from torchvision's by at most 2 levels of 255
    (frames of bikes.mp4 to 224, 384x384, 32 and 448 px: mean difference under 0.003)."""
    h, w = frames.shape[1:3]
    if size_hw is not None:
        out_hw = tuple(size_hw)
    elif shortest_edge is not None and min(h, w) != shortest_edge:
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(shortest_edge * long / short)  # torchvision's rounding (down)
        out_hw = (shortest_edge, new_long) if h <= w else (new_long, shortest_edge)
    else:
        out_hw = (h, w)
    if out_hw != (h, w):
        resample = _PIL_FILTERS[interpolation]
        frames = np.stack([np.asarray(Image.fromarray(f).resize(out_hw[::-1], resample=resample)) for f in frames])
    if crop_hw is not None and tuple(frames.shape[1:3]) != tuple(crop_hw):
        frames = center_crop(frames, crop_hw)
    return frames
