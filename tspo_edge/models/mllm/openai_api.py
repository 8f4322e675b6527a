"""Any OpenAI-compatible chat server (vLLM, TensorRT-LLM's trtllm-serve, llama.cpp, Ollama).

The chosen frames go in one chat request as JPEG data URLs, each preceded by its timestamp.
The API key comes from $TSPO_EDGE_API_KEY or $OPENAI_API_KEY and is never printed: every message
goes through tspo_edge.redaction.redact (server error bodies, URLs with credentials).

One timeout means one wait: the client does not retry by itself (max_retries=0 by default); with
retries, the timeout message states the whole wait.
"""

from __future__ import annotations

import base64
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import openai
from PIL import Image

from tspo_edge.errors import AnswererError, ModelLoadError
from tspo_edge.models.mllm.base import Answer, BaseAnswerer, build_prompt, letter_of
from tspo_edge.timestamps import mmss
from tspo_edge.redaction import redact

KEY_VARS = ("TSPO_EDGE_API_KEY", "OPENAI_API_KEY")


def api_key_from_env() -> str | None:
    for var in KEY_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def jpeg_data_url(frame: np.ndarray, quality: int = 85) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_content(frames: np.ndarray, times: Sequence[float], question: str, options: Sequence[str],
                 quality: int = 85) -> list[dict]:
    content: list[dict] = []
    for frame, t in zip(frames, times):
        content.append({"type": "text", "text": f"Frame at {mmss(t)}:"})
        content.append({"type": "image_url", "image_url": {"url": jpeg_data_url(frame, quality)}})
    content.append({"type": "text", "text": build_prompt(question, options, times)})
    return content


class OpenAIAnswerer(BaseAnswerer):
    needs_frames = True

    def __init__(self, base_url: str, *, model: str | None = None, timeout: float = 120.0,
                 max_new_tokens: int | None = None, frame_size: int = 448, jpeg_quality: int = 85,
                 concurrency: int = 4, max_retries: int = 0, check: bool = True):
        self._key = api_key_from_env()
        shown = redact(base_url, known=[self._key])
        if not base_url.startswith(("http://", "https://")):
            raise ModelLoadError(f"openai:{shown}: the server URL must start with http:// or https://")
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise ModelLoadError(f"openai:{shown}: timeout must be a positive number of seconds, got {timeout:g}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ModelLoadError(f"openai:{shown}: max_retries must be a whole number >= 0, got {max_retries!r}")
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact(self.base_url, known=[self._key])  # what messages and ids name
        self.timeout = timeout
        self.max_retries = max_retries
        self.client = openai.OpenAI(base_url=self.base_url, api_key=self._key or "EMPTY",
                                    timeout=self.timeout, max_retries=max_retries)
        self.image_size = int(frame_size)
        self.jpeg_quality = int(jpeg_quality)
        self.max_new_tokens = max_new_tokens
        self.concurrency = max(1, int(concurrency))
        self.model = model
        if check or model is None:
            self.model = self._resolve_model(model)
        self.id = f"openai:{self.shown_url}#{self.model}"

    def _fail(self, e: Exception) -> AnswererError:
        """One line naming the (masked) URL; server text is redacted before it is cut to length."""
        if isinstance(e, openai.APITimeoutError):
            tries = 1 + self.max_retries
            msg = (f"no answer within {self.timeout:g} s" if tries == 1 else
                   f"no answer in {tries} tries of {self.timeout:g} s each (over {tries * self.timeout:g} s)")
        elif isinstance(e, openai.APIConnectionError):
            msg = "cannot connect to the server (is it running?)"
        elif isinstance(e, openai.APIStatusError):
            body = " ".join(redact(getattr(e, "message", "") or "", known=[self._key]).split())[:200]
            msg = f"the server answered HTTP {e.status_code}" + (f": {body}" if body else "")
        else:
            msg = f"{type(e).__name__}: {' '.join(redact(e, known=[self._key]).split())[:200]}"
        return AnswererError(f"{self.shown_url}: {msg}")

    def _resolve_model(self, model: str | None) -> str:
        """Checks the server is up (GET /models); without a model name takes the one it serves."""
        try:
            served = [m.id for m in self.client.models.list()]
        except openai.NotFoundError:
            served = []  # a server without /models: trust the name given
            if model is None:
                raise AnswererError(f"{self.shown_url}: the server lists no models; name the model to use")
        except openai.OpenAIError as e:
            raise self._fail(e) from e
        if model is None:
            if not served:
                raise AnswererError(f"{self.shown_url}: the server serves no model; name the model to use")
            return served[0]
        return model

    def answer(self, frames, times, question, options) -> Answer:
        if frames is None or len(frames) == 0:
            raise AnswererError(f"{self.shown_url}: no frames to answer from")
        mc = len(options) >= 2
        try:
            r = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": chat_content(frames, times, question, options,
                                                                   self.jpeg_quality)}],
                temperature=0.0,
                max_tokens=self.max_new_tokens or (16 if mc else 512),
            )
        except openai.OpenAIError as e:
            raise self._fail(e) from e
        try:
            text = (r.choices[0].message.content or "").strip()
        except (AttributeError, IndexError, TypeError) as e:
            raise AnswererError(f"{self.shown_url}: the server's reply has no message") from e
        return Answer(text=text, letter=letter_of(text, options), model_id=self.id)

    def answer_batch(self, items: Sequence[tuple]) -> list[Answer]:
        """Concurrent requests (order kept): the server batches them (vLLM, trtllm-serve)."""
        if len(items) <= 1 or self.concurrency == 1:
            return [self.answer(*it) for it in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(lambda it: self.answer(*it), items))
