"""Run an export folder with ONNX Runtime: `OnnxAgent` (events) and `OnnxEncoder` (the Encoder protocol).

Both check DIR/manifest.json first: files present with their recorded sha256, and the
agent / encoder id the caller expects. `load_runtime` gives the (encoder, agent) pair the
index, ask and train commands use for `--runtime torch|onnx --model-dir DIR`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tspo_edge.agent import TAU, score_frames
from tspo_edge.errors import TspoError

from .manifest import ManifestError, check_id, read_manifest, verify_files
from .providers import make_session

RUNTIMES = ("torch", "onnx")


class OnnxAgent:
    """The agent's event encoder from DIR/agent.onnx; `events(x)` takes and returns NumPy."""

    def __init__(self, model_dir, *, agent_id: str | None = None, providers: Sequence[str] | None = None,
                 quiet: bool = False) -> None:
        self.model_dir = Path(model_dir)
        manifest = read_manifest(self.model_dir)
        section = check_id(self.model_dir, manifest, "agent", agent_id)
        entry = manifest["models"].get("agent")
        if entry is None:
            raise ManifestError(f"{self.model_dir / 'manifest.json'}: no agent model listed")
        verify_files(self.model_dir, {"agent": entry})
        self.id: str = section["id"]
        self.dim, self.heads, self.window = int(section["dim"]), int(section["heads"]), int(section["window"])
        self.session = make_session(self.model_dir / entry["file"], self.model_dir, providers=providers,
                                    fp16=manifest["precision"] == "fp16", profile=section.get("profile"),
                                    quiet=quiet)
        self.provider = self.session.get_providers()[0]

    def events(self, x) -> np.ndarray:
        """Event features z[T, D] (float32) of frame embeddings x[T, D]."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise TspoError(f"{self.model_dir}: agent expects x of shape [T, {self.dim}], got {x.shape}")
        if x.shape[0] == 0:
            return x.copy()
        return self.session.run(None, {"x": x})[0]

    def scores(self, z, x, q, tau: float = TAU) -> np.ndarray:
        return score_frames(np.asarray(z), np.asarray(x), q, tau)
