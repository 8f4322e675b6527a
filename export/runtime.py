"""Run an export folder with ONNX Runtime: `OnnxAgent` (events) and `OnnxEncoder` (the Encoder protocol).

Both check DIR/manifest.json first: files present with their recorded sha256, and the
agent / encoder id the caller expects. `load_runtime` gives the (encoder, agent) pair the
index, ask and train commands use for `--runtime torch|onnx --model-dir DIR`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tspo_edge.errors import TspoError

from .manifest import MANIFEST, ManifestError, check_id, read_manifest, verify_files
from .preprocess import pixels
from .providers import make_session

RUNTIMES = ("torch", "onnx")
# Nothing here imports torch: an ONNX runtime runs without it (only a frame resize borrows
# the torch encoder's code, see export.preprocess).


class OnnxAgent:
    """The agent's event encoder from DIR/agent.onnx; `events(x)` takes and returns NumPy."""

    def __init__(self, model_dir, *, agent_id: str | None = None, providers: Sequence[str] | None = None,
                 threads: int | None = None, quiet: bool = False) -> None:
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
                                    threads=threads, quiet=quiet)
        self.provider = self.session.get_providers()[0]
        self.source = f"onnx:{self.model_dir}"
        self.max_frames = int(section.get("profile", {}).get("x", [[0], [0], [50_000]])[2][0])

    def events(self, x) -> np.ndarray:
        """Event features z[T, D] (float32) of frame embeddings x[T, D]."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise TspoError(f"{self.model_dir}: agent expects x of shape [T, {self.dim}], got {x.shape}")
        if x.shape[0] == 0:
            return x.copy()
        if self.provider == "TensorrtExecutionProvider" and x.shape[0] > self.max_frames:
            raise TspoError(f"{self.model_dir}: {x.shape[0]} frames exceed the TensorRT profile's "
                            f"{self.max_frames}; index with --max-frames {self.max_frames}")
        return self.session.run(None, {"x": x})[0]

    def scores(self, z, x, q, tau: float | None = None) -> np.ndarray:
        """Ask-time logits in NumPy (tspo_edge.agent.score_frames; tau defaults to its TAU)."""
        from tspo_edge.agent import TAU, score_frames

        return score_frames(np.asarray(z), np.asarray(x), q, TAU if tau is None else tau)


class OnnxEncoder:
    """An exported encoder behind the Encoder protocol, with the torch encoder's `id`.

    Features match the torch encoder's (float32, within float tolerance), so an index built
    with one is read with the other. Sessions open on first use: `ask` only needs the text tower.
    """

    def __init__(self, model_dir, *, encoder_id: str | None = None, providers: Sequence[str] | None = None,
                 batch_size: int = 32, threads: int | None = None, quiet: bool = False) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.section = check_id(self.model_dir, self.manifest, "encoder", encoder_id)
        models = self.manifest["models"]
        for part in ("image", "text"):
            if part not in models:
                raise ManifestError(f"{self.model_dir / MANIFEST}: no {part} tower listed")
        verify_files(self.model_dir, {"image": models["image"], "text": models["text"], **self.manifest["files"]})
        self.id: str = self.section["id"]
        self.dim, self.image_size = int(self.section["dim"]), int(self.section["image_size"])
        # TensorRT profiles cover batches up to 64 (export.towers.MAX_IMAGE_BATCH)
        self.batch_size = max(1, min(int(batch_size), 64))
        self.providers, self.threads, self.quiet = providers, threads, quiet
        self.source = f"onnx:{self.model_dir}"
        self._sessions: dict = {}
        self._tokenizer = None

    def session(self, part: str):
        if part not in self._sessions:
            profile = self.section.get("profile", {}).get(part)
            self._sessions[part] = make_session(
                self.model_dir / self.manifest["models"][part]["file"], self.model_dir, providers=self.providers,
                fp16=self.manifest["precision"] == "fp16", profile=profile, threads=self.threads,
                quiet=self.quiet)
        return self._sessions[part]

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        out = [self.session("image").run(None, {"pixels": pixels(frames[i:i + self.batch_size], self.section["image"])})[0]
               for i in range(0, len(frames), self.batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir / "tokenizer"), local_files_only=True)
        out = []
        for i in range(0, len(texts), self.batch_size):  # batches as the torch encoders make them
            tok = self._tokenizer(list(texts[i:i + self.batch_size]), return_tensors="np", **self.section["tokenizer"])
            feeds = {name: np.asarray(tok[name], dtype=np.int64) for name in self.section["text_inputs"]}
            out.append(self.session("text").run(None, feeds)[0])
        return np.concatenate(out).astype(np.float32, copy=False)


def _agent_id(agent_spec) -> str:
    """The id a torch agent spec stands for ('tspo-agent:...' ids are taken as they are)."""
    if isinstance(agent_spec, str) and agent_spec.startswith("tspo-agent:"):
        return agent_spec
    from tspo_edge.agent import load_agent

    return load_agent(agent_spec).id


def _encoder_id(model_dir: Path, manifest: dict, encoder_spec: str) -> str | None:
    """The encoder id `encoder_spec` must have in this export, or None when the spec is the export's own."""
    section = manifest.get("encoder") or {}
    if encoder_spec == section.get("spec"):
        return None
    if encoder_spec.strip().lower() == "lite":
        from tspo_edge.encoders.lite import LITE_ID

        return LITE_ID
    raise ManifestError(f"{model_dir / MANIFEST}: exported from encoder {section.get('spec')!r} "
                        f"(id {section.get('id')!r}), not {encoder_spec!r}; omit --encoder or re-export")


def load_runtime(runtime: str, model_dir=None, encoder_spec: str | None = None, agent_spec=None,
                 *, providers: Sequence[str] | None = None, quiet: bool = False):
    """(encoder, agent) for `--runtime torch|onnx --model-dir DIR`.

    torch: load_encoder(encoder_spec or "lite") and load_agent(agent_spec), or None for the
    agent when no spec is given (the caller's default applies). onnx: the export in model_dir;
    a given encoder/agent spec must name what was exported, else ManifestError says why.
    """
    if runtime == "torch":
        from tspo_edge.agent import load_agent
        from tspo_edge.encoders import load_encoder

        encoder = load_encoder(encoder_spec or "lite")
        return encoder, (load_agent(agent_spec) if agent_spec is not None else None)
    if runtime != "onnx":
        raise TspoError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if model_dir is None:
        raise TspoError("--runtime onnx needs --model-dir DIR (a folder written by `tspo-edge export`)")
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    encoder_id = _encoder_id(model_dir, manifest, encoder_spec) if encoder_spec else None
    encoder = OnnxEncoder(model_dir, encoder_id=encoder_id, providers=providers, quiet=quiet)
    agent = OnnxAgent(model_dir, agent_id=_agent_id(agent_spec) if agent_spec is not None else None,
                      providers=providers, quiet=quiet)
    return encoder, agent
