"""Encoders: the embedded lite profile on real frames, Hugging Face CLIP/SigLIP loaded by path."""

from __future__ import annotations

import numpy as np
import pytest

from tspo_edge.encoders import Encoder, load_encoder
from tspo_edge.errors import ModelLoadError


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
def lite():
    return load_encoder("lite")


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
    assert bikes[0] > bunny[0] + 0.05, (bikes, bunny)
    assert bunny[1] > bikes[1], (bikes, bunny)


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
