"""Frame preprocessing on tensors (batched, no per-frame PIL round trip)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 N×H×W×3 numpy -> uint8 N×3×H×W tensor on `device` (resizing happens there)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)


def resize_crop(
    x: torch.Tensor,
    *,
    shortest_edge: int | None = None,
    size_hw: tuple[int, int] | None = None,
    crop_hw: tuple[int, int] | None = None,
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Resize an N×3×H×W batch (short side to `shortest_edge`, or to exactly `size_hw`),
    then center-crop to `crop_hw`. uint8 stays uint8 (resized with antialiasing and rounded,
    as transformers' torchvision image processors do)."""
    mode = INTERPOLATIONS[interpolation]
    h, w = x.shape[-2:]
    if size_hw is not None and (h, w) != tuple(size_hw):
        x = TF.resize(x, list(size_hw), interpolation=mode, antialias=True)
    elif shortest_edge is not None and min(h, w) != shortest_edge:
        x = TF.resize(x, [shortest_edge], interpolation=mode, antialias=True)
    if crop_hw is not None and tuple(x.shape[-2:]) != tuple(crop_hw):
        x = TF.center_crop(x, list(crop_hw))
    return x


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              rescale: float = 1 / 255, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(x * rescale - mean) / std, fused into one affine map, in `dtype`."""
    m = torch.tensor([float(v) for v in mean], device=x.device).view(1, -1, 1, 1)
    s = torch.tensor([float(v) for v in std], device=x.device).view(1, -1, 1, 1)
    return ((x.float() - m / rescale) / (s / rescale)).to(dtype)
