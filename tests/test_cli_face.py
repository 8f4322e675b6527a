"""The library functions the command line became a thin face of (issue 23, item 2): what cli.py
checked, chose and printed, now callable (and tested) without it; and the one error mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tspo_edge.cli import app
from tspo_edge.errors import InputError
from tspo_edge.media import registry
from tspo_edge.models import ModelSpec
from tspo_edge.pipeline import Sampling


# ---- option checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"runtime": "tensorrt"}, "--runtime tensorrt: choose torch, onnx, auto"),
    ({"runtime": "onnx"}, "--runtime onnx needs --model-dir DIR"),
    ({"runtime": "torch", "model_dir": "."}, "--model-dir runs with --runtime onnx, not torch"),
    ({"model_dir": "no-such-folder"}, "no-such-folder: --model-dir is not a folder"),
    ({"device": "gpu0"}, "--device gpu0: expected cpu, cuda, cuda:N or mps"),
])
def test_model_options_are_refused_naming_the_option(kw, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ModelSpec.from_options(**kw)


def test_model_options_choose_the_runtime(tmp_path, monkeypatch):
    monkeypatch.delenv("TSPO_EDGE_RUNTIME", raising=False)
    assert ModelSpec.from_options(default="auto").runtime == "auto"
    assert ModelSpec.from_options(model_dir=tmp_path).runtime == "onnx"
    assert ModelSpec.from_options(model_dir=tmp_path).model_dir == str(tmp_path)
    monkeypatch.setenv("TSPO_EDGE_RUNTIME", "torch")
    assert ModelSpec.from_options(default="auto").runtime == "torch"
    monkeypatch.setenv("TSPO_EDGE_RUNTIME", "gpu")
    with pytest.raises(InputError, match=r"\$TSPO_EDGE_RUNTIME=gpu: choose torch or auto"):
        ModelSpec.from_options()


@pytest.mark.parametrize("args, message", [
    ((0.0,), "--fps must be a number from 0.001 to"),
    ((1.0, 0), "--max-frames must be a positive whole number"),
    ((1.0, None, "vhs"), "--decoder vhs: not available here"),
])
def test_sampling_options_are_refused_naming_the_option(args, message):
    with pytest.raises(InputError, match=message):
        Sampling.from_options(*args)


def test_sampling_options_build_the_sampling():
    assert Sampling.from_options(2.0, 10) == Sampling(fps=2.0, max_frames=10)


def test_a_decoder_that_cannot_run_here_falls_back_with_one_line(monkeypatch):
    assert registry.choose("pyav") == ("pyav", None)
    monkeypatch.setattr(registry.DECODERS["nvdec"], "cannot_run", lambda: "no NVIDIA GPU (test)")
    assert registry.choose("nvdec") == ("pyav", "nvdec: no NVIDIA GPU (test); decoding with PyAV")


# ---- the one error mapping -------------------------------------------------------------------

def _index_whose(method: str, raises: type[BaseException], tmp_path, monkeypatch) -> Path:
    """An empty index whose Store.<method> raises `raises` (a fault the command did not expect)."""
    import tspo_edge.storage.store as store_mod

    def fault(self, *a, **kw):
        raise raises

    db = tmp_path / "i.db"
    with store_mod.Store(db):
        pass
    monkeypatch.setattr(store_mod.Store, method, fault)
    return db


def test_running_out_of_memory_in_any_command_is_one_line(tmp_path, monkeypatch):
    """MemoryError outside ask was a traceback before the mapping moved into one place."""
    db = _index_whose("check", MemoryError, tmp_path, monkeypatch)
    r = CliRunner().invoke(app, ["check", "--db", str(db)])
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.stderr.strip().splitlines()[-1] == "error: out of memory"


def test_ctrl_c_prints_the_commands_own_line(tmp_path, monkeypatch):
    db = _index_whose("videos", KeyboardInterrupt, tmp_path, monkeypatch)
    r = CliRunner().invoke(app, ["prune", "--db", str(db)])
    assert r.exit_code == 130, (r.output, r.exception)
    assert r.stderr.strip().splitlines()[-1] == "interrupted: nothing was removed"
    r = CliRunner().invoke(app, ["info", "--db", str(db)])
    assert r.exit_code == 130 and r.stderr.strip().splitlines()[-1] == "interrupted"


# ---- indexing: the engine choice -------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"engine": "spark"}, "--engine spark: choose local or ray"),
    ({"engine": "local", "ray_address": "ray://head:10001"}, "--ray-address goes with --engine ray"),
    ({"engine": "ray", "workers": 2}, "--workers is for --engine local"),
    ({"engine": "local", "workers": 0}, "--workers must be a positive whole number"),
])
def test_the_engine_options_are_refused_before_anything_runs(kw, message, tmp_path):
    from tspo_edge.index import check_engine, index_with_engine

    with pytest.raises(InputError, match=message):
        check_engine(**kw)
    with pytest.raises(InputError, match=message):  # models=None: it stops before it needs them
        index_with_engine([tmp_path], db=tmp_path / "i.db", models=None, **kw)
    assert not (tmp_path / "i.db").exists()


def test_one_worker_indexes_in_this_process(make_video, tmp_path, lite_models):
    from tspo_edge.index import index_with_engine

    clip = make_video("a.mp4", seconds=2)
    s = index_with_engine([clip], db=tmp_path / "i.db", models=lite_models(), workers=1)
    assert s.ok and [r.status for r in s.files] == ["indexed"] and type(s).__name__ == "IndexSummary"


# ---- ask: the batch loop and the answerer ----------------------------------------------------

def test_ask_batch_answers_each_line_in_order_and_a_bad_line_costs_itself(make_video, tmp_path, lite_models):
    from tspo_edge.ask import Asker
    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.question_batch import load_batch
    from tspo_edge.storage.store import Store

    clip = make_video("a.mp4", seconds=2)
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "What colour?", "id": "first"}\n'
                 'not json\n'
                 f'{{"question": "Where?", "video": "{tmp_path / "gone.mp4"}"}}\n'
                 '{"question": "When?", "frames": 1}\n')
    with Store(tmp_path / "i.db") as store:
        asker = Asker(store=store, models=lite_models(), answerer=load_answerer("none"))
        got = list(asker.ask_batch(load_batch(f), clip, method="uniform"))
    assert [a.line for a in got] == [1, 2, 3, 4]
    assert [a.error is None for a in got] == [True, False, False, True]
    assert got[0].record["id"] == "first" and got[0].record["method"] == "uniform"
    assert got[1].skipped and got[1].record["line"] == 2
    assert not got[2].skipped and got[2].error.startswith(f"{f}:3: ") and "gone.mp4" in got[2].error
    assert got[2].record["question"] == "Where?" and got[2].record["video"].endswith("gone.mp4")
    assert got[3].record["id"] == 4 and len(got[3].record["frames"]) == 1


def test_a_line_without_a_video_fails_alone(tmp_path, lite_models):
    from tspo_edge.ask import Asker
    from tspo_edge.models.mllm import load_answerer
    from tspo_edge.question_batch import load_batch
    from tspo_edge.storage.store import Store

    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "What colour?"}\n')
    with Store(tmp_path / "i.db") as store:
        asker = Asker(store=store, models=lite_models(), answerer=load_answerer("none"))
        (a,) = asker.ask_batch(load_batch(f))
    assert a.error == f'{f}:1: no "video" on this line, and no VIDEO argument'


class _Models:
    """Models whose encoder records that it was asked for."""

    def __init__(self, encoder):
        self.asked, self._encoder = 0, encoder

    @property
    def encoder(self):
        self.asked += 1
        return self._encoder


def test_one_answerer_loader_touches_the_encoder_for_lite_only(lite_encoder):
    from tspo_edge.models.encoders.memo import MemoEncoder
    from tspo_edge.models.mllm import LiteAnswerer, NoneAnswerer, answerer_for
    from tspo_edge.errors import AnswererError

    m = _Models(lite_encoder)
    assert isinstance(answerer_for("none", m), NoneAnswerer) and m.asked == 0
    with pytest.raises(AnswererError, match="cannot connect"):  # a down server fails before the encoder loads
        answerer_for("openai:http://127.0.0.1:9/v1", m, model="x", timeout=3.0, max_new_tokens=5)
    assert m.asked == 0
    for spec in ("lite", " lite ", "", None):
        assert isinstance(answerer_for(spec, m), LiteAnswerer)
    assert m.asked == 4
    assert isinstance(answerer_for("lite", m, memo=True).encoder, MemoEncoder)


# ---- the store's clean-up and views ----------------------------------------------------------

def test_a_failed_first_use_leaves_no_empty_index(tmp_path):
    from tspo_edge.storage.store import Store, existing_index, removed_if_left_empty

    db = tmp_path / "i.db"
    with pytest.raises(InputError, match="i.db: no such index; hint"):
        existing_index(db, "; hint")
    with pytest.raises(RuntimeError):
        with removed_if_left_empty(db), Store(db):
            raise RuntimeError("failed")
    assert not db.exists() and not list(tmp_path.iterdir())
    with pytest.raises(RuntimeError):  # not new: kept
        with removed_if_left_empty(db, enabled=False), Store(db):
            raise RuntimeError("failed")
    assert existing_index(db) == db
    with pytest.raises(RuntimeError):  # an index that was there before stays
        with removed_if_left_empty(db), Store(db):
            raise RuntimeError("failed")
    assert db.exists()


def test_check_lines_name_each_damage_then_the_verdict():
    from tspo_edge.storage.store import CheckReport

    assert CheckReport(path="i.db", videos=2).lines() == ["i.db: 2 videos checked; ok"]
    r = CheckReport(path="i.db", videos=3, integrity=["page 4 broken"],
                    damaged=[{"video_id": 1, "path": "a.mp4", "problem": "a.mp4: stored features are damaged"}])
    assert r.lines() == ["damaged: page 4 broken", "damaged: a.mp4: stored features are damaged",
                         "i.db: 3 videos checked; 1 damaged video, SQLite integrity check failed"]


def test_the_search_cache_refresh_after_indexing_is_lines(tmp_path):
    from tspo_edge.storage.search_cache import refresh_after_index
    from tspo_edge.storage.store import Store

    assert refresh_after_index(tmp_path / "none.db") == []
    with Store(tmp_path / "i.db"):
        pass
    assert refresh_after_index(tmp_path / "i.db") == []


def test_search_options_are_refused_naming_the_option(tmp_path):
    from tspo_edge.storage.search_filters import filters_from_options

    with pytest.raises(InputError, match="the question is empty"):
        filters_from_options("  ")
    with pytest.raises(InputError, match="--min-score must be a finite number, got nan"):
        filters_from_options("a dog", min_score=float("nan"))
    with pytest.raises(InputError, match="nowhere: --in: no such folder"):
        filters_from_options("a dog", [tmp_path / "nowhere"])
    assert filters_from_options("a dog", [tmp_path], min_score=1.5).min_score == 1.5


def test_needle_reports_are_written_together(tmp_path, monkeypatch):
    from tspo_edge.evaluation import report

    monkeypatch.setattr(report, "plot", lambda result, path: path.write_bytes(b"png") and path)
    result = {"frames": [8], "methods": ["uniform"],
              "summary": [{"method": "uniform", "frames": 8, "hit": 0.5, "recall": 1.0, "accuracy": None}]}
    files = report.write_reports(result, tmp_path / "out")
    assert [f.name for f in files] == ["needle.json", "needle.png", "needle.md"]
    assert all(f.is_file() for f in files) and "| uniform |" in files[2].read_text()


def test_needle_options_are_refused_naming_the_option():
    from tspo_edge.errors import EvalError
    from tspo_edge.evaluation.needle import BenchConfig
    from tspo_edge.evaluation.runner import budgets_from_options

    assert budgets_from_options("8, 16", "uniform,oracle") == ([8, 16], ["uniform", "oracle"])
    with pytest.raises(InputError, match="--frames '8,x': expected a comma-separated list"):
        budgets_from_options("8,x", "uniform")
    with pytest.raises(InputError, match="--frames must be a positive whole number"):
        budgets_from_options("0", "uniform")
    with pytest.raises(EvalError, match="unknown method"):
        budgets_from_options("8", "psychic")
    ok = dict(videos=1, minutes=1.0, seed=0, needles=1, fps=2)
    assert BenchConfig.from_options(**ok) == BenchConfig(videos=1, minutes=1.0, seed=0, needles=1, fps=2)
    with pytest.raises(InputError, match="--video-fps must be a positive whole number"):
        BenchConfig.from_options(**{**ok, "fps": 0})
    with pytest.raises(InputError, match="--minutes must be a number from 0.1"):
        BenchConfig.from_options(**{**ok, "minutes": 0.0})
