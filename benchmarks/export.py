"""ONNX Runtime against torch, in one run: the agent's event encoder and the encoder towers.

CPU rows always: agent events at d = 768 (T = 3 600 and 10 800 frames, i.e. 1 h and 3 h at
1 fps), the lite encoder's image tower (32 frames, 224 px) and text tower (32 questions),
and a CLIP ViT-B/32-shaped model with random weights (same architecture and cost as
openai/clip-vit-base-patch32, nothing downloaded). Torch and ONNX Runtime get the same
thread count. With a CUDA GPU: torch fp16 on CUDA, ORT CUDA fp16 and ORT TensorRT fp16 rows,
with the card's name.

    python benchmarks/export.py                     # all rows, 5 interleaved repeats, median
    python benchmarks/export.py --no-clip --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import transformers as tf  # noqa: E402

from tspo_edge.models.agent import load_agent, save_agent  # noqa: E402
from tspo_edge.models.agent_onnx import OnnxAgent  # noqa: E402
from tspo_edge.models.encoders import load_encoder  # noqa: E402
from tspo_edge.models.encoders.onnx import OnnxEncoder  # noqa: E402
from tspo_edge.export import export_model  # noqa: E402
from tspo_edge.models import load_models  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import byte_alphabet  # noqa: E402

D = 768
QUESTIONS = [f"what does the person do in scene {i} before the {w} appears?" for i, w in
             zip(range(32), ["dog", "car", "bike", "ball"] * 8)]


def timeit_pair(fn_a, fn_b, repeat: int) -> tuple[float, float]:
    """Median seconds of two functions, runs interleaved (a b, b a, ...) so that load on a shared
    machine hits both alike; one warm-up each (ORT allocations, torch kernels)."""
    fn_a(), fn_b()
    times: dict = {fn_a: [], fn_b: []}
    for i in range(repeat):
        for fn in ((fn_a, fn_b) if i % 2 == 0 else (fn_b, fn_a)):
            t = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t)
    return statistics.median(times[fn_a]), statistics.median(times[fn_b])


def clip_b32(folder: Path) -> Path:
    """A CLIP ViT-B/32-shaped checkpoint with random weights and a byte-level tokenizer."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in byte_alphabet():
            vocab[c + suffix] = len(vocab)
    cfg = tf.CLIPConfig(text_config=dict(vocab_size=49408, bos_token_id=0, eos_token_id=1, pad_token_id=1),
                        vision_config=dict(patch_size=32), projection_dim=512)
    torch.manual_seed(0)
    tf.CLIPModel(cfg).save_pretrained(folder)
    tf.CLIPImageProcessor().save_pretrained(folder)
    tf.CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


def rows_for(name: str, torch_fn, onnx_fn, repeat: int, what: str) -> list[dict]:
    t_torch, t_onnx = timeit_pair(torch_fn, onnx_fn, repeat)
    return [{"model": name, "input": what, "torch_s": t_torch, "onnx_s": t_onnx, "speedup": t_torch / t_onnx}]


def cpu_rows(args, tmp: Path) -> list[dict]:
    prov = ["CPUExecutionProvider"]
    rows = []
    agent = load_agent(f"similarity:{D}")
    torch.nn.init.normal_(agent.mlp[2].weight, std=0.02)  # a non-trivial residual branch
    save_agent(agent, tmp / "agent-ckpt")
    export_model(load_models(agent=str(tmp / "agent-ckpt")), tmp / "agent", with_encoder=False)
    onnx_agent = OnnxAgent(tmp / "agent", providers=prov, threads=args.threads)
    for T in args.T:
        x = np.random.default_rng(T).standard_normal((T, D)).astype(np.float32)
        rows += rows_for("agent events d768", lambda: agent.events(x), lambda: onnx_agent.events(x), args.repeat,
                         f"T={T}")
    frames = np.random.default_rng(0).integers(0, 256, (32, 224, 398, 3), dtype=np.uint8)
    encoders = [("lite", "lite")]
    if args.clip:
        encoders.append(("CLIP ViT-B/32 (random weights)", str(clip_b32(tmp / "clip-b32"))))
    for name, spec in encoders:
        models = load_models(encoder=spec, device="cpu")
        enc = models.encoder
        export_model(load_models(models.spec, agent=f"similarity:{enc.dim}", loaded_encoder=enc), tmp / name[:4])
        onnx_enc = OnnxEncoder(tmp / name[:4], providers=prov, threads=args.threads)
        rows += rows_for(f"{name} image", lambda: enc.encode_images(frames), lambda: onnx_enc.encode_images(frames),
                         args.repeat, "32 frames 224x398")
        rows += rows_for(f"{name} text", lambda: enc.encode_texts(QUESTIONS), lambda: onnx_enc.encode_texts(QUESTIONS),
                         args.repeat, "32 questions")
    return rows


def gpu_rows(args, tmp: Path) -> list[dict]:
    """torch fp16 on CUDA against ORT CUDA fp16 and ORT TensorRT fp16 (agent and lite towers)."""
    have = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p in have]
    if not providers:
        print("GPU present but onnxruntime has no CUDA/TensorRT provider (pip install onnxruntime-gpu)",
              file=sys.stderr)
    export_model(load_models(encoder="lite", agent=f"similarity:{D}"), tmp / "gpu", fp16=True)  # traced on the CPU
    enc = load_encoder("lite", device="cuda")
    agent_gpu = load_agent(f"similarity:{D}").cuda().half()
    frames = np.random.default_rng(0).integers(0, 256, (32, 224, 398, 3), dtype=np.uint8)
    rows = []
    for prov in providers:
        chain = [prov, "CPUExecutionProvider"]
        oa, oe = OnnxAgent(tmp / "gpu", providers=chain), OnnxEncoder(tmp / "gpu", providers=chain)
        label = prov.replace("ExecutionProvider", "")
        for T in args.T:
            x = np.random.default_rng(T).standard_normal((T, D)).astype(np.float32)

            def torch_fn():
                agent_gpu.events(torch.as_tensor(x, device="cuda", dtype=torch.half)).float().cpu()
            rows += [dict(r, model=f"agent events d768 [{label} fp16]") for r in
                     rows_for("", torch_fn, lambda: oa.events(x), args.repeat, f"T={T}")]
        rows += [dict(r, model=f"lite image [{label} fp16]") for r in
                 rows_for("", lambda: enc.encode_images(frames), lambda: oe.encode_images(frames), args.repeat,
                          "32 frames 224x398")]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=[3600, 10800])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-clip", dest="clip", action="store_false", help="skip the CLIP ViT-B/32-shaped model")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    print(f"torch {torch.__version__} ({args.threads} threads), onnxruntime {ort.__version__}, "
          f"repeat {args.repeat}, median", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        rows = [dict(r, device="cpu") for r in cpu_rows(args, Path(d))]
        if torch.cuda.is_available():
            card = torch.cuda.get_device_name(0)
            print(f"GPU: {card}", file=sys.stderr)
            rows += [dict(r, device=card) for r in gpu_rows(args, Path(d))]
    print("| model | input | device | torch (s) | ONNX Runtime (s) | speed-up |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['input']} | {r['device']} | {r['torch_s']:.3f} | {r['onnx_s']:.3f} "
              f"| {r['speedup']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
