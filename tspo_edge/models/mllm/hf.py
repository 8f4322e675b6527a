"""Any transformers video MLLM (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM2, LLaVA-OneVision …)
through AutoProcessor + AutoModelForImageTextToText and the model's own chat template.

The chosen frames go in as ONE video. Their timestamps go in twice: as text in the prompt
(every model understands that) and as video metadata, which the processors that encode time
(Qwen2.5-VL's fps, Qwen3-VL's and SmolVLM2's timestamps) read instead of assuming uniform sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.video_utils import VideoMetadata

from tspo_edge.models import hub
from tspo_edge.models.device import pick_device, pick_dtype
from tspo_edge.errors import AnswererError, ModelLoadError
from tspo_edge.models.mllm.base import Answer, BaseAnswerer, build_prompt, letter_of

# Frame timestamps are handed to processors as frame indices of a virtual 1 kHz stream,
# so that index / fps gives each frame's time to the millisecond.
_META_FPS = 1000.0


class TransformersAnswerer(BaseAnswerer):
    needs_frames = True

    def __init__(self, source: str | Path, *, device: str | None = None, dtype=None,
                 trust_remote_code: bool = False, max_new_tokens: int | None = None,
                 frame_size: int = 448, batch_size: int = 8, do_sample: bool = False):
        src = str(source)
        local = Path(src).expanduser()
        if not local.exists() and (src.startswith((".", "/", "~")) or src.count("/") > 1 or "\\" in src):
            raise ModelLoadError(f"{src}: no such model folder")
        if local.exists():
            if not (local / "config.json").is_file():
                raise ModelLoadError(f"{src}: not a model folder (no config.json)")
            src, cached = str(local), True
        else:  # a hub id: from the local cache, else after one fast probe of the hub
            cached = hub.local_files_only(src, what="a video MLLM")
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        try:
            self.processor = AutoProcessor.from_pretrained(src, trust_remote_code=trust_remote_code,
                                                           local_files_only=cached)
            self.model = AutoModelForImageTextToText.from_pretrained(
                src, dtype=self.dtype, trust_remote_code=trust_remote_code, local_files_only=cached)
        except Exception as e:  # OSError (missing), ValueError (unknown class, remote code), …
            cause = " ".join(str(e).split())[:300]
            raise ModelLoadError(f"{src}: cannot load a video MLLM ({type(e).__name__}: {cause})") from e
        if getattr(self.processor, "chat_template", None) is None:
            raise ModelLoadError(f"{src}: the processor has no chat template")
        self.model.to(self.device).eval()
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only batch generation
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        self.id = f"hf:{source}"
        self.image_size = int(frame_size)
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, int(batch_size))
        self.do_sample = do_sample
        self._metadata_ok: bool | None = None

    def _text(self, times, question, options) -> str:
        messages = [{"role": "user", "content": [
            {"type": "video"},
            {"type": "text", "text": build_prompt(question, options, times)},
        ]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @staticmethod
    def _metadata(frames, times):
        t = np.asarray(times, dtype=np.float64)
        idx = [int(round(x * _META_FPS)) for x in t]
        dur = float(t.max()) + 1.0 if len(t) else 1.0
        h, w = frames.shape[1:3]
        return VideoMetadata(total_num_frames=int(round(dur * _META_FPS)), fps=_META_FPS, width=int(w),
                             height=int(h), duration=dur, frames_indices=idx)

    def _inputs(self, batch):
        texts = [self._text(t, q, o) for _, t, q, o in batch]
        videos = [np.ascontiguousarray(f) for f, _, _, _ in batch]
        kw = dict(text=texts, videos=videos, padding=True, return_tensors="pt")
        if self._metadata_ok is not False:
            try:
                inputs = self.processor(**kw, video_metadata=[self._metadata(f, t) for f, t, _, _ in batch],
                                        do_sample_frames=False)
                self._metadata_ok = True
                return inputs
            except (TypeError, ValueError):
                if self._metadata_ok:
                    raise
                self._metadata_ok = False  # a processor that takes no metadata: timestamps stay in the text
        return self.processor(**kw)

    def _generate(self, batch) -> list[str]:
        inputs = self._inputs(batch).to(self.device)
        if "pixel_values_videos" in inputs and inputs["pixel_values_videos"].is_floating_point():
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.dtype)
        mc = all(len(o) >= 2 for _, _, _, o in batch)
        max_new = self.max_new_tokens or (16 if mc else 256)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new, do_sample=self.do_sample)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [s.strip() for s in self.processor.batch_decode(new, skip_special_tokens=True)]

    def answer(self, frames, times, question, options) -> Answer:
        return self.answer_batch([(frames, times, question, options)])[0]

    def answer_batch(self, items: Sequence[tuple]) -> list[Answer]:
        answers: list[Answer] = []
        for i in range(0, len(items), self.batch_size):
            batch = [(np.asarray(f), t, q, list(o)) for f, t, q, o in items[i: i + self.batch_size]]
            if any(len(f) == 0 for f, _, _, _ in batch):
                raise AnswererError(f"{self.id}: no frames to answer from")
            try:
                texts = self._generate(batch)
            except (RuntimeError, ValueError) as e:
                raise AnswererError(f"{self.id}: generation failed ({' '.join(str(e).split())[:300]})") from e
            answers += [Answer(text=t, letter=letter_of(t, o), model_id=self.id)
                        for t, (_, _, _, o) in zip(texts, batch)]
        return answers
