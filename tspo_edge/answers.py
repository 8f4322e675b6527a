"""What an ask returns, and how `tspo-edge ask` prints it: `AskResult`, `Keyframe`, `format_result`.

No NumPy, no decoder, no index: the light client of a server (tspo_edge.serving.client) builds
and prints these from a server's JSON with the standard library alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tspo_edge.questions import option_letters
from tspo_edge.terminal import printable
from tspo_edge.timestamps import mmss

if TYPE_CHECKING:  # the decoded keyframes' type only; NumPy is not imported here
    import numpy as np


@dataclass
class Keyframe:
    index: int     # position in the video's indexed frame sequence (1 fps by default)
    time: float    # seconds
    score: float   # the agent's logit s_t


@dataclass
class AskResult:
    video: str
    question: str                 # as asked
    stem: str                     # what the agent saw
    options: list[str]
    answer: str | None
    letter: str | None
    frames: list[Keyframe]
    method: str
    timings: dict[str, float]     # seconds per stage
    models: dict[str, str]        # encoder, agent, answerer ids
    note: str = ""
    indexed_now: bool = False     # the video was (re)indexed by this ask
    option_scores: list[float] | None = None
    warning: str | None = None    # one line: the question looked as if it had options none of which could be read
    pixels: np.ndarray | None = field(default=None, repr=False)  # decoded keyframes (not serialised)

    def add_start(self, seconds: float) -> None:
        """Count the process's start-up before the ask (`start`: interpreter, imports, models) in
        the timings and their total, so the total is what the user waited for the answer."""
        self.timings = {"start": float(seconds), **self.timings}
        self.timings["total"] = self.timings.get("total", 0.0) + float(seconds)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("pixels")
        d["frames"] = [{"index": k.index, "time": round(k.time, 3), "timestamp": mmss(k.time),
                        "score": round(k.score, 4)} for k in self.frames]
        d["timings"] = {k: round(v, 6) for k, v in self.timings.items()}
        return d


def format_result(r: AskResult) -> str:
    """The readable form `tspo-edge ask` prints; text from the question, a server or an MLLM escaped."""
    p = printable
    lines = [f"question: {p(r.stem)}"]
    for letter, opt in zip(option_letters(len(r.options)), r.options):
        lines.append(f"  {letter}. {p(opt)}")
    if r.answer:
        lines.append(f"answer:   {p(r.answer)}")
    if r.note:
        lines.append(f"note:     {p(r.note)}")
    lines.append(f"moments:  {len(r.frames)} frames ({p(r.method)}): "
                 + " ".join(mmss(k.time) for k in r.frames))
    best = sorted(r.frames, key=lambda k: -k.score)[:3]
    if best:
        lines.append("best:     " + ", ".join(f"{mmss(k.time)} (s={k.score:.1f})" for k in best))
    lines.append("time:     " + "  ".join(f"{p(k)} {v * 1000:.0f} ms" for k, v in r.timings.items()))
    lines.append(f"models:   answerer {p(r.models['answerer'])} | encoder {p(r.models['encoder'])} | "
                 f"agent {p(r.models['agent'])}")
    return "\n".join(lines)
