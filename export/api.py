"""`tspo-edge export`: agent (+ encoder towers) -> ONNX (+ TensorRT engines) and DIR/manifest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tspo_edge.models.agent import load_agent
from tspo_edge.models.encoders.onnx import TOKENIZER_DIR
from tspo_edge.errors import ExportError
from tspo_edge.models.manifest import MANIFEST
from tspo_edge.models import Models

from tspo_edge.export.agent_export import export_agent
from tspo_edge.export.manifest import file_entry, write_manifest
from tspo_edge.export.tensorrt_build import build_engines, require_tensorrt
from tspo_edge.export.towers import export_encoder

MIN_OPSET = 17


def export_model(models: Models, out_dir, *, with_encoder: bool = True, fp16: bool = False,
                 tensorrt: bool = False, opset: int = 17, log: Callable[[str], None] = lambda msg: None) -> dict:
    """Export the agent of `models` (torch runtime) and, with `with_encoder`, the encoder's image
    and text towers. Returns the manifest written to out_dir/manifest.json."""
    if opset < MIN_OPSET:
        raise ExportError(f"ONNX opset {opset}: needs {MIN_OPSET} or newer")
    if models.spec.runtime != "torch":
        raise ExportError("exports are made from torch models (the onnx runtime runs them)")
    if tensorrt:
        require_tensorrt()  # fail before minutes of export work
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder (exports write a folder)")
    if with_encoder:
        log(f"loading encoder {models.spec.encoder_spec}")
    agent = models.agent if with_encoder else load_agent(models.spec.agent)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way, no permission, a full disk
        raise ExportError(f"{out}: cannot create the folder ({e.strerror or e})") from None
    (out / MANIFEST).unlink(missing_ok=True)  # a half-written folder must not look complete
    log(f"exporting agent {agent.id} -> {out / 'agent.onnx'}")
    agent_section = {**export_agent(agent, out, opset=opset, fp16=fp16),
                     "source": models.agent_spec or models.spec.agent}
    models_written = {"agent": file_entry(out, "agent.onnx")}
    files, enc_section = {}, None
    if with_encoder:
        enc = models.encoder
        log(f"exporting encoder {enc.id} -> {out / 'image.onnx'}, {out / 'text.onnx'}")
        enc_section = {"spec": models.spec.encoder_spec, **export_encoder(enc, out, opset=opset, fp16=fp16)}
        models_written["image"], models_written["text"] = file_entry(out, "image.onnx"), file_entry(out, "text.onnx")
        files = {rel: file_entry(out, rel) for rel in
                 sorted(p.relative_to(out).as_posix() for p in (out / TOKENIZER_DIR).rglob("*") if p.is_file())}
    trt_section = None
    if tensorrt:
        log("building TensorRT engines (fp16)")
        trt_section = build_engines(out, models_written, agent_section, enc_section)
        for part, eng in trt_section["engines"].items():
            eng.update(file_entry(out, eng["file"]))
    return write_manifest(out, models=models_written, agent=agent_section, encoder=enc_section, opset=opset,
                          precision="fp16" if fp16 else "fp32", files=files, tensorrt=trt_section)
