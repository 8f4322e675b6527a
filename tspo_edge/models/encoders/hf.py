"""Hugging Face CLIP / SigLIP encoders (transformers), by hub id or local folder.

Frames are preprocessed on tensors with the constants of the checkpoint's saved image
processor (resize, center crop, rescale, normalise), batched, on the model's device.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch
import transformers
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

from tspo_edge.models import hub
from tspo_edge.models.device import pick_device, pick_dtype, pooled
from tspo_edge.errors import ModelLoadError
from tspo_edge.models.encoders.frame_batch import check_frames
from tspo_edge.models.encoders.preprocess import normalize, resize_crop, to_tensor

# model_type -> (transformers class name, text padding the model was trained with)
ARCHITECTURES = {
    "clip": ("CLIPModel", True),
    "siglip": ("SiglipModel", "max_length"),  # SigLIP 2 fixed-resolution checkpoints too
    "siglip2": ("Siglip2Model", "max_length"),  # SigLIP 2 NaFlex (variable patch grids)
}
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}
# Used only when a CLIP folder carries no image processor config (e.g. bare TSPO-0.4B weights).
_OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_FALLBACK_CLIP_TOKENIZER = "openai/clip-vit-large-patch14"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer.model", "vocab.txt")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def split_spec(spec: str) -> tuple[str, str | None]:
    """"org/name@rev" -> ("org/name", "rev"); an existing path is never split."""
    if Path(spec).expanduser().exists() or "@" not in spec:
        return spec, None
    name, rev = spec.rsplit("@", 1)
    return name, rev or None


def _looks_like_path(spec: str) -> bool:
    """A hub id is "name" or "org/name"; anything else is meant as a folder."""
    return not re.fullmatch(r"[\w][\w.-]*(/[\w][\w.-]*)?", spec)


def folder_fingerprint(folder: Path) -> str:
    """A cheap content fingerprint: config plus size, head and tail of each weight file."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            size = p.stat().st_size
            h.update(f"{p.name}:{size}".encode())
            with open(p, "rb") as f:
                h.update(f.read(1 << 20))
                if size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    h.update(f.read())
    return h.hexdigest()[:12]


