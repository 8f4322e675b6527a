"""ONNX / TensorRT export (`export.api.export_model`, `tspo-edge export`) and the ONNX Runtime
sessions that load an export folder (`export.runtime`: OnnxAgent, OnnxEncoder, load_runtime)."""

from .manifest import ManifestError
from .runtime import OnnxAgent, OnnxEncoder, load_runtime

__all__ = ["ManifestError", "OnnxAgent", "OnnxEncoder", "load_runtime"]
