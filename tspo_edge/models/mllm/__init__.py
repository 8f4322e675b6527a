"""MLLM answerers: one interface (`Answerer.answer(frames, times, question, options) -> Answer`),
chosen by a spec string:

- "lite"            rank multiple-choice options by embedding similarity (offline, no LLM)
- "none"            no answer: the chosen moments are the result
- "openai:URL"      an OpenAI-compatible server (vLLM, trtllm-serve, llama.cpp, Ollama); `model=` names it
- a hub id / folder a transformers video MLLM (AutoProcessor + AutoModelForImageTextToText)
"""

from __future__ import annotations

from tspo_edge.models.encoders import load_encoder
from tspo_edge.models.encoders.memo import MemoEncoder
from tspo_edge.errors import AnswererError, ModelLoadError
from tspo_edge.extras import require_torch
from tspo_edge.models.mllm.base import Answer, Answerer, build_prompt
from tspo_edge.models.mllm.simple import LiteAnswerer, NoneAnswerer

__all__ = ["Answer", "Answerer", "AnswererError", "load_answerer", "answerer_for", "build_prompt",
           "LiteAnswerer", "NoneAnswerer"]


def load_answerer(spec: str | None = "lite", *, model: str | None = None, encoder=None,
                  trust_remote_code: bool = False, **kw) -> Answerer:
    """Build the answerer `spec` names. `encoder` serves the lite answerer (default: the lite encoder);
    `model` is the served model name for openai:URL. Extra keywords go to the answerer
    (device, dtype, max_new_tokens, frame_size, timeout, concurrency …)."""
    spec = (spec or "lite").strip()
    if spec == "none":
        return NoneAnswerer()
    if spec == "lite":
        if encoder is None:
            encoder = load_encoder("lite")
        return LiteAnswerer(encoder)
    if spec.startswith("openai:"):
        from tspo_edge.models.mllm.openai_api import OpenAIAnswerer  # deferred: the openai client takes ~0.5 s to import (measured); only openai: answerers need it

        return OpenAIAnswerer(spec[len("openai:"):], model=model, **kw)
    if spec.startswith(("http://", "https://")):
        raise ModelLoadError(f"{spec}: write openai:{spec} for an OpenAI-compatible server")
    require_torch(f"the MLLM {spec}", ("torch", "transformers"))
    from tspo_edge.models.mllm.hf import TransformersAnswerer  # optional: the [torch] extra (torch + transformers)

    return TransformersAnswerer(spec, trust_remote_code=trust_remote_code, **kw)


def answerer_for(mllm: str | None, models, *, memo: bool = False, model: str | None = None,
                 trust_remote_code: bool = False, max_new_tokens: int | None = None,
                 timeout: float | None = None, concurrency: int | None = None) -> Answerer:
    """The answerer a command's --mllm names, for its loaded `models` (tspo_edge.models.Models):
    lite ranks the options with `models.encoder` (behind a MemoEncoder with `memo`: training and
    the evaluation show it the same frames again and again); any other spec gets `model` (the
    name served at openai:URL), `trust_remote_code` and `max_new_tokens`, and an openai: server
    `timeout` and `concurrency`. Only lite touches the encoder, so a down server or a missing
    model fails before the encoder loads."""
    spec = (mllm or "").strip() or "lite"
    if spec == "lite":
        return load_answerer("lite", encoder=MemoEncoder(models.encoder) if memo else models.encoder)
    kw = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    if spec.startswith("openai:"):
        kw.update({k: v for k, v in (("timeout", timeout), ("concurrency", concurrency)) if v is not None})
    return load_answerer(spec, model=model, trust_remote_code=trust_remote_code, **kw)
