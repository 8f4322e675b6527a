"""Writing models for edge runtimes: the agent and an encoder's towers to ONNX (and TensorRT
engines), with DIR/manifest.json. The sessions that run an export are the library's
(tspo_edge.models.encoders.onnx, tspo_edge.models.agent_onnx), chosen by tspo_edge.models.load_models."""

from tspo_edge.export.api import export_model

__all__ = ["export_model"]
