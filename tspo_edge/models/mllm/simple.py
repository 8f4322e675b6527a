"""Answerers with no language model: `none` (moments only) and `lite` (option ranking)."""

from __future__ import annotations

import numpy as np

from tspo_edge.models.mllm.base import Answer, BaseAnswerer
from tspo_edge.questions import option_letters


class NoneAnswerer(BaseAnswerer):
    """No answer: the chosen moments are the result."""

    id = "none"
    image_size = None
    needs_frames = False

    def answer(self, frames, times, question, options) -> Answer:
        return Answer(text="", letter=None, model_id=self.id,
                      note="no MLLM configured (answerer 'none'): the chosen moments are the result")


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-6)


class LiteAnswerer(BaseAnswerer):
    """Multiple choice without a language model: the option whose text embedding is closest to
    the mean embedding of the chosen frames, in the encoder's image-text space."""

    needs_frames = True

    def __init__(self, encoder):
        self.encoder = encoder
        self.id = f"lite-answerer:{encoder.id}"
        self.image_size = getattr(encoder, "image_size", None)

    def answer(self, frames, times, question, options) -> Answer:
        if len(options) < 2:
            return Answer(text="", letter=None, model_id=self.id,
                          note="the lite profile cannot answer open questions; it points at the moments "
                               "(a video MLLM answers open questions)")
        if frames is None or len(frames) == 0:
            return Answer(text="", letter=None, model_id=self.id, note="no frames to compare the options with")
        v = _unit(_unit(self.encoder.encode_images(np.asarray(frames))).mean(axis=0))
        o = _unit(self.encoder.encode_texts([str(x) for x in options]))
        sims = o @ v
        best = int(np.argmax(sims))
        letter = option_letters(len(options))[best]
        return Answer(text=f"{letter}. {options[best]}", letter=letter, model_id=self.id,
                      note=f"answered by the lite profile ({self.encoder.id}): the option closest to the "
                           "chosen frames in its embedding space, not a language model",
                      option_scores=[round(float(s), 4) for s in sims])
