"""torch -> ONNX with the TorchScript exporter, and fp32 -> fp16 conversion of a saved model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch

# torch.onnx's dynamo exporter needs onnxscript, which is not a dependency; the
# TorchScript exporter traces these models reliably with dynamic axes.
DYNAMO = False


def to_onnx(module: torch.nn.Module, args: tuple, path: Path, *, input_names: Sequence[str],
            output_names: Sequence[str], dynamic_axes: dict, opset: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter, not errors
        torch.onnx.export(module.eval(), args, str(path), dynamo=DYNAMO, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes,
                          opset_version=opset, do_constant_folding=True)
    return path


def fp16_converter():
    """(name, convert_float_to_float16) from onnxconverter-common if installed, else onnxruntime's copy."""
    try:
        from onnxconverter_common.float16 import convert_float_to_float16

        return "onnxconverter-common", convert_float_to_float16
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return "onnxruntime.transformers.float16", convert_float_to_float16


def convert_fp16(path: Path) -> str:
    """Rewrite the model at `path` with fp16 weights and math; inputs and outputs stay float32."""
    import onnx

    name, convert = fp16_converter()
    model = onnx.load(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert(model, keep_io_types=True)
    onnx.save(model, str(path))
    return name
