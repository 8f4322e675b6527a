"""Frame batches in NumPy: the checks and the crop every encoder backend shares."""

from __future__ import annotations

import numpy as np


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
