"""Does a TSPO agent trained on "what is shown right after A?" beat similarity on unseen footage?

The pre-registered protocol is docs/eval.md, "Event rows at the feature level". Steps:

    python -m benchmarks.learning_events bank  --out benchmarks/out/events --side train
    python -m benchmarks.learning_events bank  --out benchmarks/out/events --side eval
    python -m benchmarks.learning_events zerovar --out benchmarks/out/events
    python -m benchmarks.learning_events train --out benchmarks/out/events --seed 1 [--placebo] --steps 1000
    python -m benchmarks.learning_events eval  --out benchmarks/out/events --seeds 1,2,3
    python -m benchmarks.learning_events report --out benchmarks/out/events
    python -m benchmarks.learning_events rows --out benchmarks/out/events --rows 200 --seed 5   # for tspo-edge train --features

- bank: renders segments (1 frame a second, 320x180) and stores their lite-encoder embeddings:
  train = the 12 training photos (train.synth.TRAIN_SOURCES) and haystack of seeds >= 2**31;
  eval = the nine needle sources (tspo_edge.evaluation.sources.SOURCES) and haystack of seeds < 2**31.
- train: rows spliced from the train bank's FIT photos only (2/3 "right after A", 1/3 scene
  needles; R_A + R_T over the answer's span), one distinct row per step; every --val-every steps the
  agent is scored on fixed validation rows of the 4 VAL photos; the best checkpoint is kept.
  `--placebo`: the same, learning from the previous group's rewards (rewards permuted across groups).
- eval: test rows from the eval bank (never used before), every method, per question.
- report: the primary statistic and its two-level bootstrap interval, the secondaries.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bootstrap import mcnemar, two_level  # noqa: E402
from tspo_edge.models.agent import load_agent, save_agent  # noqa: E402
from tspo_edge.evaluation.sources import HAYSTACK_KINDS, SOURCES, render_haystack, render_needle  # noqa: E402
from tspo_edge.models.mllm import load_answerer  # noqa: E402
from tspo_edge.models import load_models  # noqa: E402
from tspo_edge.scoring import score_frames  # noqa: E402
from tspo_edge.selection import select_frames  # noqa: E402
from tspo_edge.train.events import (Bank, EmbeddedImages, EventRows, FeatureFrames, Scene,  # noqa: E402
                                    load_features, save_features)
from tspo_edge.train.logs import read_log  # noqa: E402
from tspo_edge.train.loop import Env, TrainConfig, Trainer  # noqa: E402
from tspo_edge.train.policy import sample_frames  # noqa: E402
from tspo_edge.train.run import encode_questions  # noqa: E402
from tspo_edge.train.samples import SampleSpec  # noqa: E402
from tspo_edge.train.synth import SEED_BASE, TRAIN_SOURCES, render_photo  # noqa: E402

SIZE = (320, 180)
RENDERS, RENDER_LEN = 3, 20            # renderings per photo, frames each (1 frame a second)
HAYSTACK_SEGS, HAYSTACK_LEN = 20, 30
# Pre-registered split of the 12 training photos (docs/eval.md): fit on 8, choose on 4.
VAL_PHOTOS = ("clock", "gravel", "logo", "stereo_motorcycle")
FIT_PHOTOS = tuple(sorted(set(TRAIN_SOURCES) - set(VAL_PHOTOS)))
VAL_ROWS, VAL_SEED = 150, 9001
TEST_ROWS, TEST_SEED = 540, 424242     # 2/3 "right after A" (about 360), 1/3 scene needles
FRAMES = (8, 16)
BASELINES = ("uniform", "similarity", "aks", "bin-max", "oracle")

# "right after ..." phrases for the evaluation's sources (written from their stems, not tuned).
EVAL_SCENES = {"chelsea": "the resting pet", "astronaut": "the person in the spacesuit",
               "coffee": "the cup on the table", "rocket": "the launch pad",
               "hubble_deep_field": "the view of deep space", "horse": "the black-and-white farm animal",
               "bikes": "the city street", "bigbuckbunny": "the animated animal on the grass",
               "carphone_pristine": "the man sitting in the car"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_scenes(names) -> dict[str, Scene]:
    return {n: Scene(n, TRAIN_SOURCES[n].question, TRAIN_SOURCES[n].scene, TRAIN_SOURCES[n].answer,
                     TRAIN_SOURCES[n].distractors) for n in names}


def eval_scenes() -> dict[str, Scene]:
    return {n: Scene(n, s.question, EVAL_SCENES[n], s.answer, s.distractors) for n, s in SOURCES.items()}


# ---- bank ----------------------------------------------------------------------------------

def make_bank(out: Path, side: str) -> Path:
    encoder = load_models(encoder="lite").encoder
    table: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rng = np.random.default_rng([7, 0 if side == "train" else 1])
    names = sorted(TRAIN_SOURCES) if side == "train" else sorted(SOURCES)
    t0 = time.perf_counter()
    for n in names:
        for k in range(RENDERS):
            r = np.random.default_rng(SEED_BASE + int(rng.integers(2**31))) if side == "train" \
                else np.random.default_rng(int(rng.integers(2**31)))
            frames = render_photo(n, RENDER_LEN, SIZE, r) if side == "train" else render_needle(n, RENDER_LEN, 1, SIZE, r)
            table[f"photo/{n}/{k}"] = (np.arange(RENDER_LEN, dtype=np.float64), encoder.encode_images(frames))
        log(f"{side} {n} ({time.perf_counter() - t0:.0f} s)")
    for k in range(HAYSTACK_SEGS):
        s = SEED_BASE + int(rng.integers(2**31)) if side == "train" else int(rng.integers(2**31))
        frames = render_haystack(HAYSTACK_KINDS[k % len(HAYSTACK_KINDS)], HAYSTACK_LEN, 1, SIZE, np.random.default_rng(s))
        table[f"haystack/{k}"] = (np.arange(HAYSTACK_LEN, dtype=np.float64), encoder.encode_images(frames))
    log(f"{side} haystack ({time.perf_counter() - t0:.0f} s)")
    return save_features(out / f"bank_{side}.npz", table, encoder_id=encoder.id, dtype=np.float32)


def read_bank(out: Path, side: str, names=None) -> Bank:
    feats, _ = load_features(out / f"bank_{side}.npz")
    photos: dict[str, list[np.ndarray]] = {}
    hay = []
    for key, (_, x) in feats.table.items():
        kind, *rest = key.split("/")
        if kind == "photo" and (names is None or rest[0] in names):
            photos.setdefault(rest[0], []).append(x)
        elif kind == "haystack":
            hay.append(x)
    return Bank(photos, hay)


# ---- choosing frames and scoring a question ---------------------------------------------------

class Judge:
    """Scores a selection on an event row: hit (share of frames in the target span), other (share in
    the distracting span: A for "right after A", the other photo for needles), answer correct."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.answerer = load_answerer("lite", encoder=EmbeddedImages(encoder))
        self.q: dict[str, np.ndarray] = {}

    def qvec(self, text: str) -> np.ndarray:
        if text not in self.q:
            self.q[text] = np.asarray(self.encoder.encode_texts([text]), np.float32)
        return self.q[text]

    def choose(self, e, n: int, method: str, z=None) -> np.ndarray:
        if method == "oracle":
            a, b = e.row.span
            inside = np.flatnonzero((e.times >= a) & (e.times < b))
            return inside[np.linspace(0, len(inside) - 1, min(n, len(inside))).round().astype(int)]
        q = self.qvec(e.row.question)
        s = score_frames(e.x if z is None else z, e.x, q)
        return select_frames(s, n, {"similarity": "topk", "agent": "topk"}.get(method, method))

    def score(self, e, idx: np.ndarray) -> dict:
        t = e.times[idx]
        tgt = e.row.span
        dis = e.spans["A"] if e.kind == "after" else e.spans["other"]
        ans = self.answerer.answer(e.x[idx], t, e.row.question, list(e.row.options))
        return {"hit": float(np.mean((t >= tgt[0]) & (t < tgt[1]))),
                "other": float(np.mean((t >= dis[0]) & (t < dis[1]))),
                "correct": bool(ans.letter == e.row.answer)}


