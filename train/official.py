"""The official TSPO-0.4B layout: a CLIP ViT-L/14 checkpoint with the agent as `selector.*`.

The paper's evaluation code loads `TSPOModel.from_pretrained(folder)` (a CLIPModel subclass
with a `selector` submodule), so the folder holds CLIP's config and processor files and one
model.safetensors with CLIP's tensors plus the agent's under `selector.`.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import snapshot_download
from safetensors.torch import save_file

from tspo_edge.models.agent import OFFICIAL_PREFIX
from tspo_edge.errors import CheckpointError


def clip_folder(spec: str) -> Path | None:
    """The local folder of a CLIP checkpoint given as a folder or a cached hub id (no download)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    try:
        return Path(snapshot_download(spec.split("@")[0], revision=spec.split("@")[1] if "@" in spec else None,
                                      local_files_only=True))
    except Exception:
        return None


def is_clip_vit_l14(folder: Path | None) -> bool:
    """CLIP with a ViT-L/14 image tower (24 layers of width 1024, 14-px patches, 768-d projections)."""
    if folder is None or not (folder / "config.json").is_file():
        return False
    cfg = json.loads((folder / "config.json").read_text())
    v = cfg.get("vision_config") or {}
    return (cfg.get("model_type") == "clip" and v.get("patch_size") == 14 and v.get("hidden_size") == 1024
            and v.get("num_hidden_layers", 24) == 24 and cfg.get("projection_dim") == 768)


def save_official(agent, clip_dir: str | Path, out_dir: str | Path) -> Path:
    """Write CLIP (from `clip_dir`) + `selector.*` (the agent) as one checkpoint folder."""
    # optional: transformers (the [torch] extra); `train` checks only torch, accelerate and skvideo first
    from transformers import CLIPModel, CLIPProcessor

    clip_dir, out = Path(clip_dir), Path(out_dir)
    clip = CLIPModel.from_pretrained(str(clip_dir))
    if clip.config.projection_dim != agent.dim:
        raise CheckpointError(f"{clip_dir}: CLIP projects to {clip.config.projection_dim} dims, "
                              f"the agent is {agent.dim} wide")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in clip.state_dict().items()}
    tensors.update({OFFICIAL_PREFIX + k: v.detach().float().cpu().contiguous()
                    for k, v in agent.state_dict().items()})
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = clip.config.to_dict()
    cfg["architectures"] = ["TSPOModel"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    try:
        CLIPProcessor.from_pretrained(str(clip_dir)).save_pretrained(str(out))
    except Exception:  # a weights-only folder: the evaluation code then needs its own processor
        pass
    return out
