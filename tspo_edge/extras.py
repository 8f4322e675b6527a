"""The two halves of the install: the light base runs an export folder's ONNX models; the
[torch] extra brings torch models (the lite profile, Hugging Face encoders and MLLMs, torch
agents), export, training and evaluation. Where a part of it is missing, one clear line says so
before anything imports it."""

from __future__ import annotations

import importlib.util

from tspo_edge.errors import MissingExtraError

TORCH_EXTRA = "pip install 'tspo-edge[torch]'"


def require_torch(what: str, modules: tuple[str, ...] = ("torch",)) -> None:
    """Raise MissingExtraError naming `what` when any of `modules` (top-level names) is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{what} needs the [torch] extra, which this install leaves out (missing: {', '.join(missing)}; "
            f"the light install runs the ONNX models of a `tspo-edge export` folder): {TORCH_EXTRA}")