def _resolve(spec: str, revision: str | None) -> tuple[Path, str, str]:
    """-> (local folder, display name, revision or content fingerprint)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{spec}: no config.json (not a Hugging Face model folder)")
        return path.resolve(), path.resolve().name, folder_fingerprint(path)
    if path.exists() or _looks_like_path(spec):
        raise ModelLoadError(f"{spec}: no such model folder")
    cached = hub.local_files_only(spec, revision, what="an encoder")  # cache, else one fast probe
    try:
        folder = Path(snapshot_download(spec, revision=revision, local_files_only=cached,
                                        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
        if not any(folder.glob("*.safetensors")):  # older repos: PyTorch .bin weights only
            folder = Path(snapshot_download(spec, revision=revision, local_files_only=cached,
                                            allow_patterns=["*.bin"]))
    except LocalEntryNotFoundError as e:
        raise ModelLoadError(f"{spec}: only partly in the local Hugging Face cache "
                             "(download it again, or pass a model folder)") from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise ModelLoadError(f"{spec}: cannot fetch from the Hugging Face hub ({str(e).splitlines()[0]})") from e
    commit = folder.name if folder.parent.name == "snapshots" else folder_fingerprint(folder)
    return folder, spec, commit[:12]


class HFEncoder:
    """A CLIP or SigLIP checkpoint: get_image_features / get_text_features, raw projections."""

    def __init__(self, spec: str, *, device=None, dtype=None, batch_size: int = 32):
        name, revision = split_spec(spec)
        folder, display, rev = _resolve(name, revision)
        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"{folder}/config.json: {str(e).splitlines()[0]}") from e
        model_type = getattr(config, "model_type", None)
        if model_type not in ARCHITECTURES:
            raise ModelLoadError(f"{spec}: unsupported architecture {model_type!r} "
                                 f"(expected one of: {', '.join(ARCHITECTURES)})")
        cls_name, self.text_padding = ARCHITECTURES[model_type]
        self.naflex: tuple[int, int] | None = None  # (max_num_patches, patch_size) for SigLIP 2 NaFlex
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.batch_size = int(batch_size)

        cls = getattr(transformers, cls_name)
        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            # Extra tensors (TSPO-0.4B's selector.*) are expected: keep the load report quiet.
            verbosity = transformers.logging.get_verbosity()
            bars = transformers.logging.is_progress_bar_enabled()
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
            try:
                self.model = cls.from_pretrained(folder, **{dtype_kw: self.dtype})
            finally:
                transformers.logging.set_verbosity(verbosity)
                if bars:
                    transformers.logging.enable_progress_bar()
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"{folder}: cannot load {cls_name} ({str(e).splitlines()[0]})") from e
        self.model.eval().to(self.device)

        self._init_image_processing(folder, config, model_type, AutoImageProcessor)
        self.tokenizer, tok_note = self._load_tokenizer(folder, model_type, AutoTokenizer)
        self.max_length = int(config.text_config.max_position_embeddings)
        if model_type == "clip":
            self.dim = int(config.projection_dim)
        else:  # SigLIP: the text head maps to projection_size, which equals the vision width
            self.dim = int(getattr(config.text_config, "projection_size", None) or config.text_config.hidden_size)
        self.model_type = model_type
        self.id = f"hf:{display}@{rev}:{self.preprocessing}{tok_note}"

    # --- preprocessing ---------------------------------------------------------------
    def _init_image_processing(self, folder, config, model_type, AutoImageProcessor) -> None:
        ip = None
        if any((folder / f).is_file() for f in PROCESSOR_FILES):
            try:
                ip = AutoImageProcessor.from_pretrained(folder)
            except (OSError, ValueError, KeyError, ImportError) as e:
                raise ModelLoadError(f"{folder}: cannot load its image processor ({e})") from e
        elif model_type != "clip":
            raise ModelLoadError(f"{folder}: no image processor config ({' or '.join(PROCESSOR_FILES)})")
        if model_type == "siglip2":
            return self._init_naflex(folder, ip)
        vision_size = int(config.vision_config.image_size)
        if ip is None:  # OpenAI CLIP preprocessing at the vision tower's resolution
            self.shortest_edge, self.size_hw = vision_size, None
            self.crop_hw = (vision_size, vision_size)
            self.interpolation, self.rescale = "bicubic", 1 / 255
            self.mean, self.std = _OPENAI_CLIP_MEAN, _OPENAI_CLIP_STD
        else:
            size = _as_dict(getattr(ip, "size", None)) if getattr(ip, "do_resize", True) else {}
            self.shortest_edge = size.get("shortest_edge")
            self.size_hw = (size["height"], size["width"]) if size.get("height") else None
            crop = _as_dict(getattr(ip, "crop_size", None)) if getattr(ip, "do_center_crop", False) else {}
            self.crop_hw = (crop["height"], crop["width"]) if crop.get("height") else None
            self.interpolation = _RESAMPLE.get(int(getattr(ip, "resample", 3) or 3), "bicubic")
            self.rescale = float(ip.rescale_factor) if getattr(ip, "do_rescale", True) else 1.0
            if getattr(ip, "do_normalize", True):
                self.mean, self.std = tuple(ip.image_mean), tuple(ip.image_std)
            else:
                self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        self.image_size = int(self.shortest_edge or (min(self.size_hw) if self.size_hw else vision_size))

    def _init_naflex(self, folder, ip) -> None:
        """SigLIP 2 NaFlex: patchify with the checkpoint's own image processor, which takes the
        batched uint8 tensor as is (transformers' torchvision backend; no PIL)."""
        if ip is None or not hasattr(ip, "max_num_patches"):
            raise ModelLoadError(f"{folder}: SigLIP 2 NaFlex needs its image processor config")
        self.image_processor = ip
        self.naflex = (int(ip.max_num_patches), int(ip.patch_size))
        self.shortest_edge = self.size_hw = self.crop_hw = None
        self.interpolation = _RESAMPLE.get(int(getattr(ip, "resample", 2) or 2), "bilinear")
        self.rescale = float(ip.rescale_factor) if getattr(ip, "do_rescale", True) else 1.0
        self.mean, self.std = tuple(ip.image_mean), tuple(ip.image_std)
        # the square side holding max_num_patches patches: what a decoder should aim for
        self.image_size = int(round(self.naflex[1] * self.naflex[0] ** 0.5))

    @property
    def preprocessing(self) -> str:
        f = lambda v: ",".join(f"{x:.4g}" for x in v)  # noqa: E731
        if self.naflex:
            return "naflex{}p{}-{}-mean{}-std{}".format(*self.naflex, self.interpolation, f(self.mean), f(self.std))
        r = "short{}".format(self.shortest_edge) if self.shortest_edge else \
            "resize{}x{}".format(*self.size_hw) if self.size_hw else "noresize"
        c = "-crop{}x{}".format(*self.crop_hw) if self.crop_hw else ""
        return f"{r}{c}-{self.interpolation}-mean{f(self.mean)}-std{f(self.std)}"

    def preprocess(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 N×H×W×3 -> the image tower's inputs (pixel_values N×3×h×w in the model's dtype,
        plus the patch mask and grid shapes for NaFlex), on the model's device."""
        x = to_tensor(frames, self.device)
        if self.naflex:
            out = self.image_processor(images=x, return_tensors="pt")
            return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                    for k, v in out.items()}
        x = resize_crop(x, shortest_edge=self.shortest_edge, size_hw=self.size_hw, crop_hw=self.crop_hw,
                        interpolation=self.interpolation)
        return {"pixel_values": normalize(x, self.mean, self.std, self.rescale, dtype=self.dtype)}

    def _load_tokenizer(self, folder, model_type, AutoTokenizer):
        # transformers 5 builds an empty tokenizer from config.json alone: require real files
        if any((folder / f).is_file() for f in TOKENIZER_FILES):
            try:
                return AutoTokenizer.from_pretrained(folder), ""
            except (OSError, ValueError, KeyError, ImportError) as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ModelLoadError(f"{folder}: cannot load its tokenizer ({first})") from e
        if model_type != "clip":
            raise ModelLoadError(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        try:  # a bare CLIP checkpoint (TSPO-0.4B): the ViT-L/14 tokenizer, if cached or reachable
            cached = hub.local_files_only(_FALLBACK_CLIP_TOKENIZER, what="a CLIP")
            tok = AutoTokenizer.from_pretrained(_FALLBACK_CLIP_TOKENIZER, local_files_only=cached)
            return tok, f":tok={_FALLBACK_CLIP_TOKENIZER}"
        except (ModelLoadError, OSError, ValueError) as e:
            cause = str(e) if isinstance(e, ModelLoadError) else f"{_FALLBACK_CLIP_TOKENIZER}'s tokenizer is not cached"
            raise ModelLoadError(f"{folder}: no tokenizer files, and {cause}") from e

    # --- encoding ----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        out = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(frames), self.batch_size):
            inputs = self.preprocess(frames[i:i + self.batch_size])
            out.append(_embedding(self.model.get_image_features(**inputs)))
        return np.concatenate(out)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding=self.text_padding,
                                 truncation=True, max_length=self.max_length, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            out.append(_embedding(self.model.get_text_features(**inputs)))
        return np.concatenate(out)


def _as_dict(size) -> dict:
    if size is None:
        return {}
    if isinstance(size, int):
        return {"height": size, "width": size}
    items = size.items() if hasattr(size, "items") else vars(size).items()
    return {k: v for k, v in items if v is not None}


def _embedding(out) -> np.ndarray:
    """transformers < 5 returns the projected tensor; 5 returns an output whose pooler_output it is."""
    return pooled(out).float().cpu().numpy()
