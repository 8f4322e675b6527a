"""Training checkpoints: the agent (safetensors via save_agent) plus what an exact resume needs.

    <out>/checkpoints/step-000100/
        agent.safetensors, agent.json   the agent (loadable by every tspo-edge command)
        trainer.pt                      optimizer, LR schedule, RNG states (torch.load weights_only)
        state.json                      step, samples seen, run settings
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from tspo_edge.models.agent import load_agent, save_agent
from tspo_edge.errors import CheckpointError

STEP_DIR = "step-{:06d}"


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
          "python_pos": random.getstate()[2], "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
          "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate((3, tuple(st["python"]), st["python_pos"]))
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(out: Path, agent, optimizer, scheduler, state: dict, *, encoder_id: str | None = None,
                    keep: int | None = None) -> Path:
    """Write a checkpoint atomically (a temporary folder renamed into place)."""
    root = Path(out) / "checkpoints"
    final = root / STEP_DIR.format(state["step"])
    tmp = root / (final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_agent(agent, tmp, encoder_id=encoder_id)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
               tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep:
        for old in sorted(root.glob("step-??????"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    steps = sorted((Path(out) / "checkpoints").glob("step-??????"))
    return steps[-1] if steps else None


def load_checkpoint(path: Path, agent, optimizer, scheduler) -> dict:
    """Restore agent weights, optimizer, schedule and RNG states in place; return state.json."""
    path = Path(path)
    for name in ("agent.safetensors", "trainer.pt", "state.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: not a training checkpoint (missing {name})")
    saved = load_agent(path)
    if (saved.dim, saved.heads, saved.window) != (agent.dim, agent.heads, agent.window):
        raise CheckpointError(f"{path}: agent is d{saved.dim}/h{saved.heads}/w{saved.window}, "
                              f"the run's is d{agent.dim}/h{agent.heads}/w{agent.window}")
    agent.load_state_dict(saved.state_dict())
    blob = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return json.loads((path / "state.json").read_text())