def run_methods(rows: EventRows, judge: Judge, agents: dict[str, object], frames=FRAMES,
                baselines=BASELINES) -> list[dict]:
    recs = []
    for qi, e in enumerate(rows.items):
        zs = {k: a.events(e.x) for k, a in agents.items()}
        src = e.sources["B"] if e.kind == "after" else e.sources["needle"]
        for n in frames:
            for m in list(baselines) + list(agents):
                idx = judge.choose(e, n, "agent" if m in agents else m, zs.get(m))
                recs.append({"q": qi, "kind": e.kind, "source": src, "frames": n, "method": m, **judge.score(e, idx)})
    return recs


def val_stat(rows: EventRows, judge: Judge, agent) -> float:
    """The selection criterion: mean hit@8 (agent top-k - similarity top-k) on the validation
    "right after A" rows."""
    d = []
    for e in rows.items:
        if e.kind != "after":
            continue
        z = agent.events(e.x)
        d.append(judge.score(e, judge.choose(e, 8, "agent", z))["hit"] - judge.score(e, judge.choose(e, 8, "similarity"))["hit"])
    return float(np.mean(d))


# ---- zero-variance shares ---------------------------------------------------------------

def zerovar(out: Path, n_rows: int = 240, agent=None, label: str = "untrained") -> dict:
    """Share of GRPO groups (G 8) whose rewards are all equal, per row type, for the old reward
    (R_A only: these are general rows) and the new one (R_A + R_T over the answer's span)."""
    models = load_models(encoder="lite")
    judge = Judge(models.encoder)
    ag = agent or models.trainable_agent()
    rows = EventRows(read_bank(out, "train", FIT_PHOTOS), train_scenes(FIT_PHOTOS), n_rows, seed=777)
    res = {}
    for tau in (0.025, 0.1):
        for kind in ("after", "needle"):
            zv_old, zv_new, distinct = [], [], []
            for i, e in enumerate(rows.items):
                if e.kind != kind:
                    continue
                q = judge.qvec(e.row.question)
                with torch.no_grad():
                    x = torch.from_numpy(e.x)
                    s = ag.scores(ag.events(x), x, torch.from_numpy(q), tau).float()
                gen = torch.Generator().manual_seed(i)
                chosen = [sample_frames(s, 8, gen)[0].numpy() for _ in range(8)]
                ra = np.array([judge.score(e, c)["correct"] for c in chosen], float)
                rt = np.array([judge.score(e, c)["hit"] for c in chosen])
                zv_old.append(ra.std() == 0)
                zv_new.append((ra + rt).std() == 0)
                distinct.append(len({tuple(c) for c in chosen}))
            res[f"tau {tau} {kind}"] = {"rows": len(zv_old), "zero_var_R_A": float(np.mean(zv_old)),
                                        "zero_var_R_A+R_T": float(np.mean(zv_new)), "distinct_sets": float(np.mean(distinct))}
            log(f"{label} tau {tau} {kind}: {res[f'tau {tau} {kind}']}")
    (out / f"zerovar-{label}.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


# ---- training -----------------------------------------------------------------------------

def train(out: Path, seed: int, steps: int, placebo: bool = False, tau0: float = 0.025, tau1: float = 0.01,
          val_every: int = 100) -> dict:
    torch.manual_seed(seed)
    run = out / f"{'placebo' if placebo else 'agent'}{seed}"
    models = load_models(encoder="lite")
    judge = Judge(models.encoder)
    rows = EventRows(read_bank(out, "train", FIT_PHOTOS), train_scenes(FIT_PHOTOS), steps, seed=seed)
    val = EventRows(read_bank(out, "train", VAL_PHOTOS), train_scenes(VAL_PHOTOS), VAL_ROWS, seed=VAL_SEED)
    env = Env(rows=rows.rows, features=rows, frames=FeatureFrames(rows),
              answerer=load_answerer("lite", encoder=EmbeddedImages(models.encoder)),
              questions=encode_questions(rows.rows, models.encoder), pool=[])
    cfg = TrainConfig(steps=steps, group=8, lr=5e-4, seed=seed, tau0=tau0, tau1=tau1, save_every=0,
                      placebo=placebo, spec=SampleSpec(n_general=8))
    agent = models.trainable_agent()
    best = {"step": None, "val": -np.inf, "state": None}
    curve = []
    t0 = time.perf_counter()

    def on_step(rec, total):
        if rec["step"] % val_every == 0 or rec["step"] == total:
            v = val_stat(val, judge, agent)
            curve.append({"step": rec["step"], "val": v, "seconds": round(time.perf_counter() - t0, 1)})
            if v > best["val"]:
                best.update(step=rec["step"], val=v, state=copy.deepcopy(agent.state_dict()))
            log(f"{run.name} step {rec['step']}/{total} val {100 * v:+.1f} (best {100 * best['val']:+.1f} at "
                f"{best['step']}) R_A {rec['R_A']:.2f} R_T {rec['R_T']} ({time.perf_counter() - t0:.0f} s)")

    trainer = Trainer(agent, env, cfg, run, on_step=on_step, tensorboard=False, encoder_id=models.encoder.id)
    summary = trainer.run()
    agent.load_state_dict(best["state"])
    save_agent(agent, run / "best", encoder_id=models.encoder.id)
    recs = read_log(run)
    res = {"run": run.name, "seed": seed, "placebo": placebo, "steps": steps, "tau": [tau0, tau1],
           "best_step": best["step"], "best_val": best["val"], "curve": curve, "wall_s": time.perf_counter() - t0,
           "reward_spread": float(np.mean([r["reward_std"] > 0 for r in recs])),
           "nonzero_grad": float(np.mean([(r.get("grad_norm") or 0) > 0 for r in recs])),
           "summary_seconds": summary["seconds"]}
    (out / f"{run.name}.json").write_text(json.dumps(res, indent=1) + "\n")
    log(f"{run.name}: best step {best['step']} val {100 * best['val']:+.1f}, {res['wall_s']:.0f} s")
    return res


# ---- rows as files, for `tspo-edge train --features` ----------------------------------------

def export_rows(out: Path, n: int, seed: int) -> tuple[Path, Path]:
    """n fit rows as TSPO-10K JSONL (with `span`) and a feature file naming them."""
    feats, enc = load_features(out / "bank_train.npz")
    rows = EventRows(read_bank(out, "train", FIT_PHOTOS), train_scenes(FIT_PHOTOS), n, seed=seed)
    letters = "ABCDEFGH"
    lines = []
    for e in rows.items:
        r = e.row
        opts = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(r.options))
        lines.append(json.dumps({"video": r.video, "original_question": f"<video>\n{r.question}\n{opts}",
                                 "problem": r.question, "solution": f"<answer>{r.answer.lower()}</answer>",
                                 "type": r.kind, "span": list(r.span)}))
    data = out / f"rows{seed}.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return data, save_features(out / f"rows{seed}.npz", rows.table, encoder_id=enc)


