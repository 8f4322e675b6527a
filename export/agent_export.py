"""The agent's event encoder z = events(x) to ONNX: dynamic T, banded attention (no T x T tensor).

Only the question-independent part is exported; ask-time scoring stays in NumPy
(tspo_edge.models.agent.score_frames) over the stored features.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tspo_edge.export.onnx_utils import convert_fp16, to_onnx

AGENT_ONNX = "agent.onnx"
MAX_T = 50_000
OPT_T = 3_600


class _Events(torch.nn.Module):
    def __init__(self, agent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.agent.events(x)


def export_agent(agent, out_dir: Path, *, opset: int = 17, fp16: bool = False) -> dict:
    """Write out_dir/agent.onnx (x float32 [T, D] -> z float32 [T, D]); returns its manifest section."""
    agent = agent.float().cpu().eval()
    # Trace with T larger than the window so no clamping branch is specialised away.
    example = torch.randn(max(64, 4 * agent.window), agent.dim)
    path = to_onnx(_Events(agent), (example,), out_dir / AGENT_ONNX, input_names=["x"], output_names=["z"],
                   dynamic_axes={"x": {0: "T"}, "z": {0: "T"}}, opset=opset)
    section = {"id": agent.id, "dim": agent.dim, "heads": agent.heads, "window": agent.window,
               "source": getattr(agent, "source", None),
               "profile": {"x": [[1, agent.dim], [OPT_T, agent.dim], [MAX_T, agent.dim]]}}
    if fp16:
        section["fp16_converter"] = convert_fp16(path)
    return section
