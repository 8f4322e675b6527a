"""The ONNX Runtime backend of the encoders: an export folder's towers behind the Encoder protocol.

Features match the torch encoder's (float32, within float tolerance) and keep its `id`, so an
index built with one is read with the other. The text side tokenises with the `tokenizers`
library from the tokenizer saved in the export, so an ask on this backend imports neither
torch nor transformers. Frames come decoded at the encoder's short side (tspo_edge.media.video
resizes while decoding), so only a centre crop remains, done in NumPy; frames of another
size go through the torch encoder's own resize, so both backends see the same pixels (without
torch, through Pillow's, within 2 levels of 255).
Normalisation is inside the graph. Sessions open on first use: an ask needs only the text tower.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from tspo_edge.errors import ManifestError
from tspo_edge.models.manifest import MANIFEST, check_id, read_manifest, verify_files
from tspo_edge.models.onnx_session import make_session
from tspo_edge.models.encoders.frame_batch import center_crop, check_frames, resize_crop_pil

TOKENIZER_DIR = "tokenizer"
MAX_IMAGE_BATCH = 64  # TensorRT profiles cover batches up to this


def _needs_resize(h: int, w: int, spec: dict) -> bool:
    if spec.get("size_hw"):
        return (h, w) != tuple(spec["size_hw"])
    return spec.get("shortest_edge") is not None and min(h, w) != spec["shortest_edge"]


def pixels(frames: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 N×H×W×3 -> uint8 N×3×S×S as the torch encoder resizes and crops them."""
    frames = check_frames(frames)
    h, w = frames.shape[1:3]
    crop = tuple(spec["crop"]) if spec.get("crop") else None
    if _needs_resize(h, w, spec) or (crop and (h < crop[0] or w < crop[1])):
        # Frames decoded at another size than the tower's: the torch encoder's own resize where
        # torch is installed (the same pixels), else Pillow's (the light install; within 2 levels).
        sizes = dict(shortest_edge=spec.get("shortest_edge"), crop_hw=crop,
                     size_hw=tuple(spec["size_hw"]) if spec.get("size_hw") else None,
                     interpolation=spec.get("interpolation", "bicubic"))
        try:
            from tspo_edge.models.encoders.preprocess import resize_crop, to_tensor  # optional: torch (the [torch] extra)
        except ImportError:
            return np.ascontiguousarray(resize_crop_pil(frames, **sizes).transpose(0, 3, 1, 2))
        return np.ascontiguousarray(resize_crop(to_tensor(frames), **sizes).numpy())
    if crop and (h, w) != crop:
        frames = center_crop(frames, crop)
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))


def _special_token(folder: Path, name: str) -> str | None:
    """A special token (e.g. pad_token) as the saved tokenizer_config.json names it."""
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            value = json.loads((folder / file).read_text()).get(name)
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if value:
            return str(value)
    return None


def load_tokenizer(folder: Path, kw: dict) -> Tokenizer:
    """The export's fast tokenizer with the padding and truncation the torch encoder used."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ManifestError(f"{path}: missing (re-export with this version of tspo-edge)")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    max_length = kw.get("max_length")
    if kw.get("truncation") and max_length:
        tok.enable_truncation(max_length=int(max_length))
    padding = kw.get("padding")
    if padding:
        pad = _special_token(folder, "pad_token")
        pad_id = tok.token_to_id(pad) if pad is not None else None
        if pad_id is None:
            raise ManifestError(f"{folder}: the tokenizer has no pad token")
        length = int(max_length) if padding == "max_length" and max_length else None
        tok.enable_padding(pad_id=pad_id, pad_token=pad, length=length)
    return tok


class OnnxEncoder:
    """An exported encoder (DIR/image.onnx, DIR/text.onnx, DIR/tokenizer) behind the Encoder protocol."""

    def __init__(self, model_dir, *, encoder_id: str | None = None, providers: Sequence[str] | None = None,
                 batch_size: int = 32, threads: int | None = None, quiet: bool = False) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.section = check_id(self.model_dir, self.manifest, "encoder", encoder_id)
        models = self.manifest["models"]
        for part in ("image", "text"):
            if part not in models:
                raise ManifestError(f"{self.model_dir / MANIFEST}: no {part} tower listed")
            if not (self.model_dir / models[part]["file"]).is_file():
                raise ManifestError(f"{self.model_dir / models[part]['file']}: listed in {MANIFEST} but missing")
        # Small files now; a tower's hash when its session opens (an ask opens only the text tower).
        verify_files(self.model_dir, self.manifest["files"])
        self.id: str = self.section["id"]
        self.dim, self.image_size = int(self.section["dim"]), int(self.section["image_size"])
        self.batch_size = max(1, min(int(batch_size), MAX_IMAGE_BATCH))
        self.providers, self.threads, self.quiet = providers, threads, quiet
        self.source = f"onnx:{self.model_dir}"
        self.device = "cpu"
        self._sessions: dict = {}
        self._tokenizer: Tokenizer | None = None

    def session(self, part: str):
        if part not in self._sessions:
            verify_files(self.model_dir, {part: self.manifest["models"][part]})
            profile = self.section.get("profile", {}).get(part)
            self._sessions[part] = make_session(
                self.model_dir / self.manifest["models"][part]["file"], self.model_dir, providers=self.providers,
                fp16=self.manifest["precision"] == "fp16", profile=profile, threads=self.threads,
                quiet=self.quiet, prepack=part != "text")  # the text tower: a question or a few per process
            self.device = "cpu" if self._sessions[part].get_providers()[0] == "CPUExecutionProvider" else "cuda"
        return self._sessions[part]

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        out = [self.session("image").run(None, {"pixels": pixels(frames[i:i + self.batch_size], self.section["image"])})[0]
               for i in range(0, len(frames), self.batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_dir / TOKENIZER_DIR, self.section["tokenizer"])
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        out = []
        for i in range(0, len(texts), self.batch_size):  # batches as the torch encoders make them
            enc = self._tokenizer.encode_batch(list(texts[i:i + self.batch_size]))
            feeds = {name: np.asarray([getattr(e, fields[name]) for e in enc], dtype=np.int64)
                     for name in self.section["text_inputs"]}
            out.append(self.session("text").run(None, feeds)[0])
        return np.concatenate(out).astype(np.float32, copy=False)
