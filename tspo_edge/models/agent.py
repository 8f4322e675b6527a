"""The TSPO temporal agent (the paper's event-aware selector), read top to bottom.

Given per-frame embeddings x[T, D] and a question embedding q[M, D]:

    e = x + PE                      sinusoidal over channels, position t / T
    a = WindowAttn(e)               multi-head, q/k/v projections, no output projection;
                                    frame j sees clamp(j - w//2 + k, 0, T-1), k < w
    z = MLP(a) + x                  event features: question-independent (index time)
    s = (cos(z, q) + cos(x, q)) / tau                                       (ask time)

The published implementation builds a dense T x T mask; here each frame attends to its
w clamped neighbours directly (a clamped duplicate counts once), so time and memory are
O(T * w) and a 3-hour video at 1 fps fits on a Jetson. The numbers are the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tspo_edge.errors import CheckpointError
from tspo_edge.scoring import EPS, TAU, score_frames


# Prefixes under which the selector's tensors are stored.
OFFICIAL_PREFIX = "selector."  # TSPO-0.4B release (a CLIP ViT-L/14 checkpoint + selector)
TRAINING_PREFIX = "multiModal_align."  # the paper's training checkpoints
AGENT_FILE = "agent.safetensors"
CONFIG_FILE = "agent.json"
FORMAT = "tspo-edge-agent"
FORMAT_VERSION = 1

# Tensor names after the prefix, with shapes as functions of the width D.
_SHAPES = {
    "temporal.Self_q.weight": lambda d: (d, d),
    "temporal.Self_q.bias": lambda d: (d,),
    "temporal.Self_k.weight": lambda d: (d, d),
    "temporal.Self_k.bias": lambda d: (d,),
    "temporal.Self_v.weight": lambda d: (d, d),
    "temporal.Self_v.bias": lambda d: (d,),
    "mlp.0.weight": lambda d: (d, d),
    "mlp.0.bias": lambda d: (d,),
    "mlp.2.weight": lambda d: (d, d),
    "mlp.2.bias": lambda d: (d,),
}
_IGNORED = ("temporal.ffn_o.weight", "temporal.ffn_o.bias")  # present in checkpoints, never used


def positional_encoding(T: int, D: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Sinusoidal encoding over channels at positions t / T (not t), shape [T, D]."""
    pos = torch.arange(T, dtype=torch.float32, device=device)[:, None] / T
    freq = torch.exp(torch.arange(0, D, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / D))
    pe = torch.zeros(T, D, dtype=torch.float32, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : D // 2]
    return pe.to(dtype)


def window_index(T: int, w: int, *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns each frame attends to, [T, w], and a mask of their first occurrences.

    Row j holds clamp(j - w//2 + k, 0, T-1) for k < w. The clamped indices are
    non-decreasing along k, so a repeat is always equal to its left neighbour.
    """
    j = torch.arange(T, device=device)[:, None]
    k = torch.arange(w, device=device)[None, :]
    cols = (j - w // 2 + k).clamp(0, T - 1)
    first = torch.ones_like(cols, dtype=torch.bool)
    first[:, 1:] = cols[:, 1:] != cols[:, :-1]
    return cols, first


class WindowedSelfAttention(nn.Module):
    """Multi-head self-attention restricted to a clamped temporal window (banded)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.Self_q = nn.Linear(dim, dim)
        self.Self_k = nn.Linear(dim, dim)
        self.Self_v = nn.Linear(dim, dim)

    def forward(self, e: torch.Tensor, window: int) -> torch.Tensor:
        T, D = e.shape
        H, dh = self.heads, D // self.heads
        q = self.Self_q(e).view(T, H, dh)
        k = self.Self_k(e).view(T, H, dh)
        v = self.Self_v(e).view(T, H, dh)
        _, first = window_index(T, window, device=e.device)
        # Edge-padding by w//2 rows in front and w-1-w//2 behind makes row j's window the
        # contiguous slice j..j+w-1 of the padded sequence: offset i is one slice (a view).
        left, right = window // 2, window - 1 - window // 2
        kp = torch.cat([k[:1].expand(left, H, dh), k, k[-1:].expand(right, H, dh)])
        vp = torch.cat([v[:1].expand(left, H, dh), v, v[-1:].expand(right, H, dh)])
        logits = torch.stack([(q * kp[i:i + T]).sum(-1) for i in range(window)], dim=-1)
        logits = logits / math.sqrt(dh)
        logits = logits.masked_fill(~first[:, None, :], float("-inf"))
        p = torch.softmax(logits, dim=-1)  # [T, H, w]
        a = p[:, :, 0, None] * vp[:T]
        for i in range(1, window):
            a = a + p[:, :, i, None] * vp[i:i + T]
        return a.reshape(T, D)


class TemporalAgent(nn.Module):
    """TSPO's temporal agent. `events` runs at index time, `scores` at ask time."""

    def __init__(self, dim: int = 768, heads: int = 8, window: int = 12) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.dim, self.heads, self.window = dim, heads, window
        self.temporal = WindowedSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.source = "random"

    def zero_residual_branch(self) -> "TemporalAgent":
        """z = x exactly: the untrained agent then ranks frames by cos(x, q)."""
        with torch.no_grad():
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()
        self.source = f"similarity:{self.dim}"
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = x + positional_encoding(x.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
        return self.mlp(self.temporal(e, self.window)) + x

    def events(self, x):
        """Event features z[T, D] of frame embeddings x[T, D] (NumPy in -> NumPy out)."""
        if isinstance(x, torch.Tensor):
            return self(x)
        p = next(self.parameters())
        with torch.inference_mode():
            z = self(torch.as_tensor(np.asarray(x), dtype=p.dtype, device=p.device))
        return z.float().cpu().numpy()

    def scores(self, z, x, q, tau: float = TAU):
        """Logits s[T] = (mean_m cos(z, q_m) + cos(x, mean q)) / tau (NumPy or torch)."""
        if isinstance(z, torch.Tensor):
            return _torch_scores(z, x, torch.as_tensor(q, dtype=z.dtype, device=z.device), tau)
        return score_frames(z, x, q, tau)

    @property
    def id(self) -> str:
        """Stable id of config and weights: the store records which agent made its features."""
        h = hashlib.sha256(f"{self.dim}/{self.heads}/{self.window}".encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return f"tspo-agent:d{self.dim}:w{self.window}:{h.hexdigest()[:12]}"


def _torch_scores(z: torch.Tensor, x: torch.Tensor, q: torch.Tensor, tau: float) -> torch.Tensor:
    q = q.reshape(-1, z.shape[-1])
    event = (z @ q.T) / (z.norm(dim=-1, keepdim=True) * q.norm(dim=-1)[None, :] + EPS)
    qm = q.mean(0)
    clip = (x @ qm) / (x.norm(dim=-1) * qm.norm() + EPS)
    return (event.mean(-1) + clip) / tau


# --------------------------------------------------------------------------- checkpoints

def _strip_prefix(tensors: Mapping[str, Any], where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """The selector's tensors without their prefix, and which format they came in."""
    for prefix, kind in ((OFFICIAL_PREFIX, "tspo-0.4b"), (TRAINING_PREFIX, "training"), ("", "tspo-edge")):
        found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if any(k in _SHAPES for k in found):
            return {k: torch.as_tensor(v) for k, v in found.items()}, kind
    raise CheckpointError(f"{where}: no agent tensors found (expected keys like 'selector.temporal.Self_q.weight', "
                          "'multiModal_align.temporal.Self_q.weight' or 'temporal.Self_q.weight')")


def agent_from_tensors(tensors: Mapping[str, Any], *, heads: int = 8, window: int = 12,
                       where: str = "checkpoint") -> TemporalAgent:
    """Build an agent from a dict of tensors with any known prefix; shapes are checked."""
    state, kind = _strip_prefix(tensors, where)
    if "temporal.Self_q.weight" not in state:
        raise CheckpointError(f"{where}: missing key 'temporal.Self_q.weight'")
    dim = int(state["temporal.Self_q.weight"].shape[0])
    for name, shape_of in _SHAPES.items():
        if name not in state:
            raise CheckpointError(f"{where}: missing key '{name}'")
        want, got = shape_of(dim), tuple(state[name].shape)
        if got != want:
            raise CheckpointError(f"{where}: '{name}' has shape {got}, expected {want} (width {dim})")
    unknown = sorted(set(state) - set(_SHAPES) - set(_IGNORED))
    if unknown:
        raise CheckpointError(f"{where}: unexpected agent keys {unknown[:3]}")
    if dim % heads:
        raise CheckpointError(f"{where}: width {dim} is not divisible by {heads} heads")
    agent = TemporalAgent(dim, heads, window)
    agent.load_state_dict({k: state[k].float() for k in _SHAPES})
    agent.source = f"{kind}:{where}"
    return agent.eval()


def _cause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:160] + "…" if len(text) > 160 else text) or type(e).__name__


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file; anything unreadable is a one-line CheckpointError.

    .bin/.pt go through torch.load(weights_only=True): a pickle that names anything but tensors
    and plain containers is refused before any of it runs."""
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or _cause(e)})") from None
        except Exception as e:  # SafetensorError (a header claiming 2^62 bytes too), MemoryError ...
            raise CheckpointError(f"{path}: not a valid safetensors file ({_cause(e)})") from None
    elif path.suffix in (".bin", ".pt", ".pth"):
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
                warnings.simplefilter("ignore")
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or _cause(e)})") from None
        except Exception as e:  # UnpicklingError, RuntimeError (bad zip), EOFError, MemoryError ...
            m = re.search(r"unsupported GLOBAL (\S+)|Unsupported global: (?:GLOBAL )?(\S+)", str(e))
            if m:
                raise CheckpointError(
                    f"{path}: refused: the pickle names {m.group(1) or m.group(2)}, and only tensors "
                    f"are loaded (nothing was run)") from None
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if ln.startswith("Unsupported")), lines[-1] if lines else "")
            if "Weights only load failed" in str(e):
                raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint "
                                      f"({_cause(detail)}; nothing was run)") from None
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_cause(e)})") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: not a dict of tensors")
        tensors = obj
    else:
        raise CheckpointError(f"{path}: unknown checkpoint file type (expected .safetensors, .bin, .pt)")
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a dict of tensors (entry {str(bad[0])[:60]!r})")
    return tensors


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or _cause(e)})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text, not a JSON file") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: broken JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _checkpoint_files(folder: Path) -> list[Path]:
    """The weight files of a folder: ours, a (sharded) HF checkpoint, or any single file."""
    if (folder / AGENT_FILE).exists():
        return [folder / AGENT_FILE]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        idx = folder / index_name
        if idx.exists():
            weight_map = _read_json(idx).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise CheckpointError(f"{idx}: no 'weight_map' of file names")
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CheckpointError(f"{idx}: shard {missing[0]} is missing")
            return [folder / s for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return [folder / name]
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not files:
        raise CheckpointError(f"{folder}: no checkpoint files (*.safetensors, *.bin) in folder")
    return files


def _saved_config(path: Path, cfg_path: Path) -> dict:
    """heads/window saved with a tspo-edge checkpoint (agent.json, or the safetensors metadata)."""
    if cfg_path.exists() and (path.is_dir() or path.name == AGENT_FILE):
        return _read_json(cfg_path)
    if path.is_file() and path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:
            raise CheckpointError(f"{path}: not a valid safetensors file ({_cause(e)})") from None
        if meta.get("format") == FORMAT:
            return meta
    return {}


def _config_int(cfg: dict, key: str, default: int, where) -> int:
    value = cfg.get(key, default)
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n <= 0 or (isinstance(value, float) and value != n):
        raise CheckpointError(f"{where}: '{key}' is {value!r}, expected a positive whole number")
    return n


PROBE_FRAMES = 16


def probe_agent(agent: TemporalAgent, where) -> None:
    """Refuse an agent whose weights or event features on a fixed probe input are not finite."""
    for name, t in agent.state_dict().items():
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: weight '{name}' holds NaN or infinity; refusing this agent")
    t = torch.arange(PROBE_FRAMES, dtype=torch.float32)[:, None]
    c = torch.arange(agent.dim, dtype=torch.float32)[None, :]
    x = torch.sin(0.37 * t + 0.11 * c) + 0.5 * torch.cos(0.05 * t * c)  # deterministic, unit-scale
    p = next(agent.parameters())
    with torch.inference_mode():
        z = agent(x.to(device=p.device, dtype=p.dtype))
    if not torch.isfinite(z).all():
        raise CheckpointError(f"{where}: the agent's event features are not finite (NaN or infinity) "
                              f"on a probe input; refusing this agent")


def load_agent(source, *, heads: int = 8, window: int = 12, init: str | None = None) -> TemporalAgent:
    """Load a temporal agent.

    `source`: a folder or file of the official TSPO-0.4B checkpoint (`selector.*`), a
    training checkpoint (`multiModal_align.*`), a tspo-edge checkpoint (agent.safetensors
    + agent.json), a dict of tensors with any of those prefixes, or "similarity:<dim>"
    for an untrained agent whose residual branch is zero (ranks by cos(x, q)).
    `init="similarity"` zeroes the residual branch of whatever was loaded.
    """
    if isinstance(source, Mapping):
        agent = agent_from_tensors(source, heads=heads, window=window, where="dict")
    elif isinstance(source, str) and source.startswith("similarity:"):
        try:
            dim = int(source.split(":", 1)[1])
        except ValueError:
            raise CheckpointError(f"{source}: expected 'similarity:<width>'") from None
        with torch.random.fork_rng(devices=[]):  # deterministic, without touching the caller's RNG
            torch.manual_seed(0)
            agent = TemporalAgent(dim, heads, window).eval()
        init = "similarity"
    else:
        path = Path(source)
        if not path.exists():
            raise CheckpointError(f"{path}: no such agent checkpoint")
        folder = path if path.is_dir() else path.parent
        cfg_path = folder / CONFIG_FILE
        cfg = _saved_config(path, cfg_path)
        heads = _config_int(cfg, "heads", heads, cfg_path if cfg_path.exists() else path)
        window = _config_int(cfg, "window", window, cfg_path if cfg_path.exists() else path)
        files = _checkpoint_files(path) if path.is_dir() else [path]
        tensors: dict[str, torch.Tensor] = {}
        for f in files:
            tensors.update(_read_tensors(f))
        agent = agent_from_tensors(tensors, heads=heads, window=window, where=str(path))
    if init == "similarity":
        agent.zero_residual_branch()
    elif init is not None:
        raise ValueError(f"unknown init {init!r} (expected 'similarity')")
    probe_agent(agent, source if not isinstance(source, Mapping) else "dict")
    return agent


def save_agent(agent: TemporalAgent, out_dir, *, encoder_id: str | None = None,
               official_layout: bool = False) -> Path:
    """Write agent.safetensors + agent.json; with `official_layout`, keys get the `selector.` prefix."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = OFFICIAL_PREFIX if official_layout else ""
    tensors = {prefix + k: v.detach().float().cpu().contiguous() for k, v in agent.state_dict().items()}
    cfg = {"format": FORMAT, "version": FORMAT_VERSION, "dim": agent.dim, "heads": agent.heads,
           "window": agent.window, "encoder_id": encoder_id, "agent_id": agent.id}
    name = "model.safetensors" if official_layout else AGENT_FILE
    save_file(tensors, str(out / name), metadata={k: str(v) for k, v in cfg.items()})
    if not official_layout:
        (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return out / name
