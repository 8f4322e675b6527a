"""Which models run: a spec (strings, as a user gives them) becomes models here, and only here.

    ModelSpec(encoder="./TSPO-0.4B")  ->  load_models(spec)  ->  Models(.encoder, .agent)

Every command (index, ask, train, eval, export, serve) and every library entry point goes
through `load_models`, so the same flags give the same models everywhere. Models load on
first use: an ask of an indexed video needs the text encoder, not the agent.

Runtimes: "torch"; "onnx" (an export folder, `model_dir`); "auto": the export folder of the
per-user ONNX cache (tspo_edge.models.onnx_cache) when it holds this encoder, loaded as `model_dir`
is, else torch (the command line then writes the cache, see export.cache). Features, ids and
agents are the same on every runtime, so an index is shared between them.

The default agent, decided from what the user gave (never guessed from an object):
  1. `agent` given: that checkpoint (or, with the ONNX runtime, it must be the exported one);
  2. the encoder is a TSPO-0.4B folder (a CLIP checkpoint plus `selector.*` tensors): its selector;
  3. ONNX runtime: the agent in the export folder (auto: the cached export of rule 2 or 4);
  4. otherwise the similarity-initialised agent of the encoder's width (it ranks frames by
     cos(x, q) until trained).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from safetensors import safe_open, SafetensorError

from tspo_edge.models.encoders import LITE_ID, Encoder, load_encoder
from tspo_edge.errors import IndexMismatchError, InputError, ManifestError, first_line
from tspo_edge.extras import require_torch
from tspo_edge.models.manifest import MANIFEST, read_manifest
from tspo_edge.models.onnx_cache import CacheLookup, lookup

RUNTIMES = ("torch", "onnx", "auto")
LITE = "lite"
OFFICIAL_PREFIX = "selector."  # TSPO-0.4B: a CLIP ViT-L/14 checkpoint whose agent tensors carry this prefix


class Agent(Protocol):
    """The temporal agent's index-time half; TemporalAgent (torch) and OnnxAgent both are one."""
    id: str
    dim: int
    source: str

    def events(self, x: np.ndarray) -> np.ndarray: ...   # x [T, D] -> z [T, D]


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for, as strings. `encoder=None`: lite (torch, auto) or the export's (onnx)."""
    encoder: str | None = None
    agent: str | None = None
    runtime: str = "torch"
    model_dir: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("encoder", "agent", "model_dir"):
            value = getattr(self, name)
            if value is not None:
                value = str(value).strip()
                object.__setattr__(self, name, value or None)
        if self.runtime not in RUNTIMES:
            raise InputError(f"runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if self.runtime == "onnx" and self.model_dir is None:
            raise InputError("the onnx runtime needs the folder written by `tspo-edge export`")
        if self.runtime != "onnx" and self.model_dir is not None:
            raise InputError(f"{self.model_dir}: an export folder runs with the onnx runtime, not {self.runtime}")

    @classmethod
    def from_options(cls, encoder: str | None = None, agent: str | None = None, runtime: str | None = None,
                     model_dir: str | Path | None = None, device: str | None = None, *,
                     default: str = "torch") -> "ModelSpec":
        """A command's --encoder/--agent/--runtime/--model-dir/--device as a spec, checked before
        anything loads (InputError naming the option). The runtime when none is given: onnx with
        --model-dir, else $TSPO_EDGE_RUNTIME, else `default`."""
        runtime = runtime or ("onnx" if model_dir is not None else default_runtime(default))
        if runtime not in RUNTIMES:
            raise InputError(f"--runtime {runtime}: choose {', '.join(RUNTIMES)}")
        if runtime == "onnx" and model_dir is None:
            raise InputError("--runtime onnx needs --model-dir DIR (a folder written by `tspo-edge export`)")
        if runtime != "onnx" and model_dir is not None:
            raise InputError(f"--model-dir runs with --runtime onnx, not {runtime}")
        if model_dir is not None and not Path(model_dir).is_dir():
            raise InputError(f"{model_dir}: --model-dir is not a folder")
        if device is not None and not re.fullmatch(r"cpu|mps|auto|(cuda|xpu)(:\d+)?", device):
            raise InputError(f"--device {device}: expected cpu, cuda, cuda:N or mps")
        return cls(encoder=encoder, agent=agent, runtime=runtime,
                   model_dir=str(model_dir) if model_dir else None, device=device)

    @property
    def encoder_spec(self) -> str:
        """The encoder as the torch runtime loads it: 'lite', a hub id, or an absolute folder."""
        spec = self.encoder or LITE
        if spec.lower() == LITE:
            return LITE
        if spec.startswith("hf:"):
            spec = spec[3:]
        path = Path(spec).expanduser()
        return str(path.resolve()) if path.exists() else spec


def default_runtime(default: str) -> str:
    """$TSPO_EDGE_RUNTIME (torch or auto) when set, else `default` (the command's)."""
    value = os.environ.get("TSPO_EDGE_RUNTIME", "").strip()
    if value and value not in ("torch", "auto"):
        raise InputError(f"$TSPO_EDGE_RUNTIME={value}: choose torch or auto")
    return value or default


def has_official_selector(folder: Path) -> bool:
    """Whether a folder holds TSPO-0.4B's `selector.*` tensors (a look at safetensors headers;
    a folder of .bin weights only is handed to the agent loader, which decides)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return any(folder.glob("*.bin"))
    for f in files:
        try:
            with safe_open(str(f), framework="numpy") as st:
                if any(k.startswith(OFFICIAL_PREFIX) for k in st.keys()):
                    return True
        except (SafetensorError, OSError, ValueError):  # a broken file is the loaders' business
            continue
    return False


@dataclass
class Models:
    """The encoder and the agent for one spec, each loaded on first use."""
    spec: ModelSpec
    _encoder: Any = field(default=None, repr=False)
    _agent: Any = field(default=None, repr=False)
    _agent_id: str | None = field(default=None, repr=False)
    agent_source: str = ""           # which agent, and why (printed and recorded in the index)
    agent_spec: str | None = None    # the chosen agent as load_agent takes it (None: ONNX-only)
    _manifest: dict | None = field(default=None, repr=False)
    _cache: CacheLookup | None = field(default=None, repr=False)
    _from_cache: bool = field(default=False, repr=False)

    @property
    def loaded(self) -> bool:
        """Whether the encoder or the agent has been loaded (a run that skipped every file loads neither)."""
        return self._encoder is not None or self._agent is not None

    # ---- encoder ------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self._load_encoder()
        return self._encoder

    def _load_encoder(self) -> Encoder:
        s = self.spec
        if s.runtime == "auto" and self.cache.hit:
            from tspo_edge.models.encoders.onnx import OnnxEncoder  # deferred: onnxruntime + tokenizers, ~40 ms (measured) a torch-route command does not need

            try:  # as --model-dir loads it; the text tower every ask needs opens (and is checked) now
                enc = OnnxEncoder(self.cache.dir)
                enc.session("text")
                self._from_cache = True
                return enc
            except (ManifestError, OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
                # onnxruntime's load errors are RuntimeErrors; a malformed manifest, Key/TypeErrors
                self._cache = self.cache.damaged(first_line(e))
        if s.runtime != "onnx":
            enc = load_encoder(s.encoder_spec, device=s.device)
            enc.source = s.encoder_spec
            return enc
        from tspo_edge.models.encoders.onnx import OnnxEncoder  # deferred: onnxruntime + tokenizers, ~40 ms (measured)

        return OnnxEncoder(s.model_dir, encoder_id=self._expected_encoder_id())

    @property
    def cache(self) -> CacheLookup:
        """The ONNX cache entry of this spec's encoder (looked up once; see tspo_edge.models.onnx_cache)."""
        if self._cache is None:
            self._cache = lookup(self.spec.encoder_spec)
        return self._cache

    @property
    def from_cache(self) -> bool:
        """Whether the encoder was loaded from the ONNX cache (auto runtime)."""
        return self._from_cache and self._encoder is not None

    def cache_to_write(self) -> CacheLookup | None:
        """The cache entry this process should write: it loaded the encoder, and the cache has no
        usable entry for it (none, stale, or found damaged while loading); None otherwise
        (nothing loaded, the ONNX runtime, a whole entry)."""
        if self.spec.runtime == "onnx" or self._encoder is None or (self.from_cache and self.cache.hit):
            return None
        if self.cache.state == "unkeyed":  # a hub id is local now that it has loaded
            self._cache = lookup(self.spec.encoder_spec)
        return None if self.cache.hit or self.cache.state == "unkeyed" else self.cache

    def cache_wanted(self, runtime_given: bool = False) -> bool:
        """Whether a command should write the per-user ONNX cache now (`cache_to_write`), unless
        the user chose a runtime other than auto (`runtime_given`: a flag; or $TSPO_EDGE_RUNTIME)."""
        chosen = runtime_given or bool(os.environ.get("TSPO_EDGE_RUNTIME", "").strip())
        return not (chosen and self.spec.runtime != "auto") and self.cache_to_write() is not None

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = read_manifest(Path(self.spec.model_dir))
        return self._manifest

    def _expected_encoder_id(self) -> str | None:
        """With the ONNX runtime, a given encoder must be the exported one; None: take the export's."""
        given = self.spec.encoder
        section = self.manifest.get("encoder") or {}
        if given is None or given in (section.get("spec"), section.get("source")):
            return None
        if given.lower() == LITE:
    
            return LITE_ID
        where = Path(self.spec.model_dir) / MANIFEST
        raise ManifestError(f"{where}: exported from encoder {section.get('spec')!r} (id {section.get('id')!r}), "
                            f"not {given!r}")

    # ---- agent --------------------------------------------------------------------------
    @property
    def agent(self) -> Agent:
        if self._agent is None:
            self._agent, self.agent_source = self._resolve_agent()
            if self._agent.dim != self.encoder.dim:
                raise IndexMismatchError(f"{self._agent.source}: agent width {self._agent.dim} does not match "
                                         f"encoder {self.encoder.id} width {self.encoder.dim}")
        return self._agent

    @property
    def agent_id(self) -> str:
        """The agent's id (a hash of its weights, computed once)."""
        if self._agent_id is None:
            self._agent_id = self.agent.id
        return self._agent_id

    def _resolve_agent(self) -> tuple[Agent, str]:
        s = self.spec
        if s.runtime == "auto":
            self.agent_spec, why = self._default_agent_spec()
            if self.from_cache and s.agent is None:  # the cached export holds this default agent
                from tspo_edge.models.agent_onnx import OnnxAgent  # deferred: onnxruntime, ~40 ms (measured) a torch-route command does not need

                try:
                    return OnnxAgent(self.cache.dir), f"{why} (ONNX cache)"
                except (ManifestError, OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
                    # the torch agent gives the same events
                    self._cache = self.cache.damaged(first_line(e))
            return self._torch_agent(self.agent_spec), why
        if s.runtime == "onnx":
            from tspo_edge.models.agent_onnx import OnnxAgent  # deferred: onnxruntime, ~40 ms (measured) a torch-route command does not need

            section = self.manifest.get("agent") or {}
            self.agent_spec = s.agent or section.get("source")
            agent = OnnxAgent(s.model_dir, agent_id=None if s.agent is None else self._torch_agent(s.agent).id)
            return agent, f"exported agent from {s.model_dir}" + (f" ({self.agent_spec})" if self.agent_spec else "")
        self.agent_spec, why = self._default_agent_spec()
        return self._torch_agent(self.agent_spec), why

    def _default_agent_spec(self) -> tuple[str, str]:
        """(load_agent spec, why) for the torch runtime: the rules in this module's docstring."""
        s = self.spec
        if s.agent is not None:
            return s.agent, s.agent
        enc = s.encoder_spec
        if Path(enc).is_dir() and has_official_selector(Path(enc)):
            return enc, f"TSPO-0.4B selector from {enc}"
        dim = self.encoder.dim
        return (f"similarity:{dim}",
                f"similarity:{dim} (untrained, similarity-initialised; no trained agent for this encoder)")

    @staticmethod
    def _torch_agent(spec: str):
        require_torch(f"the agent {spec}")
        from tspo_edge.models.agent import load_agent  # optional: the [torch] extra (a torch agent)

        return load_agent(spec)

    def trainable_agent(self):
        """A torch TemporalAgent to train: the agent itself, or with the ONNX runtime the checkpoint
        the export was made from (checked against the exported id), else the similarity agent."""
        if self.spec.runtime == "torch":
            return self.agent
        if self.spec.runtime == "auto":
            agent = self.agent
            return agent if not agent.source.startswith("onnx:") else self._torch_agent(self.agent_spec)
        exported = self.agent.id
        if self.agent_spec is None:
            return self._torch_agent(f"similarity:{self.encoder.dim}")
        agent = self._torch_agent(self.agent_spec)
        if agent.id != exported:
            raise ManifestError(f"{Path(self.spec.model_dir) / MANIFEST}: exported agent {exported} is not "
                                f"{self.agent_spec} ({agent.id}); re-export it")
        return agent

    def with_agent(self, agent: str | None) -> "Models":
        """The same encoder (already loaded, shared) with another agent spec."""
        if agent == self.spec.agent:
            return self
        return Models(replace(self.spec, agent=agent), _encoder=self._encoder, _manifest=self._manifest,
                      _cache=self._cache, _from_cache=self._from_cache)


def load_models(spec: ModelSpec | None = None, *, loaded_encoder: Encoder | None = None, **kw) -> Models:
    """Models for a spec (or for ModelSpec(**kw)); nothing loads until it is used.

    `loaded_encoder`: the spec's encoder, already loaded (a long-running process that holds
    it); it must come from the same source, so every choice still follows the spec.
    """
    encoder = loaded_encoder
    if spec is None:
        spec = ModelSpec(**kw)
    elif kw:
        spec = replace(spec, **kw)
    if encoder is not None and spec.runtime == "torch" and getattr(encoder, "source", None) != spec.encoder_spec:
        raise ValueError(f"encoder loaded from {getattr(encoder, 'source', None)!r}, not {spec.encoder_spec!r}")
    return Models(spec, _encoder=encoder)