# ---- evaluation and report --------------------------------------------------------------------

def evaluate(out: Path, seeds: list[int]) -> Path:
    models = load_models(encoder="lite")
    judge = Judge(models.encoder)
    rows = EventRows(read_bank(out, "eval"), eval_scenes(), TEST_ROWS, seed=TEST_SEED, prefix="test")
    agents = {}
    for s in seeds:
        for kind in ("agent", "placebo"):
            agents[f"{kind}{s}"] = load_agent(str(out / f"{kind}{s}" / "best"))
    t0 = time.perf_counter()
    recs = run_methods(rows, judge, agents)
    path = out / "test.json"
    path.write_text(json.dumps({"seeds": seeds, "rows": TEST_ROWS, "records": recs,
                                "seconds": time.perf_counter() - t0}) + "\n")
    log(f"test: {TEST_ROWS} rows, {len(recs)} records ({time.perf_counter() - t0:.0f} s)")
    return path


def _table(recs, kind, n, method, key):
    sel = sorted((r for r in recs if r["kind"] == kind and r["frames"] == n and r["method"] == method), key=lambda r: r["q"])
    return np.array([float(r[key]) for r in sel]), [r["source"] for r in sel]


def report(out: Path) -> str:
    data = json.loads((out / "test.json").read_text())
    recs, seeds = data["records"], data["seeds"]
    lines = []
    methods = list(dict.fromkeys(r["method"] for r in recs))
    lines.append("| method | " + " | ".join(f"{k} @{n}: hit / other / acc" for k in ("after", "needle") for n in FRAMES) + " |")
    lines.append("| --- |" + " --- |" * (2 * len(FRAMES)))
    for m in methods:
        cells = []
        for k in ("after", "needle"):
            for n in FRAMES:
                cells.append(" / ".join(f"{100 * _table(recs, k, n, m, key)[0].mean():.1f}" for key in ("hit", "other", "correct")))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    res = {}
    for kind, n in (("after", 8), ("after", 16), ("needle", 8), ("needle", 16)):
        sim, src = _table(recs, kind, n, "similarity", "hit")
        for who in ("agent", "placebo"):
            d = {s: _table(recs, kind, n, f"{who}{s}", "hit")[0] - sim for s in seeds}
            est, lo, hi = two_level(d, np.array(src), reps=10000, seed=0)
            per_seed = {s: float(d[s].mean()) for s in seeds}
            res[f"{who} {kind} @{n}"] = {"estimate": est, "ci": [lo, hi], "per_seed": per_seed, "questions": len(sim)}
            simc, _ = _table(recs, kind, n, "similarity", "correct")
            mc = {s: mcnemar(_table(recs, kind, n, f"{who}{s}", "correct")[0], simc) for s in seeds}
            res[f"{who} {kind} @{n}"]["mcnemar"] = mc
    lines.append("")
    lines.append("| hit difference vs similarity top-k | estimate | 95 % interval | per seed | McNemar on accuracy (only agent / only similarity, p) |")
    lines.append("| --- | --- | --- | --- | --- |")
    for k, v in res.items():
        lines.append(f"| {k} ({v['questions']} q) | {100 * v['estimate']:+.1f} | [{100 * v['ci'][0]:+.1f}, {100 * v['ci'][1]:+.1f}] | "
                     + ", ".join(f"{100 * x:+.1f}" for x in v["per_seed"].values()) + " | "
                     + ", ".join(f"{b}/{c} p={p:.2g}" for b, c, p in v["mcnemar"].values()) + " |")
    p = res["agent after @8"]
    win = p["ci"][0] > 0 and all(x > 0 for x in p["per_seed"].values()) \
        and res["placebo after @8"]["ci"][0] <= 0 <= res["placebo after @8"]["ci"][1]
    ni = res["agent needle @8"]["ci"][0] > -0.03
    lines.append("")
    lines.append(f"primary: {'WIN' if win else 'no win'}; needle non-inferiority (margin -3 points): {'met' if ni else 'not met'}")
    md = "\n".join(lines) + "\n"
    (out / "report.md").write_text(md)
    (out / "report.json").write_text(json.dumps({"stats": res, "win": win, "needle_noninferior": ni}, indent=1, default=str) + "\n")
    return md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["bank", "zerovar", "train", "eval", "report", "rows"])
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/events"))
    p.add_argument("--side", choices=["train", "eval"], default="train")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--rows", type=int, default=200, help="rows: how many to write")
    p.add_argument("--placebo", action="store_true")
    p.add_argument("--agent", default=None, help="zerovar: a trained agent folder (default: untrained)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.what == "bank":
        log(f"wrote {make_bank(a.out, a.side)}")
    elif a.what == "zerovar":
        zerovar(a.out, agent=load_agent(a.agent) if a.agent else None,
                label=Path(a.agent).parent.name if a.agent else "untrained")
    elif a.what == "train":
        train(a.out, a.seed, a.steps, a.placebo, val_every=a.val_every)
    elif a.what == "rows":
        data, feats = export_rows(a.out, a.rows, a.seed)
        log(f"wrote {data} and {feats}: tspo-edge train {data} --features {feats}")
    elif a.what == "eval":
        evaluate(a.out, [int(s) for s in a.seeds.split(",")])
    else:
        print(report(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
