"""DIR/manifest.json: what an export holds, which agent and encoder it came from, and file hashes.

The runtime refuses a folder whose manifest does not match what it is asked to run
(another agent or encoder id, a missing file, a changed hash), with the reason.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tspo_edge.errors import TspoError

MANIFEST = "manifest.json"
FORMAT = "tspo-edge-export"
FORMAT_VERSION = 1


class ManifestError(TspoError):
    """An export folder is missing, incomplete, altered, or made from another agent/encoder."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of the tools that made (or run) the export."""
    import onnx
    import onnxruntime
    import torch

    import tspo_edge

    return {"tspo_edge": tspo_edge.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


def io_spec(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Names, element types and shapes (symbolic dims as strings) of a model's inputs and outputs."""
    import onnx

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


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (not a `tspo-edge export` folder)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
    return manifest


def verify_files(model_dir: Path, entries: dict[str, dict]) -> None:
    """Every listed file exists and has the hash recorded at export time."""
    for entry in entries.values():
        path = Path(model_dir) / entry["file"]
        if not path.is_file():
            raise ManifestError(f"{path}: listed in {MANIFEST} but missing")
        if sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{path}: sha256 differs from {MANIFEST} (file changed after export)")


def check_id(model_dir: Path, manifest: dict, part: str, want: str | None) -> dict:
    """The manifest's `agent`/`encoder` section, refusing a missing one or another id than `want`."""
    section = manifest.get(part)
    where = Path(model_dir) / MANIFEST
    if not section:
        raise ManifestError(f"{where}: the export holds no {part}")
    if want is not None and section["id"] != want:
        raise ManifestError(f"{where}: {part} id {section['id']!r} does not match the requested {want!r}")
    return section
