"""Where torch models run, and in which precision: one choice for encoders, MLLMs and training.

    device: what was asked, else CUDA, else Apple's MPS, else the CPU
    dtype:  what was asked, else bfloat16 on CUDA (float16 where bf16 is missing), float16 on
            MPS, float32 on the CPU
"""

from __future__ import annotations

import torch

from tspo_edge.errors import ModelLoadError

_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None and str(device) not in ("", "auto"):
        try:
            d = torch.device(device)
        except RuntimeError as e:
            raise ModelLoadError(f"device {device!r}: {e}") from None
        if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
            raise ModelLoadError(f"device {device!r}: no such CUDA device here")
        return d
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None and dtype != "auto":
        value = getattr(torch, _DTYPE_NAMES.get(dtype, dtype), None)
        if not isinstance(value, torch.dtype):
            raise ModelLoadError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)")
        return value
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def pooled(out) -> torch.Tensor:
    """get_image_features / get_text_features: a tensor in transformers 4, an output whose
    pooler_output is that tensor in transformers 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
