"""Data parallelism through accelerate: one process, or one per GPU under
`accelerate launch` / `torchrun`. Gradients are averaged across processes after each
accumulation window; each rank takes every W-th sample of the global order."""

from __future__ import annotations

import os

import torch

from tspo_edge.models.device import pick_device


def launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Dist:
    """rank / world / device, gradient all-reduce and metric sums; trivial in one process."""

    def __init__(self, accelerator=None, device: str | torch.device | None = None):
        self.acc = accelerator
        if accelerator is not None:
            self.rank, self.world, self.device = accelerator.process_index, accelerator.num_processes, accelerator.device
        else:
            self.rank, self.world = 0, 1
            self.device = pick_device(device)

    @classmethod
    def from_env(cls, device: str | None = None) -> "Dist":
        """An Accelerator when launched by accelerate/torchrun (or a device is not given), else one process."""
        if launched_distributed() or device is None:
            from accelerate import Accelerator  # optional: accelerate (the [torch] extra), only for an Accelerator

            return cls(Accelerator(cpu=device == "cpu"))
        return cls(device=device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def reduce_grads(self, params) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad = self.acc.reduce(p.grad, reduction="mean")

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.acc.reduce(t, reduction="sum").tolist()

    def barrier(self) -> None:
        if self.world > 1:
            self.acc.wait_for_everyone()
