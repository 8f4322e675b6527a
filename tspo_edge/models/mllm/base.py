"""The answerer interface: frames + timestamps + question (+ options) -> Answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from tspo_edge.questions import format_options, parse_answer_letter
from tspo_edge.timestamps import mmss

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class Answer:
    text: str                      # the answerer's reply ("" when it gives none)
    letter: str | None             # the option letter, for multiple-choice questions
    model_id: str
    note: str = ""                 # what answered and how far to trust it (lite, none)
    option_scores: list[float] | None = field(default=None)


@runtime_checkable
class Answerer(Protocol):
    id: str
    image_size: int | None         # short side the frames should be decoded at; None: any
    needs_frames: bool             # False: the answerer does not look at pixels (none)

    def answer(self, frames: np.ndarray, times: Sequence[float], question: str,
               options: Sequence[str]) -> Answer: ...

    def answer_batch(self, items: Sequence[tuple[np.ndarray, Sequence[float], str, Sequence[str]]]
                     ) -> list[Answer]: ...


def build_prompt(question: str, options: Sequence[str], times: Sequence[float] | None = None) -> str:
    """The text an MLLM gets next to the frames: timestamps, the question, its options."""
    parts = []
    if times is not None and len(times):
        parts.append(f"The video is given as {len(times)} frames taken at "
                     + ", ".join(mmss(t) for t in times) + " (mm:ss).")
    parts.append(question.strip())
    if options:
        parts.append(format_options(options))
        parts.append(MC_INSTRUCTION)
    return "\n".join(parts)


def letter_of(text: str, options: Sequence[str]) -> str | None:
    return parse_answer_letter(text, len(options)) if options else None


class BaseAnswerer:
    """answer_batch as a loop; answerers that can batch override it."""

    id = "base"
    image_size: int | None = None
    needs_frames = True

    def answer(self, frames, times, question, options) -> Answer:  # pragma: no cover - abstract
        raise NotImplementedError

    def answer_batch(self, items):
        return [self.answer(*item) for item in items]
