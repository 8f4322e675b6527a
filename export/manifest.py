"""Writing DIR/manifest.json (the format and its checks: tspo_edge.models.manifest)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

import tspo_edge
from tspo_edge.models.manifest import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file


def versions() -> dict[str, str]:
    """Versions of the tools that made the export."""
    return {"tspo_edge": tspo_edge.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


def io_spec(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Names, element types and shapes (symbolic dims as strings) of a model's inputs and outputs."""
    model = onnx.load(str(path), load_external_data=False)

    def spec(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                        "shape": dims})
        return out

    return {"inputs": spec(model.graph.input), "outputs": spec(model.graph.output)}


def file_entry(out_dir: Path, rel: str, **extra: Any) -> dict[str, Any]:
    """A manifest entry for one file of the export: its hash, and its I/O if it is an ONNX model."""
    path = out_dir / rel
    entry: dict[str, Any] = {"file": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    if rel.endswith(".onnx"):
        entry.update(io_spec(path))
    entry.update(extra)
    return entry


def write_manifest(out_dir: Path, *, models: dict[str, dict], agent: dict | None, encoder: dict | None,
                   opset: int, precision: str, files: dict[str, dict] | None = None,
                   tensorrt: dict | None = None) -> dict[str, Any]:
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(), "opset": opset, "precision": precision,
        "agent": agent, "encoder": encoder, "models": models, "files": files or {},
        "tensorrt": tensorrt,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def manifest_lines(manifest: dict, out_dir: str | Path) -> list[str]:
    """What `tspo-edge export` prints of what it wrote: each ONNX file with its size and input
    shapes, each TensorRT engine, the agent, the manifest."""
    out_dir = Path(out_dir)
    lines = []
    for part, entry in manifest["models"].items():
        shapes = ", ".join(f"{v['name']}{v['shape']}" for v in entry["inputs"])
        lines.append(f"{part:6s} {out_dir / entry['file']}  ({entry['bytes'] / 1e6:.1f} MB; {shapes})")
    for part, eng in ((manifest.get("tensorrt") or {}).get("engines") or {}).items():
        lines.append(f"{part:6s} {out_dir / eng['file']}  (TensorRT, {eng['bytes'] / 1e6:.1f} MB)")
    return [*lines, f"agent  {manifest['agent']['id']} ({manifest['agent'].get('source')})",
            f"manifest {out_dir / 'manifest.json'}"]
