"""Serialized TensorRT engines (fp16, dynamic-shape profiles) from the exported ONNX models.

Needs the `tensorrt` Python package and an NVIDIA GPU; without them `require_tensorrt`
raises a one-line TensorRTUnavailable before anything is exported.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tspo_edge.errors import TensorRTUnavailable, TspoError


def require_tensorrt():
    """The tensorrt module, or TensorRTUnavailable saying what is missing."""
    try:
        import tensorrt as trt  # optional: the [trt] extra
    except ImportError:
        raise TensorRTUnavailable("TensorRT engines: the tensorrt Python package is not installed "
                                  "(pip install tensorrt, on a machine with an NVIDIA GPU)") from None
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT engines: no CUDA GPU visible; engines are built on the GPU "
                                  "they will run on")
    return trt


def build_engine(onnx_path: Path, engine_path: Path, profile: dict[str, list[list[int]]], *,
                 fp16: bool = True, workspace_gb: float = 4.0) -> Path:
    """Parse `onnx_path`, build with one optimisation profile {input: [min, opt, max]}, serialize."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TspoError(f"{onnx_path}: TensorRT cannot parse the model ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.items():
        opt.set_shape(name, tuple(lo), tuple(mid), tuple(hi))
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TspoError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))
    return engine_path


def build_engines(out_dir: Path, models: dict[str, dict], agent: dict | None, encoder: dict | None) -> dict:
    """One engine per exported model: agent (T 1..50 000), image (batch 1..64), text (batch 1..64)."""
    trt = require_tensorrt()
    profiles = {}
    if agent and "agent" in models:
        profiles["agent"] = agent["profile"]
    if encoder and "image" in models:
        profiles["image"], profiles["text"] = encoder["profile"]["image"], encoder["profile"]["text"]
    engines = {}
    for part, profile in profiles.items():
        path = build_engine(out_dir / models[part]["file"], out_dir / f"{part}.engine", profile)
        engines[part] = {"file": path.name, "profile": profile}
    return {"tensorrt": trt.__version__, "device": torch.cuda.get_device_name(0), "precision": "fp16",
            "engines": engines}
