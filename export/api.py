"""`tspo-edge export`: agent (+ encoder towers) -> ONNX (+ TensorRT engines) and DIR/manifest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .agent_export import export_agent
from .manifest import MANIFEST, file_entry, write_manifest
from .towers import TOKENIZER_DIR, ExportError, export_encoder

MIN_OPSET = 17


def export_model(ckpt, out_dir, *, encoder="lite", fp16: bool = False, tensorrt: bool = False,
                 opset: int = 17, heads: int = 8, window: int = 12,
                 log: Callable[[str], None] = lambda msg: None) -> dict:
    """Export the agent from `ckpt` (any load_agent source or a TemporalAgent) and, unless encoder
    is None/"none", the encoder's image and text towers (`encoder`: a load_encoder spec or an
    already loaded lite/HF encoder). Returns the manifest written to out_dir/manifest.json."""
    from tspo_edge.agent import load_agent

    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: needs {MIN_OPSET} or newer")
    if tensorrt:
        from .tensorrt_build import require_tensorrt

        require_tensorrt()  # fail before minutes of export work
    out = Path(out_dir)
    agent = ckpt if isinstance(ckpt, torch.nn.Module) else load_agent(ckpt, heads=heads, window=window)
    enc, spec = None, None
    if isinstance(encoder, str) and encoder.strip().lower() not in ("", "none"):
        from tspo_edge.encoders import load_encoder

        log(f"loading encoder {encoder}")
        enc, spec = load_encoder(encoder), encoder
    elif encoder is not None and not isinstance(encoder, str):
        enc = encoder
        spec = "lite" if type(enc).__name__ == "LiteEncoder" else str(getattr(enc, "spec", enc.id))
    if enc is not None:
        if enc.dim != agent.dim:
            raise ExportError(f"{getattr(agent, 'source', ckpt)}: agent width {agent.dim} does not match encoder {enc.id} width {enc.dim}")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-written folder must not look complete
    log(f"exporting agent {agent.id} -> {out / 'agent.onnx'}")
    agent_section = export_agent(agent, out, opset=opset, fp16=fp16)
    models = {"agent": file_entry(out, "agent.onnx")}
    files, enc_section = {}, None
    if enc is not None:
        log(f"exporting encoder {enc.id} -> {out / 'image.onnx'}, {out / 'text.onnx'}")
        enc_section = {"spec": spec, **export_encoder(enc, out, opset=opset, fp16=fp16)}
        models["image"], models["text"] = file_entry(out, "image.onnx"), file_entry(out, "text.onnx")
        files = {rel: file_entry(out, rel) for rel in
                 sorted(p.relative_to(out).as_posix() for p in (out / TOKENIZER_DIR).rglob("*") if p.is_file())}
    trt_section = None
    if tensorrt:
        from .tensorrt_build import build_engines

        log("building TensorRT engines (fp16)")
        trt_section = build_engines(out, models, agent_section, enc_section)
        for part, eng in trt_section["engines"].items():
            eng.update(file_entry(out, eng["file"]))
    return write_manifest(out, models=models, agent=agent_section, encoder=enc_section, opset=opset,
                          precision="fp16" if fp16 else "fp32", files=files, tensorrt=trt_section)
