"""The TSPO training loop over an environment (features + frames + frozen MLLM).

Every random choice of step k is seeded from (seed, global sample number), not drawn
from a running generator: the data order, the dual-style splicing and the Gumbel draws
of a resumed run are those of the uninterrupted run, on any number of processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tspo_edge import limits as L
from tspo_edge.checks import check_range
from tspo_edge.errors import CheckpointError, InputError, TspoError

from tspo_edge.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tspo_edge.train.data import Row
from tspo_edge.train.dist import Dist
from tspo_edge.train.features import FeatureSource
from tspo_edge.train.logs import MetricsLog, plot_run, read_log
from tspo_edge.train.rl import accuracy_rewards, advantages, policy_entropy, tau_at, temporal_rewards, tspo_loss
from tspo_edge.train.rollout import FrameSource, answer_rollouts, draw
from tspo_edge.train.samples import Sample, SampleSpec, build_sample


@dataclass
class TrainConfig:
    steps: int | None = None          # optimizer steps; default: `epochs` over the data
    epochs: float = 1.0
    group: int = 8                    # G rollouts per sample
    lr: float = 5e-4
    weight_decay: float = 0.0
    lr_schedule: str = "linear"       # linear (towards 0; the last step runs at lr / steps) | constant
    grad_accum: int = 1               # samples per process per optimizer step
    max_grad_norm: float | None = 1.0
    tau0: float = 0.025
    tau1: float = 0.01
    save_every: int = 100
    keep: int | None = 3              # checkpoints kept (None: all)
    seed: int = 0
    bf16: bool = True                 # autocast on CUDA only
    placebo: bool = False             # control run: each group learns from the previous group's rewards
    spec: SampleSpec = field(default_factory=SampleSpec)

    @classmethod
    def from_options(cls, *, steps: int | None, epochs: float, group: int, lr: float, grad_accum: int,
                     save_every: int, seed: int) -> "TrainConfig":
        """`tspo-edge train`'s numbers, each within its bound (tspo_edge/limits.py) before anything
        loads (InputError naming the option)."""
        check_range(steps, "--steps", 1, L.MAX_STEPS, integer=True)
        check_range(epochs, "--epochs", 1e-6, L.MAX_EPOCHS)
        check_range(lr, "--lr", 1e-12, L.MAX_LR)
        check_range(grad_accum, "--grad-accum", 1, L.MAX_GRAD_ACCUM, integer=True)
        check_range(save_every, "--save-every", 0, L.MAX_STEPS, integer=True)
        check_range(seed, "--seed", 0, L.MAX_SEED, integer=True)
        if group < 2:
            raise InputError(f"--group must be at least 2 (advantages are relative to the group), got {group}")
        check_range(group, "--group", 2, L.MAX_GROUP, integer=True)
        return cls(steps=steps, epochs=epochs, group=group, lr=lr, grad_accum=grad_accum, save_every=save_every,
                   seed=seed)

    def __post_init__(self):
        checks = [(self.group >= 2, f"--group must be at least 2 (advantages are relative to the group), got {self.group}"),
                  (self.grad_accum >= 1, f"--grad-accum must be at least 1, got {self.grad_accum}"),
                  (self.steps is None or self.steps >= 1, f"--steps must be at least 1, got {self.steps}"),
                  (self.epochs > 0, f"--epochs must be positive, got {self.epochs}"),
                  (self.lr > 0, f"--lr must be positive, got {self.lr}"),
                  (self.save_every >= 0, f"--save-every must be >= 0, got {self.save_every}")]
        for ok, msg in checks:
            if not ok:
                raise TspoError(msg)


@dataclass
class Env:
    """What the agent learns from. `questions` maps a row's question stem to its text
    embedding(s) [M, D]; `pool` is where specific samples draw foreign clips from."""

    rows: list[Row]
    features: FeatureSource
    frames: FrameSource
    answerer: Any
    questions: dict[str, np.ndarray]
    pool: list[str] | None = None

    def __post_init__(self):
        if self.pool is None:
            self.pool = list(dict.fromkeys(r.video for r in self.rows))


def total_steps(cfg: TrainConfig, n_rows: int, world: int = 1) -> int:
    if cfg.steps:
        return int(cfg.steps)
    return max(1, math.ceil(cfg.epochs * n_rows / (cfg.grad_accum * world)))


class Trainer:
    def __init__(self, agent, env: Env, cfg: TrainConfig, out: str | Path, *, dist: Dist | None = None,
                 encoder_id: str | None = None, on_step: Callable[[dict, int], None] | None = None,
                 tensorboard: bool = True):
        self.env, self.cfg, self.out = env, cfg, Path(out)
        self.dist = dist or Dist(device="cpu")
        self.agent = agent.to(self.dist.device).train()
        self.encoder_id, self.on_step, self.tensorboard = encoder_id, on_step, tensorboard
        self.total = total_steps(cfg, len(env.rows), self.dist.world)
        self.opt = torch.optim.AdamW(self.agent.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.lr_schedule == "linear":
            # step k (0-based) runs at lr * (1 - k / total): from lr down to lr / total at the last
            # step, never 0 (a step at lr 0 would be wasted work)
            lam = lambda s: max(1.0 / self.total, 1.0 - s / self.total)  # noqa: E731
        elif cfg.lr_schedule == "constant":
            lam = lambda s: 1.0  # noqa: E731
        else:
            raise ValueError(f"unknown lr schedule {cfg.lr_schedule!r} (linear, constant)")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lam)
        self._perm: tuple[int, np.ndarray] | None = None
        self._placebo_prev: np.ndarray | None = None
        self.step = 0

    # ---- data order --------------------------------------------------------------------
    def row_of(self, i: int) -> Row:
        """Row of global sample number i: epoch-wise permutations seeded by (seed, epoch)."""
        n = len(self.env.rows)
        epoch, pos = divmod(i, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.cfg.seed, epoch]).permutation(n))
        return self.env.rows[int(self._perm[1][pos])]

    def sample(self, i: int) -> Sample:
        rng = np.random.default_rng([self.cfg.seed, i, 1])
        return build_sample(self.row_of(i), self.env.features, self.env.pool, self.cfg.spec, rng)

    # ---- one group ---------------------------------------------------------------------
    def logits(self, sample: Sample, tau: float) -> torch.Tensor:
        dev = self.dist.device
        x = torch.from_numpy(sample.x).to(dev)
        q = torch.as_tensor(np.asarray(self.env.questions[sample.row.question], dtype=np.float32), device=dev)
        amp = torch.autocast(dev.type, dtype=torch.bfloat16) if (dev.type == "cuda" and self.cfg.bf16) \
            else contextlib.nullcontext()
        with amp:
            z = self.agent.events(x)
            s = self.agent.scores(z, x, q, tau)
        return s.float()

    def group_step(self, i: int, tau: float) -> tuple[torch.Tensor, dict]:
        """Rollouts, rewards and loss of global sample i (the loss keeps its graph)."""
        sample = self.sample(i)
        s = self.logits(sample, tau)
        log_probs = torch.log_softmax(s, dim=-1)
        gen = torch.Generator().manual_seed(int(np.random.default_rng([self.cfg.seed, i, 2]).integers(2**62)))
        chosen = draw(s, sample.n, self.cfg.group, gen)
        letters = answer_rollouts(sample, chosen, self.env.frames, self.env.answerer)
        r_a = accuracy_rewards(letters, sample.row.answer)
        r_t = temporal_rewards(chosen, sample.mask) if sample.mask is not None else None
        r = r_a + (r_t if r_t is not None else 0.0)
        adv = advantages(self.placebo_rewards(r) if self.cfg.placebo else r)
        loss = tspo_loss(log_probs, chosen.to(log_probs.device), adv)
        m = {"R_A": float(r_a.mean()), "R_T": None if r_t is None else float(r_t.mean()),
             "reward_mean": float(r.mean()), "reward_std": float(np.std(r, ddof=1)) if len(r) > 1 else 0.0,
             "entropy": policy_entropy(log_probs), "loss": float(loss.detach())}
        return loss, m

    def placebo_rewards(self, r: np.ndarray) -> np.ndarray:
        """The placebo's rewards for this group: the previous group's (same G, same distribution,
        unrelated to these rollouts), i.e. rewards permuted across groups by a shift of one. The
        first group of a run (or of a resumed run) gets zeros: no gradient, the step still counts."""
        prev, self._placebo_prev = self._placebo_prev, np.asarray(r, dtype=np.float64).copy()
        if prev is None or len(prev) != len(r):
            return np.zeros_like(r, dtype=np.float64)
        return prev

    # ---- the run -----------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "total_steps": self.total, "world": self.dist.world,
                "samples_seen": self.step * self.cfg.grad_accum * self.dist.world,
                "rows": len(self.env.rows), "config": asdict(self.cfg)}

    def resume(self, path: str | Path | None = None) -> int:
        """Continue from `path` or the latest checkpoint in out/; returns the step resumed at."""
        ckpt = Path(path) if path else latest_checkpoint(self.out)
        if ckpt is None:
            return 0
        st = load_checkpoint(ckpt, self.agent, self.opt, self.sched)
        for key in ("group", "grad_accum", "seed", "lr"):
            if st["config"][key] != getattr(self.cfg, key):
                raise CheckpointError(f"{ckpt}: saved with {key}={st['config'][key]}, "
                                      f"this run has {key}={getattr(self.cfg, key)}")
        self.step = int(st["step"])
        return self.step

    def save(self) -> Path | None:
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.out, self.agent, self.opt, self.sched, self.state(),
                                   encoder_id=self.encoder_id, keep=self.cfg.keep)
        self.dist.barrier()
        return path

    def probe_sample(self) -> Sample:
        """One fixed sample (the first specific row if any) for the score-curve plot."""
        rows = self.env.rows
        row = next((r for r in rows if r.kind == "specific"), rows[0])
        return build_sample(row, self.env.features, self.env.pool, self.cfg.spec,
                            np.random.default_rng([self.cfg.seed, 0xC0FFEE]))

    def probe_scores(self, sample: Sample) -> np.ndarray:
        with torch.no_grad():
            return (self.logits(sample, 1.0)).cpu().numpy()  # tau = 1: cos(z,q) + cos(x,q)

    def run(self, *, resume: bool | str | Path = False, steps: int | None = None) -> dict:
        """Train to the end (or `steps` more optimizer steps); returns a summary."""
        cfg, W, A = self.cfg, self.dist.world, self.cfg.grad_accum
        if resume:
            self.resume(None if resume is True else resume)
        log = MetricsLog(self.out, resume_step=self.step, tensorboard=self.tensorboard) if self.dist.is_main else None
        probe = self.probe_sample()
        before_file = self.out / "probe_before.npy"  # the untrained agent's curve, kept for resumed runs
        if self.step > 0 and before_file.exists():
            probe_before = np.load(before_file)
        else:
            probe_before = self.probe_scores(probe)
            if self.dist.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                np.save(before_file, probe_before)
        params = [p for p in self.agent.parameters() if p.requires_grad]
        stop = self.total if steps is None else min(self.total, self.step + steps)
        t_run = time.perf_counter()
        while self.step < stop:
            t0 = time.perf_counter()
            tau = tau_at(self.step, self.total, cfg.tau0, cfg.tau1)
            recs = []
            for k in range(A):
                i = (self.step * A + k) * W + self.dist.rank
                loss, m = self.group_step(i, tau)
                (loss / A).backward()
                recs.append(m)
            self.dist.reduce_grads(params)
            # the norm before clipping: what moves the agent (the surrogate loss is 0 in value)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf")))
            lr = self.opt.param_groups[0]["lr"]  # the rate this step runs at
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            rec = self._merge(recs, tau, time.perf_counter() - t0, lr=lr, grad_norm=grad_norm)
            if log is not None:
                log.write(rec)
            if self.on_step and self.dist.is_main:
                self.on_step(rec, self.total)
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total:
                self.save()
        last = self.save()
        summary = {"steps": self.step, "total_steps": self.total, "seconds": time.perf_counter() - t_run,
                   "checkpoint": str(last) if last else None}
        if self.dist.is_main:
            log.close()
            recs = read_log(self.out)
            after = self.probe_scores(probe)
            summary["plot"] = str(plot_run(recs, {"before": probe_before, "after": after, "mask": probe.mask,
                                                  "title": f"fixed sample: {Path(probe.row.video).name} ({probe.row.kind})"},
                                           self.out / "train.png"))
            summary["last"] = recs[-1] if recs else None
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _merge(self, recs: list[dict], tau: float, seconds: float, *, lr: float, grad_norm: float) -> dict:
        """Step metrics averaged over this step's samples on all processes, rounded for the log.

        `loss` is the surrogate's value, 0 by construction (exp(lp - sg(lp)) = 1 and the
        advantages have mean 0); `grad_norm` (before clipping) and `entropy` show what moves."""
        keys = ["R_A", "reward_mean", "reward_std", "entropy", "loss"]
        local = [sum(r[k] for r in recs) for k in keys] + [float(len(recs))]
        rts = [r["R_T"] for r in recs if r["R_T"] is not None]
        local += [float(sum(rts)), float(len(rts)), seconds]
        tot = self.dist.sum(local)
        n = tot[len(keys)]
        rec = {"step": self.step, **{k: _round(tot[j] / n) for j, k in enumerate(keys)}}
        rec["R_T"] = _round(tot[-3] / tot[-2]) if tot[-2] else None  # None: no specific sample this step
        rec["grad_norm"] = _round(grad_norm)
        rec["tau"] = _round(tau)
        rec["lr"] = _round(lr)
        rec["samples_per_s"] = _round(n / (tot[-1] / self.dist.world)) if tot[-1] else None
        return rec


def _round(v: float, digits: int = 4) -> float:
    """`digits` significant digits (the log is read by people; -0.0 and 1e-17 noise become 0)."""
    v = float(v)
    if not math.isfinite(v) or v == 0.0:
        return v
    r = round(v, digits - 1 - int(math.floor(math.log10(abs(v)))))
    return 0.0 if abs(r) < 1e-12 else r
