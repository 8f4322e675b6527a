"""The paper's evaluation formats: reading annotations (JSON and TSV), writing frame_idx JSON, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import HAS_TORCH

from tspo_edge.evaluation.formats import (AnnotationError, VideoFinder, default_method, frame_numbers,
                                          read_annotations, write_frame_idx)

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "eval-formats"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="reference eval-format samples not present")

PAIRS = [("lvb_val.sample.json", "TSPO_LongVideoBench_frameIdx.sample.json", "lvb"),
         ("videomme.sample.json", "TSPO_VideoMME_frameIdx.sample.json", "videomme"),
         ("mlvu.sample.json", "TSPO_MLVU_frameIdx.sample.json", "mlvu")]


@needs_ref
@pytest.mark.parametrize("annotations,reference,bench", PAIRS)
def test_writing_frame_idx_reproduces_the_papers_files_byte_for_byte(tmp_path, annotations, reference, bench):
    items = read_annotations(REF / annotations, bench)
    ref_text = (REF / reference).read_text()
    ref = json.loads(ref_text)
    assert len(items) == len(ref) == 3
    out = write_frame_idx(tmp_path / "out.json", items, [r["frame_idx"] for r in ref])
    assert out.read_text() == ref_text  # same keys, order, float formatting, indentation


@needs_ref
def test_read_json_annotations():
    lvb = read_annotations(REF / "lvb_val.sample.json", "lvb")
    assert [i.key for i in lvb] == ["86CxyhFV9MI_0", "86CxyhFV9MI_1", "9PD3ciudpIE_0"]
    assert lvb[0].video == "86CxyhFV9MI.mp4" and len(lvb[0].options) == 4
    assert lvb[0].query == lvb[0].question
    mme = read_annotations(REF / "videomme.sample.json", "videomme")
    assert mme[1].video == "fFjv93ACGo8.mp4" and mme[1].key == "001-2"
    assert mme[1].query == "What is the genre of this video?"
    mlvu = read_annotations(REF / "mlvu.sample.json", "mlvu")
    # MLVU's question carries its options inline: the agent sees the stem only
    assert mlvu[0].query == "What does the hand coming out of the computer do?"
    assert mlvu[0].options[0] == "Delivers a product"
    assert default_method("videomme") == "bin-max" and default_method("lvb") == default_method("mlvu") == "topk"


@needs_ref
@pytest.mark.parametrize("name,bench", [("LongVideoBench.sample.tsv", "lvb"), ("VideoMME.sample.tsv", "videomme"),
                                            ("MLVU.sample.tsv", "mlvu"), ("LVBench.sample.tsv", "lvbench")])
def test_read_tsv_annotations(tmp_path, name, bench):
    items = read_annotations(REF / name, bench)
    assert len(items) == 3
    for it in items:
        assert len(it.options) == 4 and it.video.endswith(".mp4")
        assert it.query == it.question  # TSV questions carry no options
        assert it.record["candidates"].startswith("[")  # the record is kept as read
    assert len({it.key for it in items}) == 3
    out = write_frame_idx(tmp_path / "o.json", items, [[0.0, 30.0], None, [60.0]])
    back = json.loads(out.read_text())
    assert back[0]["frame_idx"] == [0.0, 30.0] and "frame_idx" not in back[1]
    assert list(back[0])[:-1] == list(items[0].record)[:-1] and list(back[0])[-1] == "frame_idx"


def test_frame_numbers():
    assert frame_numbers([0.0, 1.0, 2.5, 10.0], 29.97) == [0.0, 30.0, 75.0, 300.0]
    assert frame_numbers([0.0, 1.0, 2.0], 25.0, frame_count=40) == [0.0, 25.0, 39.0]
    assert frame_numbers([0.0, 0.01], 30.0) == [0.0]  # never the same frame twice
    assert all(isinstance(v, float) for v in frame_numbers([3], 24.0))


def test_bad_annotations_are_named(tmp_path):
    with pytest.raises(AnnotationError, match="no such annotation file"):
        read_annotations(tmp_path / "none.json", "lvb")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "q?", "videoID": "x", "options": ["a", "b"], "question_id": "1"}]))
    with pytest.raises(AnnotationError, match=r"bad.json: record 0 has no 'id' key"):
        read_annotations(bad, "lvb")
    assert read_annotations(bad, "videomme")[0].video == "x.mp4"
    with pytest.raises(AnnotationError, match="unknown benchmark"):
        read_annotations(bad, "egoschema")
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match="not JSON"):
        read_annotations(bad, "lvb")


def test_video_finder(tmp_path):
    (tmp_path / "video" / "1_plotQA").mkdir(parents=True)
    (tmp_path / "video" / "1_plotQA" / "movie101_66.mp4").write_bytes(b"x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fFjv93ACGo8.mkv").write_bytes(b"x")
    f = VideoFinder(tmp_path)
    assert f.find("movie101_66.mp4") == tmp_path / "video" / "1_plotQA" / "movie101_66.mp4"
    assert f.find("fFjv93ACGo8.mp4") == tmp_path / "data" / "fFjv93ACGo8.mkv"  # by stem
    assert f.find("absent.mp4") is None


@needs_ref
@pytest.mark.skipif(not HAS_TORCH, reason="the lite encoder needs torch (the torch-free job runs the rest of this module)")
def test_eval_frames_cli_end_to_end(tmp_path, make_video, cli_lite_encoder):
    """One of the two LongVideoBench sample videos exists: its questions get frame_idx, the other is listed."""
    from typer.testing import CliRunner

    from tspo_edge.cli import app
    from tspo_edge.storage.store import Store

    root = tmp_path / "videos"
    root.mkdir()
    make_video("86CxyhFV9MI.mp4", seconds=12, fps=10)
    (tmp_path / "86CxyhFV9MI.mp4").rename(root / "86CxyhFV9MI.mp4")
    out, db = tmp_path / "TSPO_LongVideoBench_frameIdx.json", tmp_path / "i.db"
    r = CliRunner().invoke(app, ["eval", "frames", str(REF / "lvb_val.sample.json"), "--benchmark", "lvb",
                                 "--video-root", str(tmp_path), "--out", str(out), "--frames", "4",
                                 "--db", str(db), "--json"])
    assert r.exit_code == 1, r.output  # partial: one video missing
    assert "missing video 9PD3ciudpIE.mp4" in r.stderr
    summary = json.loads(r.stdout)
    assert (summary["written"], summary["questions"], summary["method"]) == (2, 3, "topk")
    got = json.loads(out.read_text())
    ref = json.loads((REF / "TSPO_LongVideoBench_frameIdx.sample.json").read_text())
    assert [list(g) for g in got[:2]] == [list(x) for x in ref[:2]]  # same keys in the same order
    assert "frame_idx" not in got[2]
    with Store(db, readonly=True) as s:
        row = s.find_video(root / "86CxyhFV9MI.mp4")
        times = s.load_features(row.id).times
    assert row.fps == pytest.approx(10.0)
    stored = {round(t * row.fps) for t in times}
    for g in got[:2]:
        fi = g["frame_idx"]
        assert len(fi) == 4 and fi == sorted(fi) and all(isinstance(v, float) for v in fi)
        assert set(fi) <= stored  # absolute native frame numbers of frames the index sampled
