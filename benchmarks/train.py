"""Rollout throughput of `tspo-edge train` against the reference's way, same run, same machine.

Toy scale: the `--toy` data set (a needle clip among 12 distractor clips, lite encoder,
lite answerer, G = 8 rollouts of 16 frames). One "sample" is one group of G rollouts
with its rewards; both ways run the same agent, the same draws and the same answerer.

- tspo-edge: embeddings of the 13 clips come from the index; only the chosen frames are
  decoded (the union of the G draws, one decode per source video).
- reference (the paper's trainer): every step decodes the 13 clips of the sample and
  encodes all their frames with the image encoder, then takes the chosen frames from
  the decoded clips.

Timings interleave the two ways (ABAB…) so machine load hits both alike.

    python benchmarks/train.py [--samples 6] [--group 8] [--out /tmp/tspo-bench-train] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tspo_edge.train.data import load_rows  # noqa: E402
from tspo_edge.train.features import indexed_features  # noqa: E402
from tspo_edge.models import load_models  # noqa: E402
from tspo_edge.models.mllm import load_answerer  # noqa: E402
from tspo_edge.questions import parse_answer_letter  # noqa: E402
from tspo_edge.train.rl import accuracy_rewards, temporal_rewards  # noqa: E402
from tspo_edge.train.rollout import VideoFrames, _resize, answer_rollouts, draw  # noqa: E402
from tspo_edge.train.run import encode_questions  # noqa: E402
from tspo_edge.train.samples import build_sample  # noqa: E402
from tspo_edge.train.toy import TOY_FPS, make_toy_data, toy_options  # noqa: E402


def _letters(answers, n_opts):
    return [(a.letter or parse_answer_letter(a.text, n_opts) or "").upper() for a in answers]


def ours(sample, agent, q, frames, answerer, group, gen):
    t0 = time.perf_counter()
    x = torch.from_numpy(sample.x)
    with torch.no_grad():
        s = agent.scores(agent.events(x), x, q, 0.025)
    chosen = draw(s, sample.n, group, gen)
    t1 = time.perf_counter()
    letters = answer_rollouts(sample, chosen, frames, answerer)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, accuracy_rewards(letters, sample.row.answer), temporal_rewards(chosen, sample.mask)


def reference(sample, agent, q, frames, encoder, answerer, group, gen):
    t0 = time.perf_counter()
    imgs = [None] * sample.T
    hw = None
    for vi, v in enumerate(sample.videos):  # decode all frames of the 13 clips
        pos = np.flatnonzero(sample.src == vi)
        got = frames.read(v, sample.times[pos])
        hw = hw or tuple(got.shape[1:3])
        got = _resize(got, hw)
        for p, img in zip(pos, got):
            imgs[p] = img
    video = np.stack(imgs)
    x = torch.from_numpy(np.asarray(encoder.encode_images(video), dtype=np.float32))  # encode them all
    with torch.no_grad():
        s = agent.scores(agent.events(x), x, q, 0.025)
    chosen = draw(s, sample.n, group, gen)
    t1 = time.perf_counter()
    row = sample.row
    items = [(video[sel], sample.timeline[sel], row.question, list(row.options)) for sel in chosen.numpy()]
    letters = _letters(answerer.answer_batch(items), len(row.options))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, accuracy_rewards(letters, row.answer), temporal_rewards(chosen, sample.mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--out", default="/tmp/tspo-bench-train")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    o = toy_options(Path(a.out), group=a.group)
    make_toy_data(Path(a.out) / "toy-data")
    ds = load_rows(o.data, o.videos)
    models = load_models(o.models)
    encoder, agent = models.encoder, models.agent
    agent.eval()
    t = time.perf_counter()
    feats, failed = indexed_features(list(dict.fromkeys(ds.videos + o.pool)), db=o.db, models=models, fps=TOY_FPS)
    index_s = time.perf_counter() - t
    assert not failed, failed
    answerer = load_answerer("lite", encoder=encoder)
    q = torch.from_numpy(encode_questions(ds.rows, encoder)[ds.rows[0].question])
    frames = VideoFrames(size=encoder.image_size)  # no frame cache for either way
    spec = o.cfg.spec
    res = {"ours": [], "reference": []}
    for i in range(a.samples + 1):  # sample 0 warms both up and is not counted
        sample = build_sample(ds.rows[0], feats, o.pool, spec, np.random.default_rng([7, i]))
        for way in ("ours", "reference") if i % 2 == 0 else ("reference", "ours"):
            gen = torch.Generator().manual_seed(i)
            if way == "ours":
                r = ours(sample, agent, q, frames, answerer, a.group, gen)
            else:
                r = reference(sample, agent, q, frames, encoder, answerer, a.group, gen)
            if i:
                res[way].append(r)

    def summarise(rs):
        sel = float(np.sum([r[0] for r in rs]))
        ans = float(np.sum([r[1] for r in rs]))
        return {"samples": len(rs), "features_and_draws_s": sel, "rollouts_s": ans,
                "samples_per_s": len(rs) / (sel + ans), "R_A": float(np.mean([r[2].mean() for r in rs])),
                "R_T": float(np.mean([r[3].mean() for r in rs]))}

    out = {w: summarise(rs) for w, rs in res.items()}
    out["speedup"] = out["ours"]["samples_per_s"] / out["reference"]["samples_per_s"]
    out["features_speedup"] = out["reference"]["features_and_draws_s"] / out["ours"]["features_and_draws_s"]
    out["setup"] = {"group": a.group, "frames_per_rollout": spec.n_specific, "clips": 1 + spec.other_clips,
                    "clip_len": spec.clip_len, "T": int(sample.T), "index_once_s": index_s,
                    "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}"}
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'way':10s} {'samples/s':>10s} {'features+draws s':>17s} {'rollouts s':>11s}")
        for w in ("reference", "ours"):
            r = out[w]
            print(f"{w:10s} {r['samples_per_s']:10.3f} {r['features_and_draws_s']:17.2f} {r['rollouts_s']:11.2f}")
        print(f"speed-up {out['speedup']:.2f}x overall, {out['features_speedup']:.1f}x on features+draws; "
              f"index once: {index_s:.1f} s; {out['setup']}")


if __name__ == "__main__":
    main()
