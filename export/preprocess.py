"""Frames -> the image tower's input: resized and center-cropped uint8 pixels N×3×S×S.

Frames come decoded at the encoder's short side (tspo_edge.video resizes while decoding),
so usually only a center crop remains: done here in NumPy, without torch. Any other size
goes through the torch encoder's own resize (tspo_edge.encoders.preprocess), so the ONNX
encoder sees exactly the pixels the torch encoder sees. Normalisation is inside the graph.
"""

from __future__ import annotations

import numpy as np


def check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 N×H×W×3, got {frames.dtype} {frames.shape}")
    return frames


def needs_resize(h: int, w: int, spec: dict) -> bool:
    if spec.get("size_hw"):
        return (h, w) != tuple(spec["size_hw"])
    return spec.get("shortest_edge") is not None and min(h, w) != spec["shortest_edge"]


def center_crop(frames: np.ndarray, crop_hw) -> np.ndarray:
    """torchvision's center_crop offsets (Python round) on N×H×W×3; frames at least crop size."""
    ch, cw = crop_hw
    h, w = frames.shape[1:3]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return frames[:, top:top + ch, left:left + cw]


def pixels(frames: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 N×H×W×3 -> uint8 N×3×S×S as the torch encoder resizes and crops them."""
    frames = check_frames(frames)
    h, w = frames.shape[1:3]
    crop = tuple(spec["crop"]) if spec.get("crop") else None
    if needs_resize(h, w, spec) or (crop and (h < crop[0] or w < crop[1])):
        from tspo_edge.encoders.preprocess import resize_crop, to_tensor

        x = resize_crop(to_tensor(frames), shortest_edge=spec.get("shortest_edge"),
                        size_hw=tuple(spec["size_hw"]) if spec.get("size_hw") else None, crop_hw=crop,
                        interpolation=spec.get("interpolation", "bicubic"))
        return np.ascontiguousarray(x.numpy())
    if crop and (h, w) != crop:
        frames = center_crop(frames, crop)
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
