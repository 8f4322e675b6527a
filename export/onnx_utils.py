"""torch -> ONNX with the TorchScript exporter, and fp32 -> fp16 conversion of a saved model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import onnx
import torch

# torch.onnx's dynamo exporter needs onnxscript, which is not a dependency; the
# TorchScript exporter traces these models reliably with dynamic axes.
DYNAMO = False
IMAGE_ONNX, TEXT_ONNX = "image.onnx", "text.onnx"


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
        from onnxconverter_common.float16 import convert_float_to_float16  # optional: onnxconverter-common, when installed

        return "onnxconverter-common", convert_float_to_float16
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16  # optional: its fallback (onnxruntime's copy)

        return "onnxruntime.transformers.float16", convert_float_to_float16


def convert_fp16(path: Path) -> str:
    """Rewrite the model at `path` with fp16 weights and math; inputs and outputs stay float32."""
    name, convert = fp16_converter()
    model = onnx.load(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert(model, keep_io_types=True)
    onnx.save(model, str(path))
    return name


def export_pair(image_module, text_module, text_inputs: dict[str, torch.Tensor], size: int, out_dir: Path,
                 opset: int, fp16: bool) -> dict:
    pixels = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    axes = {"pixels": {0: "N"}, "embeddings": {0: "N"}}
    to_onnx(image_module, (pixels,), out_dir / IMAGE_ONNX, input_names=["pixels"], output_names=["embeddings"],
            dynamic_axes=axes, opset=opset)
    names = list(text_inputs)
    to_onnx(text_module, tuple(text_inputs.values()), out_dir / TEXT_ONNX, input_names=names,
            output_names=["embeddings"], opset=opset,
            dynamic_axes={**{n: {0: "B", 1: "L"} for n in names}, "embeddings": {0: "B"}})
    converter = None
    if fp16:
        converter = convert_fp16(out_dir / IMAGE_ONNX)
        convert_fp16(out_dir / TEXT_ONNX)
    return {"fp16_converter": converter, "text_inputs": names}
