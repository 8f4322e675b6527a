"""train/: rewards, advantages and loss against hand-computed values; data validation;
dual-style sample assembly; the learning test; exact resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_edge.train.data import DataError, Row, load_rows
from tspo_edge.train.features import MemoryFeatures
from tspo_edge.train.loop import Env, TrainConfig, Trainer
from tspo_edge.train.rl import accuracy_rewards, advantages, tau_at, temporal_rewards, tspo_loss
from tspo_edge.train.rollout import decode_positions
from tspo_edge.train.samples import SampleSpec, build_sample, general_frames
from tspo_edge.models.agent import load_agent

from conftest import pythonpath_with


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is faster than fighting over a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- rewards, advantages, loss

def test_advantages_hand_computed():
    r = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    mean, std = 0.6, np.sqrt(((0.4 ** 2) * 3 + (0.6 ** 2) * 2) / 4)  # unbiased std, as torch.std
    want = (r - mean) / (std + 1e-4)
    np.testing.assert_allclose(advantages(r).numpy(), want, rtol=1e-6)
    assert torch.all(advantages([2.0, 2.0, 2.0]) == 0)   # no preference: no signal
    assert torch.all(advantages([1.0]) == 0)


def test_loss_value_and_gradient_hand_computed():
    s = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, -0.5], dtype=torch.float64, requires_grad=True)
    chosen = torch.tensor([[0, 2], [2, 4], [1, 5]])
    adv = torch.tensor([1.0, -0.5, -0.5], dtype=torch.float64)
    loss = tspo_loss(torch.log_softmax(s, -1), chosen, adv)
    # value: exp(lp - sg(lp)) == 1, so loss = -mean(A)
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-12)
    loss.backward()
    # d/ds_k of -1/(G n) sum_g A_g sum_i log p(i_g) = -1/(G n) sum_g A_g (count_g(k) - n p_k)
    p = torch.softmax(s.detach(), -1).numpy()
    G, n = chosen.shape
    want = np.zeros(6)
    for g in range(G):
        counts = np.bincount(chosen[g].numpy(), minlength=6)
        want += adv[g].item() * (counts - n * p)
    want *= -1.0 / (G * n)
    np.testing.assert_allclose(s.grad.numpy(), want, rtol=1e-10, atol=1e-12)


def test_rewards():
    assert accuracy_rewards(["A", "b", None, "C"], "B").tolist() == [0.0, 1.0, 0.0, 0.0]
    mask = np.zeros(10, bool)
    mask[3:6] = True
    got = temporal_rewards(torch.tensor([[3, 4, 5, 9], [0, 1, 2, 3]]), mask)
    np.testing.assert_allclose(got, [0.75, 0.25])


def test_bad_settings_are_input_errors():
    from tspo_edge.errors import TspoError

    for bad in ({"group": 1}, {"grad_accum": 0}, {"steps": 0}, {"lr": 0.0}):
        with pytest.raises(TspoError, match="--"):
            TrainConfig(**bad)


def test_tau_annealing():
    assert tau_at(0, 100) == pytest.approx(0.025)
    assert tau_at(50, 100) == pytest.approx(0.0175)
    assert tau_at(100, 100) == pytest.approx(0.01)


# ---------------------------------------------------------------- data

GOOD = {"video": "a.mp4", "original_question": "<image>\nWhat is at the start?\nA. sea\nB. forest\nC. city",
        "problem": "<image>\nWhat is at the start?", "solution": "<answer>b</answer>", "type": "specific"}


def _write(tmp_path, rows) -> Path:
    p = tmp_path / "data.jsonl"
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_load_rows_parses_tspo10k(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    ds = load_rows(_write(tmp_path, [GOOD, "", {**GOOD, "type": "general"}]), tmp_path)
    r = ds.rows[0]
    assert (r.question, r.options, r.answer, r.kind, r.line) == (
        "What is at the start?", ("sea", "forest", "city"), "B", "specific", 1)
    assert ds.rows[1].line == 3 and ds.rows[1].kind == "general"
    assert r.video == str((tmp_path / "a.mp4").resolve())


@pytest.mark.parametrize("bad, cause", [
    ("{not json", "not JSON"),
    ({k: v for k, v in GOOD.items() if k != "solution"}, "missing key 'solution'"),
    ({**GOOD, "type": "long"}, "'type'"),
    ({**GOOD, "solution": "b"}, "'solution'"),
    ({**GOOD, "solution": "<answer>e</answer>"}, "only 3 options"),
    ({**GOOD, "original_question": "What is at the start?"}, "no answer options"),
    ([1, 2], "expected a JSON object"),
])
def test_data_errors_name_file_and_line(tmp_path, bad, cause):
    (tmp_path / "a.mp4").write_bytes(b"x")
    p = _write(tmp_path, [GOOD, bad])
    with pytest.raises(DataError) as e:
        load_rows(p, tmp_path)
    assert str(e.value).startswith(f"{p}:2: ") and cause in str(e.value)


def test_missing_videos_reported_once_and_skipped(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    p = _write(tmp_path, [GOOD, {**GOOD, "video": "gone.mp4"}, {**GOOD, "video": "gone.mp4"}])
    ds = load_rows(p, tmp_path)
    assert len(ds.rows) == 1 and ds.skipped == 2
    assert ds.missing == [str((tmp_path / "gone.mp4").resolve())]
    with pytest.raises(DataError, match=rf"{p}:2: video not found"):
        load_rows(p, tmp_path, strict=True)


# ---------------------------------------------------------------- the synthetic environment
# An environment for the RL, not a stand-in for code under test: features with a planted
# event (direction e, orthogonal to the question embedding q, so the clip score alone cannot
# find it) and an oracle MLLM that answers right only when it is shown a frame of the event.

@dataclass
class _Answer:
    text: str
    letter: str | None
    model_id: str = "oracle"


class OracleAnswerer:
    id = "oracle"

    def __init__(self):
        self.calls = 0

    def answer(self, frames, times, question, options):
        self.calls += 1
        seen = bool((frames[..., 0] == 255).any())
        return _Answer("A" if seen else "B", "A" if seen else "B")


class SyntheticFrames:
    """Frames whose red channel says whether their video holds the event."""

    def __init__(self, events: dict[str, bool]):
        self.events, self.reads = events, []

    def read(self, video, times):
        self.reads.append((video, np.asarray(times).copy()))
        f = np.zeros((len(times), 2, 2, 3), np.uint8)
        f[..., 0] = 255 if self.events[video] else 0
        f[..., 1] = np.asarray(times, dtype=np.int64)[:, None, None] % 256
        return f


def synthetic_env(D=64, n_rows=20, n_background=20, seed=0, frames=(30, 60)) -> Env:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=D)
    q /= np.linalg.norm(q)
    e = rng.normal(size=D)
    e -= (e @ q) * q
    e /= np.linalg.norm(e)
    table, events = {}, {}

    def video(name, event):
        T = int(rng.integers(*frames))
        x = (rng.normal(size=(T, D)) / np.sqrt(D) + (e if event else 0)).astype(np.float32)
        table[name] = (np.arange(T, dtype=np.float64) * 2.0, x)
        events[name] = event

    rows = []
    for i in range(n_rows):
        video(f"event{i}.mp4", True)
        rows.append(Row(line=i + 1, video=f"event{i}.mp4", question="What happens in the video?",
                        options=("the event", "nothing"), answer="A", kind="specific"))
    for i in range(n_background):
        video(f"background{i}.mp4", False)
    return Env(rows=rows, features=MemoryFeatures(table), frames=SyntheticFrames(events),
               answerer=OracleAnswerer(), questions={"What happens in the video?": q[None].astype(np.float32)},
               pool=[f"background{i}.mp4" for i in range(n_background)])


SPEC = SampleSpec(clip_len=10, other_clips=12, own_clips=(1, 2), n_specific=8)


# ---------------------------------------------------------------- samples

def test_specific_sample_assembly():
    env = synthetic_env(frames=(60, 300))
    spec = SampleSpec()  # the paper's sizes: clips of 50, 12 foreign clips, 1-4 own clips
    n_owns = set()
    for k in range(12):
        s = build_sample(env.rows[k], env.features, env.pool, spec, np.random.default_rng(k))
        n_own, rest = divmod(int(s.mask.sum()), 50)
        assert rest == 0 and 1 <= n_own <= 4
        n_owns.add(n_own)
        assert s.T == (n_own + 12) * 50 and s.n == 16
        assert env.rows[k].video in s.videos and all(v in env.pool for v in s.videos if v != env.rows[k].video)
        # each position carries its source video and time, and the feature at that time
        for p in range(s.T):
            v = s.videos[s.src[p]]
            t, x = env.features.features(v)
            j = int(np.flatnonzero(t == s.times[p])[0])
            np.testing.assert_array_equal(s.x[p], x[j])
            assert s.mask[p] == (v == env.rows[k].video)
        # clips are contiguous runs of 50 from one source
        runs = s.src.reshape(-1, 50)
        assert (runs == runs[:, :1]).all()
        own_runs = s.mask.reshape(-1, 50)
        assert (own_runs == own_runs[:, :1]).all()
        # own clips draw from the first 128 frames' uniform spread; foreign clips spread over their video
        t0 = env.features.features(env.rows[k].video)[0]
        assert set(s.times[s.mask].tolist()) <= set(t0[general_frames(len(t0), 128)].tolist())
    assert len(n_owns) > 1  # the number of own clips varies


def test_general_frames_at_most_128_uniform():
    assert general_frames(100, 128).tolist() == list(range(100))
    idx = general_frames(1000, 128)
    assert len(idx) == 128 and idx[0] == 0 and idx[-1] == 999 and np.all(np.diff(idx) > 0)
    assert np.ptp(np.diff(idx)) <= 1


def test_chosen_frames_decoded_once_per_source_video():
    env = synthetic_env()
    s = build_sample(env.rows[0], env.features, env.pool, SPEC, np.random.default_rng(0))
    pos = np.arange(0, s.T, 3)
    got = decode_positions(s, np.concatenate([pos, pos]), env.frames)
    assert sorted(got) == sorted(set(pos.tolist()))
    videos = [v for v, _ in env.frames.reads]
    assert len(videos) == len(set(videos)) == len(set(s.src[pos].tolist()))
    for p, img in got.items():  # right video, right time
        assert (img[..., 0] == 255).all() == bool(s.mask[p])
        assert img[0, 0, 1] == int(s.times[p]) % 256


# ---------------------------------------------------------------- learning and resume

def test_agent_learns_to_find_the_event(tmp_path, one_thread):
    env = synthetic_env()
    cfg = TrainConfig(steps=60, lr=2e-3, lr_schedule="constant", spec=SPEC, save_every=0)
    torch.manual_seed(0)
    trainer = Trainer(load_agent("similarity:64"), env, cfg, tmp_path, tensorboard=False)
    summary = trainer.run()
    log = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 60 and summary["steps"] == 60
    chance = np.mean([r["R_T"] for r in log[:5]])
    late = np.mean([r["R_T"] for r in log[-10:]])
    # chance: 1-2 own clips among 13-14 -> about 0.1 of the frames
    assert chance < 0.3, chance
    assert late >= 0.8, (chance, late)
    assert np.mean([r["R_A"] for r in log[-10:]]) >= 0.9
    assert max(r["grad_norm"] for r in log[:10]) > 0 and all(r["lr"] == 2e-3 for r in log)
    assert (tmp_path / "train.png").stat().st_size > 10_000
    # the final checkpoint is a loadable agent with the learned weights
    again = load_agent(summary["checkpoint"])
    for a, b in zip(again.state_dict().values(), trainer.agent.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resumed_run_equals_uninterrupted(tmp_path, one_thread):
    cfg = TrainConfig(steps=6, lr=2e-3, spec=SPEC, save_every=3, grad_accum=2, group=4)
    straight = Trainer(load_agent("similarity:32"), synthetic_env(D=32), cfg, tmp_path / "a", tensorboard=False)
    straight.run()

    first = Trainer(load_agent("similarity:32"), synthetic_env(D=32), cfg, tmp_path / "b", tensorboard=False)
    first.run(steps=3)  # interrupted after the step-3 checkpoint
    torch.manual_seed(1234)  # a resumed process starts with other global RNG states
    np.random.seed(1234)
    resumed = Trainer(load_agent("similarity:32"), synthetic_env(D=32), cfg, tmp_path / "b", tensorboard=False)
    resumed.run(resume=True)
    assert resumed.step == 6
    for (k, a), b in zip(straight.agent.state_dict().items(), resumed.agent.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    la = [json.loads(l) for l in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    strip = lambda recs: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in recs]  # noqa: E731
    assert strip(la) == strip(lb)
    assert straight.opt.state_dict()["state"][0]["step"] == resumed.opt.state_dict()["state"][0]["step"]


def test_schedule_and_step_output(tmp_path, one_thread):
    """Every step runs at lr > 0 (the linear schedule ends at lr / steps, not 0), the log says
    which rate each step ran at, and what moves (gradient norm, entropy), rounded."""
    from tspo_edge.train.progress import format_step

    cfg = TrainConfig(steps=5, lr=1e-3, spec=SPEC, save_every=0, group=4)
    trainer = Trainer(load_agent("similarity:32"), synthetic_env(D=32), cfg, tmp_path, tensorboard=False)
    trainer.run()
    log = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == pytest.approx([1e-3 * (5 - k) / 5 for k in range(5)])
    assert log[-1]["lr"] > 0
    for r in log:  # one sample a step: no gradient exactly when the group's rewards are all equal
        assert (r["grad_norm"] > 0) == (r["reward_std"] > 0), r
    assert all(r["loss"] == pytest.approx(0, abs=1e-6) for r in log)  # why the loss is not shown
    for r in log:  # rounded to 4 significant digits
        for k in ("entropy", "grad_norm", "reward_mean"):
            assert r[k] == float(f"{r[k]:.4g}")
    line = format_step(log[-1])
    assert "loss" not in line and "|grad|" in line and "lr 2.00e-04" in line
    general = dict(log[-1], R_T=None)
    assert "R_T -" in format_step(general) and "None" not in format_step(general)


DP_SCRIPT = '''
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_train import synthetic_env, SPEC
from tspo_edge.train.loop import TrainConfig, Trainer
from tspo_edge.train.dist import Dist
from tspo_edge.models.agent import load_agent

dist = Dist.from_env({device!r})
cfg = TrainConfig(steps=4, lr=2e-3, spec=SPEC, save_every=0, grad_accum=1, group=4)
tr = Trainer(load_agent("similarity:32"), synthetic_env(D=32), cfg, {out!r}, dist=dist, tensorboard=False)
tr.run()
torch.save(tr.agent.state_dict(), {out!r} + f"/rank{{dist.rank}}.pt")
with open({out!r} + f"/rank{{dist.rank}}.backend", "w") as f:
    f.write(f"{{torch.distributed.get_backend()}} {{dist.device.type}}")
'''


def run_data_parallel(tmp_path: Path, device: str | None, env: dict[str, str]) -> list[dict]:
    """torchrun, 2 processes of DP_SCRIPT; -> the two ranks' final state dicts (on the CPU)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "dp.py"
    script.write_text(DP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path), device=device))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], env={**os.environ, "PYTHONPATH": pythonpath_with(Path(__file__).parents[1]), **env},
                       capture_output=True, text=True, timeout=300, cwd=str(Path(__file__).parents[1]))
    assert r.returncode == 0, r.stderr[-2000:]
    return [torch.load(tmp_path / f"rank{i}.pt", map_location="cpu", weights_only=True) for i in range(2)]


