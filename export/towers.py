"""An encoder's image and text towers to ONNX: the embedded lite encoder and HF CLIP / SigLIP.

Image towers take resized and cropped uint8 pixels [N, 3, S, S] (resize/crop stay in the
runtime, see tspo_edge.models.encoders.onnx; the normalisation is in the graph) and return the raw
embeddings the torch encoder returns; text towers take the tokenizer's arrays and return
[B, D]. The tokenizer is saved next to the models so the runtime tokenises as torch does.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tspo_edge.errors import ExportError

from tspo_edge.models.encoders import lite
from tspo_edge.models.encoders.lite import LiteEncoder
from tspo_edge.models.encoders.onnx import MAX_IMAGE_BATCH, TOKENIZER_DIR
from tspo_edge.models.encoders.preprocess import normalize

from tspo_edge.export.hf_towers import export_hf
from tspo_edge.export.onnx_utils import export_pair

LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # tspo_edge.models.encoders.lite normalises with these


class _LiteImage(torch.nn.Module):
    """uint8 pixels -> normalize(softmax(effnet(pixels) / T) @ E): the lite bridge into MiniLM space."""

    def __init__(self, effnet: torch.nn.Module, class_embeddings: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.effnet, self.temperature = effnet, float(temperature)
        self.register_buffer("E", class_embeddings.detach().float().cpu().clone())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = normalize(pixels, LITE_MEAN, LITE_STD)
        p = torch.softmax(self.effnet(x).float() / self.temperature, dim=-1)
        return F.normalize(p @ self.E, dim=-1)


class _SentenceText(torch.nn.Module):
    """A sentence-transformers pipeline (transformer, pooling, normalise) on token arrays."""

    def __init__(self, st) -> None:
        super().__init__()
        self.st = st

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]


def export_lite(encoder, out_dir: Path, *, opset: int, fp16: bool) -> dict:
    """The lite encoder: EfficientNet-Lite0 + bridge, and MiniLM + mean pooling + normalise."""

    st = encoder.text_model.cpu().eval()
    image = _LiteImage(encoder.image_model.cpu().eval(), encoder.class_embeddings, encoder.temperature)
    tok = st.tokenizer(["a photo of a dog.", "what happens at the start?"], padding=True, truncation=True,
                       max_length=st.max_seq_length, return_tensors="pt")
    info = export_pair(image, _SentenceText(st), {k: tok[k] for k in ("input_ids", "attention_mask")},
                        lite.IMAGE_SIZE, out_dir, opset, fp16)
    st.tokenizer.save_pretrained(str(out_dir / TOKENIZER_DIR))
    return {**info, "kind": "lite",
            "tokenizer": {"padding": True, "truncation": True, "max_length": int(st.max_seq_length)},
            "image": {"size": lite.IMAGE_SIZE, "shortest_edge": lite.IMAGE_SIZE,
                      "crop": [lite.IMAGE_SIZE, lite.IMAGE_SIZE], "size_hw": None, "interpolation": "bicubic"}}


def export_encoder(encoder, out_dir: Path, *, opset: int = 17, fp16: bool = False) -> dict:
    """Export both towers of `encoder`; returns the manifest's encoder section (id, dim, preprocessing).

    Tracing runs on the CPU in float32: the encoder's models are moved there (export only).
    """
    if isinstance(encoder, LiteEncoder):
        info = export_lite(encoder, out_dir, opset=opset, fp16=fp16)
    elif hasattr(encoder, "model") and hasattr(encoder.model, "get_image_features"):
        info = export_hf(encoder, out_dir, opset=opset, fp16=fp16)
    else:
        raise ExportError(f"{type(encoder).__name__}: no ONNX exporter for this encoder (lite, CLIP, SigLIP)")
    size, length = info["image"]["size"], int(info["tokenizer"].get("max_length") or 77)
    # TensorRT shape profiles [min, opt, max]: image batches 1..64, text batches 1..64 up to max length
    profile = {"image": {"pixels": [[1, 3, size, size], [32, 3, size, size], [MAX_IMAGE_BATCH, 3, size, size]]},
               "text": {n: [[1, 1], [8, min(32, length)], [MAX_IMAGE_BATCH, length]] for n in info["text_inputs"]}}
    return {"id": encoder.id, "dim": int(encoder.dim), "image_size": int(encoder.image_size), **info,
            "profile": profile}
