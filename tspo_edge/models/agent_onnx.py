"""The ONNX Runtime backend of the agent: DIR/agent.onnx's event encoder, NumPy in and out.

It stands in for `TemporalAgent` wherever events are computed (index, ask); its `id` is the
torch agent's, recorded in the manifest at export time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tspo_edge.errors import ManifestError, TspoError
from tspo_edge.models.manifest import MANIFEST, check_id, read_manifest, verify_files
from tspo_edge.models.onnx_session import make_session

DEFAULT_MAX_FRAMES = 50_000


class OnnxAgent:
    """The agent's event encoder from DIR/agent.onnx; `events(x)` takes and returns NumPy."""

    def __init__(self, model_dir, *, agent_id: str | None = None, providers: Sequence[str] | None = None,
                 threads: int | None = None, quiet: bool = False) -> None:
        self.model_dir = Path(model_dir)
        manifest = read_manifest(self.model_dir)
        section = check_id(self.model_dir, manifest, "agent", agent_id)
        entry = manifest["models"].get("agent")
        if entry is None:
            raise ManifestError(f"{self.model_dir / MANIFEST}: no agent model listed")
        verify_files(self.model_dir, {"agent": entry})
        self.id: str = section["id"]
        self.dim, self.heads, self.window = int(section["dim"]), int(section["heads"]), int(section["window"])
        self.session = make_session(self.model_dir / entry["file"], self.model_dir, providers=providers,
                                    fp16=manifest["precision"] == "fp16", profile=section.get("profile"),
                                    threads=threads, quiet=quiet)
        self.provider = self.session.get_providers()[0]
        self.source = f"onnx:{self.model_dir}"
        self.max_frames = int(section.get("profile", {}).get("x", [[0], [0], [DEFAULT_MAX_FRAMES]])[2][0])

    def events(self, x) -> np.ndarray:
        """Event features z[T, D] (float32) of frame embeddings x[T, D]."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise TspoError(f"{self.model_dir}: agent expects x of shape [T, {self.dim}], got {x.shape}")
        if x.shape[0] == 0:
            return x.copy()
        if self.provider == "TensorrtExecutionProvider" and x.shape[0] > self.max_frames:
            raise TspoError(f"{self.model_dir}: {x.shape[0]} frames exceed the TensorRT profile's "
                            f"{self.max_frames}; index at most {self.max_frames} frames per video")
        return self.session.run(None, {"x": x})[0]