def test_data_parallel_equals_one_process_with_accumulation(tmp_path, one_thread):
    """2 processes x 1 sample (accelerate, gloo) == 1 process x 2 accumulated samples.

    On the CPU, whatever GPUs the machine has: they are hidden from the two processes, so that
    neither accelerate nor torch picks NCCL (which a machine with one GPU cannot run two ranks on)."""
    ranks = run_data_parallel(tmp_path, "cpu", {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"})
    assert [(tmp_path / f"rank{i}.backend").read_text() for i in range(2)] == ["gloo cpu"] * 2
    cfg = TrainConfig(steps=4, lr=2e-3, spec=SPEC, save_every=0, grad_accum=2, group=4)
    single = Trainer(load_agent("similarity:32"), synthetic_env(D=32), cfg, tmp_path / "single", tensorboard=False)
    single.run()
    for k, v in single.agent.state_dict().items():
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(ranks[0][k], v, rtol=0, atol=1e-6, msg=k)
    init = load_agent("similarity:32").state_dict()
    assert any((v - init[k]).abs().max() > 1e-5 for k, v in single.agent.state_dict().items())  # it learned
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == 4  # only rank 0 logs


@pytest.mark.gpu
def test_data_parallel_on_two_gpus(tmp_path):
    """One process per GPU (accelerate's choice: NCCL): the ranks stay identical and learn."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"data parallelism on GPUs needs two CUDA GPUs ({torch.cuda.device_count()} here; "
                    "the CPU test above covers gloo)")
    ranks = run_data_parallel(tmp_path, None, {})
    assert [(tmp_path / f"rank{i}.backend").read_text() for i in range(2)] == ["nccl cuda"] * 2
    init = load_agent("similarity:32").state_dict()
    for k, v in ranks[0].items():
        torch.testing.assert_close(v, ranks[1][k], rtol=0, atol=0, msg=k)
    assert any((v - init[k]).abs().max() > 1e-5 for k, v in ranks[0].items())
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 4


# ---------------------------------------------------------------- spans, placebo, feature files

def test_span_rows_parse_and_get_a_temporal_mask(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    q = "<image>\nWhat is shown right after the clock?\nA. a cat\nB. a dog"
    rows = [{"video": "v.mp4", "original_question": q, "solution": "<answer>b</answer>", "type": "general",
             "span": [2, 6]}]
    ds = load_rows(_write(tmp_path, rows), tmp_path)
    assert ds.rows[0].span == (2.0, 6.0)
    feats = MemoryFeatures({ds.rows[0].video: (np.arange(10, dtype=np.float64), np.ones((10, 4), np.float32))})
    s = build_sample(ds.rows[0], feats, [], SampleSpec(), np.random.default_rng(0))
    assert s.mask.tolist() == [False, False, True, True, True, True, False, False, False, False]
    rows[0]["span"] = [6, 2]
    with pytest.raises(DataError, match=r"data.jsonl:1: 'span' must be"):
        load_rows(_write(tmp_path, rows), tmp_path)


def test_placebo_permutes_rewards_across_groups_and_keeps_the_steps(tmp_path, one_thread):
    cfg = TrainConfig(steps=8, lr=2e-3, spec=SPEC, save_every=0, group=4, placebo=True, tau0=1.0, tau1=1.0)
    trainer = Trainer(load_agent("similarity:32"), synthetic_env(D=32), cfg, tmp_path, tensorboard=False)
    true, used = [], []
    real = trainer.placebo_rewards

    def spy(r):
        true.append(np.array(r))
        used.append(real(r))
        return used[-1]

    trainer.placebo_rewards = spy
    summary = trainer.run()
    assert summary["steps"] == 8 and len(true) == 8
    assert not used[0].any()                       # the first group has no previous group: no gradient
    for i in range(1, 8):
        np.testing.assert_array_equal(used[i], true[i - 1])
    log = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    assert log[0]["grad_norm"] == 0
    assert any(u.std() > 0 for u in used) and all((r["grad_norm"] > 0) == (u.std() > 0) for r, u in zip(log, used))


def test_feature_file_round_trip_and_errors(tmp_path):
    from tspo_edge.errors import DataError as DE
    from tspo_edge.train.events import FeatureFrames, load_features, save_features

    table = {"a": (np.arange(3.0), np.eye(3, 4, dtype=np.float32)), "b/c": (np.arange(2.0) * 2, np.ones((2, 4), np.float32))}
    path = save_features(tmp_path / "f.npz", table, encoder_id="enc:1")
    feats, enc = load_features(path, encoder_id="enc:1")
    assert enc == "enc:1" and set(feats.table) == {"a", "b/c"}
    np.testing.assert_array_equal(feats.features("a")[1], table["a"][1])
    np.testing.assert_array_equal(FeatureFrames(feats).read("b/c", np.array([2.0])), np.ones((1, 4)))
    with pytest.raises(DE, match="made by encoder enc:1, this run uses other"):
        load_features(path, encoder_id="other")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DE, match="bad.npz: cannot read the feature file"):
        load_features(tmp_path / "bad.npz")
    with pytest.raises(DE, match="no such feature file"):
        load_features(tmp_path / "gone.npz")
