"""Hugging Face CLIP / SigLIP towers (tspo_edge.models.encoders.hf.HFEncoder) to ONNX via torch.onnx."""

from __future__ import annotations

from pathlib import Path

import torch

from tspo_edge.models.device import pooled
from tspo_edge.models.encoders.onnx import TOKENIZER_DIR
from tspo_edge.models.encoders.preprocess import normalize
from tspo_edge.errors import ExportError

from tspo_edge.export.onnx_utils import export_pair


class _Image(torch.nn.Module):
    """uint8 pixels [N, 3, S, S] (resized and cropped) -> get_image_features, normalised as the encoder does."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.model = encoder.model
        self.mean, self.std, self.rescale = tuple(encoder.mean), tuple(encoder.std), float(encoder.rescale)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = normalize(pixels, self.mean, self.std, self.rescale, dtype=torch.float32)
        return pooled(self.model.get_image_features(pixel_values=x))


class _Text(torch.nn.Module):
    def __init__(self, model, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
        return pooled(self.model.get_text_features(**dict(zip(self.names, arrays))))


def export_hf(encoder, out_dir: Path, *, opset: int, fp16: bool) -> dict:
    """Both towers of an HFEncoder; the model is moved to float32 on the CPU for tracing."""
    encoder.model.float().cpu().eval()
    if getattr(encoder.model.config, "_attn_implementation", None) not in (None, "eager", "sdpa"):
        raise ExportError(f"{encoder.id}: attention implementation "
                          f"{encoder.model.config._attn_implementation!r} does not export; load with sdpa or eager")
    shape = encoder.crop_hw or encoder.size_hw
    if shape is None or shape[0] != shape[1]:
        raise ExportError(f"{encoder.id}: exports need a square model input, got {shape}")
    kw = {"padding": encoder.text_padding, "truncation": True, "max_length": int(encoder.max_length)}
    tok = encoder.tokenizer(["a photo of a dog.", "what happens first?"], return_tensors="pt", **kw)
    names = [k for k in ("input_ids", "attention_mask") if k in tok]
    info = export_pair(_Image(encoder), _Text(encoder.model, names), {k: tok[k] for k in names}, int(shape[0]),
                       out_dir, opset, fp16)
    encoder.tokenizer.save_pretrained(str(out_dir / TOKENIZER_DIR))
    return {**info, "kind": f"hf-{encoder.model_type}", "tokenizer": kw,
            "image": {"size": int(shape[0]), "shortest_edge": encoder.shortest_edge,
                      "size_hw": list(encoder.size_hw) if encoder.size_hw else None,
                      "crop": list(encoder.crop_hw) if encoder.crop_hw else None,
                      "interpolation": encoder.interpolation}}
