"""Tiny models for tests, built offline: a random CLIP checkpoint folder, optionally TSPO-0.4B-shaped.

    from tests.tiny_models import tiny_clip_folder
    folder = tiny_clip_folder(tmp_path / "TSPO-0.4B")                  # CLIP + 768-wide selector.*
    folder = tiny_clip_folder(tmp_path / "clip", projection_dim=24, selector=False)

The folder is what `transformers` saves for a real CLIP checkpoint (config.json, model.safetensors,
preprocessor_config.json, tokenizer.json and friends), so the Hugging Face encoder, the ONNX
export (which needs the fast tokenizer's tokenizer.json) and the agent loader all read it as
they read the real thing. The towers are tiny (width 32, 2 layers, 32 px images, 16 text
tokens); only the projections have the width asked for.

With `selector=True` the folder is laid out like the official TSPO-0.4B release: the agent's
tensors, prefixed `selector.` (and the unused `temporal.ffn_o.*` pair every real checkpoint
carries), sit in the same model.safetensors as the CLIP weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from tspo_edge.models.agent import OFFICIAL_PREFIX, TemporalAgent

IMAGE_SIZE = 32
TEXT_TOKENS = 16
_TOWER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
_MERGES = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("in", "g</w>")]


def byte_alphabet() -> list[str]:
    """The byte-level alphabet of GPT-2 / CLIP BPE: each of the 256 bytes as a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _tokenizer() -> CLIPTokenizer:
    """A fast CLIP BPE tokenizer over every byte (any text tokenises) and a few merges."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in byte_alphabet():
            vocab.setdefault(c + suffix, len(vocab))
    for a, b in _MERGES:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(_MERGES), bos_token="<|startoftext|>",
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                         model_max_length=TEXT_TOKENS)


def _selector(dim: int) -> dict[str, torch.Tensor]:
    """A random agent of width `dim` as TSPO-0.4B stores it (the global RNG is seeded by the caller)."""
    sd = {k: v.detach().clone() for k, v in TemporalAgent(dim).state_dict().items()}
    sd["temporal.ffn_o.weight"] = torch.randn(dim, dim) * dim ** -0.5  # in every real checkpoint, unused
    sd["temporal.ffn_o.bias"] = torch.zeros(dim)
    return {OFFICIAL_PREFIX + k: v.contiguous() for k, v in sd.items()}


def tiny_clip_folder(path, *, projection_dim: int = 768, selector: bool = True, seed: int = 0) -> Path:
    """Write a tiny random CLIP checkpoint (+ image processor + fast tokenizer) to `path` and return it.

    projection_dim: width of the embeddings (768 = CLIP ViT-L/14, as TSPO-0.4B).
    selector: add TSPO-0.4B's `selector.*` agent tensors of that width to model.safetensors.
    seed: the same seed gives the same weights (the caller's torch RNG is left as it was).
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    cfg = CLIPConfig(
        text_config=dict(**_TOWER, vocab_size=len(tok), max_position_embeddings=TEXT_TOKENS,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(**_TOWER, image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(cfg).eval()
        extra = _selector(projection_dim) if selector else {}
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    tok.save_pretrained(folder)
    if extra:
        weights = folder / "model.safetensors"
        save_file({**load_file(str(weights)), **extra}, str(weights), metadata={"format": "pt"})
    return folder
