"""The transformers answerer, driven end to end with a tiny random Qwen2-VL built offline
(a byte-level BPE trained with `tokenizers`, Qwen2VLProcessor, a small Qwen2VLConfig), saved to a
folder and loaded back through AutoProcessor + AutoModelForImageTextToText like a hub model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tspo_edge.errors import ModelLoadError
from tspo_edge.models.mllm import load_answerer

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
PIXELS = 56 * 56  # frames are resized to 56×56: 4×4 patches of 14 px, 2×2 merged -> 4 tokens per 2 frames


def build_tiny_qwen2vl(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["What colour is the car? A. red B. blue C. green D. yellow",
              "Answer with the option's letter from the given choices directly.",
              "The video is given as 8 frames taken at 00:01, 00:02 (mm:ss). The answer is A."] * 4
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    vision = dict(min_pixels=PIXELS, max_pixels=PIXELS, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**vision),
                                 video_processor=Qwen2VLVideoProcessor(**vision),
                                 tokenizer=fast, chat_template=QWEN_TEMPLATE)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="module")
def answerer(tiny_dir):
    """The CPU answerer in float32 (pinned: a CUDA machine would otherwise pick cuda and bf16)."""
    return load_answerer(str(tiny_dir), max_new_tokens=4, device="cpu")


def _frames(seed: int, n: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 90, 160, 3), dtype=np.uint8)


TIMES = [3.0, 61.0, 122.0, 300.0, 301.0, 420.0, 555.0, 599.0]


def test_loads_through_auto_classes_on_cpu(answerer, tiny_dir):
    import torch

    assert type(answerer.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert answerer.device.type == "cpu" and answerer.dtype == torch.float32
    assert answerer.id == f"hf:{tiny_dir}" and answerer.image_size == 448 and answerer.needs_frames


def test_frames_go_in_as_one_video_with_their_timestamps(answerer):
    batch = [(_frames(0), TIMES, "What colour is the car?", ["red", "blue"])]
    inputs = answerer._inputs(batch)
    assert answerer._metadata_ok is True            # the processor took our timestamps as video metadata
    (grid,) = inputs["video_grid_thw"].tolist()    # one video: 8 frames -> 4 temporal patches
    assert grid[0] == 4
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(answerer.model.config.video_token_id) == grid[0] * grid[1] * grid[2] // 4
    text = answerer.processor.batch_decode(inputs["input_ids"])[0]
    assert "00:03, 01:01, 02:02, 05:00, 05:01, 07:00, 09:15, 09:59" in text
    assert "A. red\nB. blue" in text and text.rstrip().endswith("assistant")


def test_generates_greedily_and_the_frames_matter(answerer):
    import torch

    q = ("What colour is the car?", ["red", "blue", "green"])
    a1 = answerer.answer(_frames(1), TIMES, *q)
    a2 = answerer.answer(_frames(1), TIMES, *q)
    assert isinstance(a1.text, str) and a1 == a2    # greedy: same input, same answer
    assert a1.letter in (None, "A", "B", "C")
    with torch.inference_mode():
        logits = [answerer.model(**answerer._inputs([(_frames(s), TIMES, *q)])).logits[0, -1] for s in (1, 2)]
    assert not torch.allclose(logits[0], logits[1])  # the pixels reach the language model


def test_batch_equals_one_by_one(answerer):
    items = [(_frames(s), TIMES, "Where is the dog?", ["left", "right"]) for s in (3, 4, 5)]
    batched = answerer.answer_batch(items)
    assert batched == [answerer.answer(*it) for it in items]


@pytest.mark.gpu
def test_cuda_default_is_reduced_precision_and_agrees_with_cpu(tiny_dir, answerer):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("the CUDA path of the transformers answerer needs a CUDA GPU")
    gpu = load_answerer(str(tiny_dir), max_new_tokens=4)  # no device: the machine's choice
    assert gpu.device.type == "cuda" and gpu.dtype in (torch.bfloat16, torch.float16)
    assert next(gpu.model.parameters()).device.type == "cuda"
    q = ("What colour is the car?", ["red", "blue", "green"])
    a = gpu.answer(_frames(1), TIMES, *q)
    assert isinstance(a.text, str) and a == gpu.answer(_frames(1), TIMES, *q)  # greedy on CUDA too
    with torch.inference_mode():
        logits = []
        for m in (answerer, gpu):
            inputs = m._inputs([(_frames(1), TIMES, *q)]).to(m.device)
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(m.dtype)
            logits.append(m.model(**inputs).logits[0, -1].float().cpu())
    ref, got = logits
    # the same function in reduced precision: on the CPU, bf16 moves these logits by 0.15 % of their
    # range and fp16 by 0.02 % (the pixels matter on CPU: test_generates_greedily_and_the_frames_matter)
    assert (got - ref).abs().max() <= 1e-2 * (ref.max() - ref.min()), (got - ref).abs().max()


def test_missing_or_broken_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_answerer(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_answerer(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_answerer(str(tmp_path))


def test_cli_ask_with_the_tiny_mllm(tiny_dir, real_clips, tmp_path, cli_lite_encoder):
    from typer.testing import CliRunner

    from tspo_edge.cli import app

    db = tmp_path / "ask.db"
    r = CliRunner().invoke(app, ["ask", str(real_clips["bikes"]), "What is shown?\nA. bicycles\nB. a cat",
                                 "--mllm", str(tiny_dir), "--frames", "8", "--json", "--db", str(db),
                                 "--max-new-tokens", "3"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["models"]["answerer"] == f"hf:{tiny_dir}"
    assert d["stem"] == "What is shown?" and d["options"] == ["bicycles", "a cat"]
    assert len(d["frames"]) == 8 and d["indexed_now"] is True
    times = [f["time"] for f in d["frames"]]
    assert times == sorted(times) and all(0 <= t <= 10 for t in times)
    assert {"index", "lookup", "text", "score", "select", "decode", "answer"} <= set(d["timings"])


def test_openai_answerer_through_a_local_server_running_the_tiny_mllm(answerer, monkeypatch):
    """Client and server in one: the server decodes the JPEG data URLs and answers with the tiny
    Qwen2-VL, as vLLM would with a real one."""
    import base64
    import io
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    monkeypatch.setenv("TSPO_EDGE_API_KEY", "k")
    seen = {}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _json(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._json({"object": "list", "data": [{"id": "tiny", "object": "model", "created": 0, "owned_by": "t"}]})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = req["messages"][0]["content"]
            frames = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",")[1]))))
                               for p in parts if p["type"] == "image_url"])
            stamps = [p["text"] for p in parts if p["type"] == "text" and p["text"].startswith("Frame at")]
            seen.update(frames=frames.shape, stamps=stamps)
            reply = seen["reply"] = answerer._generate([(frames, TIMES[: len(frames)], parts[-1]["text"], [])])[0]
            self._json({"id": "1", "object": "chat.completion", "created": 0, "model": req["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": reply}}]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = load_answerer(f"openai:http://127.0.0.1:{httpd.server_port}/v1", max_retries=0)
        ans = client.answer(_frames(7), TIMES, "What colour is the car?", ["red", "blue"])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen["frames"] == (8, 90, 160, 3) and seen["stamps"][0] == "Frame at 00:03:"
    assert ans.text == seen["reply"].strip() and ans.model_id.endswith("#tiny")
