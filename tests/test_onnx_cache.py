"""The default path is the fast path (issue 21, items 1 and 3): the per-user ONNX cache.

The first command that loads an encoder with torch writes its export folder into the cache
(one line says so); later asks and searches load it with ONNX Runtime, import neither torch
nor transformers, and choose the keyframes the torch runtime chooses. A stale or damaged entry
is rebuilt with one line, a cache that cannot be written leaves the command working (torch,
with a note), two writers at once leave one whole entry, `--runtime torch` keeps torch.

Scores: the ONNX towers compute in float32 as the torch encoders do on the CPU, so a question's
embedding differs from torch's by float rounding only; keyframe scores s = (cos + cos) / tau
(tau = 0.025, so |s| <= 80) agree within SCORE_ATOL and the keyframes are the same frames (on
the lite profile and bikes.mp4 they agreed to the JSON's four decimals).

Runs through the command line: typer's CliRunner for the tiny TSPO-0.4B-shaped folder, fresh
processes where imports are checked and for the lite profile (marked slow). Each test sets its
own cache folder ($TSPO_EDGE_CACHE) and clears $TSPO_EDGE_RUNTIME, which conftest.py sets to
torch for the rest of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_test_video
from test_cli_startup import HEAVY, WRAPPER, env as startup_env
from tiny_models import tiny_clip_folder
from tspo_edge.models.agent import load_agent
from tspo_edge.cli import app
from tspo_edge.models.encoders.onnx import OnnxEncoder
from tspo_edge.models.manifest import read_manifest, verify_files
from tspo_edge.models.onnx_cache import check_entry, lookup, publish, staging_dir

QUESTION = "What colour dominates the start?"
SCORE_ATOL = 2e-3   # keyframe logits, ONNX vs torch (the JSON rounds them to 1e-4)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own; the default runtime (auto for ask and search)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TSPO_EDGE_CACHE", str(folder))
    monkeypatch.delenv("TSPO_EDGE_RUNTIME", raising=False)
    return folder


@pytest.fixture(scope="module")
def tspo(tmp_path_factory):
    """(TSPO-0.4B-shaped folder, its official selector, a video, an index made with --runtime torch)."""
    root = tmp_path_factory.mktemp("onnx-cache")
    folder = tiny_clip_folder(root / "TSPO-0.4B", projection_dim=768, selector=True, seed=0)
    video = write_test_video(root / "clip.mp4", seconds=4, fps=4, size=(64, 48), seed=1)
    db = root / "index.db"
    r = CliRunner().invoke(app, ["index", str(video), "--encoder", str(folder), "--db", str(db), "--device", "cpu",
                                 "--runtime", "torch"])
    assert r.exit_code == 0, r.output
    return folder, load_agent(folder), video, db


def invoke(*args, code: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == code, f"exit {r.exit_code} for {args}:\n{r.output}\n{r.exception!r}"
    return r


def ask_json(folder, video, db, *extra) -> tuple[dict, str]:
    """(the --json answer, stderr) of an ask of the tiny folder."""
    r = invoke("ask", video, QUESTION, "--encoder", folder, "--db", db, "--mllm", "none", "--device", "cpu",
               "--json", *extra)
    return json.loads(r.stdout[r.stdout.index("{"):]), r.stderr


def entries(cache: Path) -> list[Path]:
    root = cache / "onnx"
    return sorted(p for p in root.iterdir()) if root.is_dir() else []


def assert_whole(entry: Path) -> None:
    """Every file the manifest lists is there with its recorded hash."""
    manifest = read_manifest(entry)
    verify_files(entry, {**manifest["models"], **manifest["files"]})


def assert_same_keyframes(a: dict, b: dict) -> None:
    assert [f["index"] for f in a["frames"]] == [f["index"] for f in b["frames"]]
    diff = max(abs(x["score"] - y["score"]) for x, y in zip(a["frames"], b["frames"]))
    assert diff <= SCORE_ATOL, diff
    assert a["models"]["encoder"] == b["models"]["encoder"] and a["models"]["agent"] == b["models"]["agent"]


# ---- the TSPO-0.4B-shaped folder, in this process ----------------------------------------------------


def test_first_ask_writes_the_cache_and_the_next_loads_it(cache, tspo):
    folder, official, video, db = tspo
    torch_answer, _ = ask_json(folder, video, db, "--runtime", "torch")
    assert entries(cache) == []  # --runtime torch keeps torch: no cache written

    first, said = ask_json(folder, video, db)
    assert f"cached ONNX towers for {folder} in {cache / 'onnx'}" in " ".join(said.split()), said
    [entry] = entries(cache)
    assert_whole(entry)
    assert read_manifest(entry)["agent"]["id"] == official.id  # the folder's selector, as the default agent

    second, said = ask_json(folder, video, db)
    assert "cached" not in said and "onnxruntime: text.onnx" in said  # loaded, as --model-dir loads it
    for answer in (first, second):
        assert_same_keyframes(answer, torch_answer)
    assert second["models"]["agent"] == official.id


def test_index_by_default_writes_the_cache_and_an_ask_indexes_with_it(cache, tspo, tmp_path):
    folder, official, _, _ = tspo
    video = write_test_video(tmp_path / "other.mp4", seconds=3, fps=4, size=(64, 48), seed=3)
    r = invoke("index", video, "--encoder", folder, "--db", tmp_path / "a.db", "--device", "cpu")
    assert "cached ONNX towers" in r.stderr
    # an ask that indexes a new video runs the cached image tower and agent: same features as torch
    on_cache, said = ask_json(folder, video, tmp_path / "b.db")
    assert on_cache["indexed_now"] and "image.onnx runs on" in said and "agent.onnx runs on" in said
    on_torch, _ = ask_json(folder, video, tmp_path / "c.db", "--runtime", "torch")
    assert_same_keyframes(on_cache, on_torch)
    assert on_cache["models"]["agent"] == official.id


def test_a_damaged_entry_is_rebuilt_with_one_line(cache, tspo):
    folder, _, video, db = tspo
    ask_json(folder, video, db)
    [entry] = entries(cache)
    text = entry / "text.onnx"
    data = bytearray(text.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: found by the hash check when the tower opens
    text.write_bytes(bytes(data))

    answer, said = ask_json(folder, video, db)
    assert answer["frames"]
    lines = [x for x in said.splitlines() if "ONNX towers" in x]
    assert len(lines) == 1 and lines[0].startswith("rebuilt damaged cached ONNX towers"), said
    [entry] = entries(cache)
    assert_whole(entry)

    (entry / "image.onnx").write_bytes(b"truncated")  # another size: found before anything loads
    _, said = ask_json(folder, video, db)
    assert "rebuilt damaged cached ONNX towers" in said and "image.onnx" in said
    assert_whole(entries(cache)[0])
    _, said = ask_json(folder, video, db)
    assert "ONNX towers" not in said


def test_a_malformed_manifest_is_a_damaged_entry(cache, tspo):
    folder, _, video, db = tspo
    ask_json(folder, video, db)
    [entry] = entries(cache)
    (entry / "manifest.json").write_text('{"version": 1, "encoder": {}, "models": {"image": "image.onnx"}}')
    answer, said = ask_json(folder, video, db)
    assert answer["frames"] and "rebuilt damaged cached ONNX towers" in said, said
    assert_whole(entries(cache)[0])


def test_a_damaged_agent_found_while_indexing_is_rebuilt(cache, tspo, tmp_path):
    folder, official, video, db = tspo
    ask_json(folder, video, db)
    [entry] = entries(cache)
    agent = entry / "agent.onnx"
    data = bytearray(agent.read_bytes())
    data[len(data) // 2] ^= 0xFF
    agent.write_bytes(bytes(data))
    # a new index: the ask indexes the video, with the torch agent in place of the damaged one
    answer, said = ask_json(folder, video, tmp_path / "new.db")
    assert answer["indexed_now"] and answer["models"]["agent"] == official.id
    assert "rebuilt damaged cached ONNX towers" in said and "agent.onnx" in said, said
    assert_whole(entries(cache)[0])


def test_a_stale_entry_is_replaced(cache, tspo, tmp_path):
    folder, _, video, db = tspo
    copy = tiny_clip_folder(tmp_path / "TSPO-0.4B", projection_dim=768, selector=True, seed=0)
    ask_json(copy, video, tmp_path / "x.db")
    [old] = entries(cache)
    os.utime(copy / "config.json", (1e9, 1e9))  # the folder changed: its entry is stale
    _, said = ask_json(copy, video, tmp_path / "x.db")
    assert "replaced stale cached ONNX towers" in said
    [new] = entries(cache)
    assert new != old and check_entry(new, json.loads((new / "cache-key.json").read_text())) is None


def test_no_writable_cache_runs_torch_with_a_note(tmp_path, monkeypatch, tspo):
    folder, _, video, db = tspo
    monkeypatch.delenv("TSPO_EDGE_RUNTIME", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TSPO_EDGE_CACHE", str(blocker / "cache"))  # under a file: cannot be created
    answer, said = ask_json(folder, video, db)
    assert answer["frames"]
    assert f"ONNX towers for {folder} not cached (no writable cache folder" in " ".join(said.split()), said


def test_a_read_only_home_caches_in_the_temporary_directory(tmp_path, monkeypatch, tspo):
    folder, _, video, db = tspo
    monkeypatch.delenv("TSPO_EDGE_RUNTIME", raising=False)
    monkeypatch.delenv("TSPO_EDGE_CACHE", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "home-cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    _, said = ask_json(folder, video, db)
    private = tmp_path / "tmp" / f"tspo-edge-{os.getuid()}"
    assert f"cached ONNX towers for {folder} in {private / 'onnx'}" in " ".join(said.split()), said
    assert oct(private.stat().st_mode & 0o777) == oct(0o700)
    _, said = ask_json(folder, video, db)
    assert "ONNX towers" not in said and "onnxruntime: text.onnx" in said  # found there again


def test_a_linked_temporary_folder_is_not_used(tmp_path, monkeypatch):
    """The temporary directory is shared: a `tspo-edge-<uid>` that is a link (to a folder someone
    else prepared) is neither written nor read."""
    from tspo_edge.models.onnx_cache import writable_root

    monkeypatch.delenv("TSPO_EDGE_CACHE", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "home-cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "planted").mkdir(mode=0o700)
    (tmp_path / "tmp" / f"tspo-edge-{os.getuid()}").symlink_to(tmp_path / "planted")
    root, why = writable_root()
    assert root is None and "not this user's private folder" in why
    assert list((tmp_path / "planted").iterdir()) == []


def test_runtime_torch_from_the_environment_writes_nothing(cache, tspo, monkeypatch):
    folder, _, video, db = tspo
    monkeypatch.setenv("TSPO_EDGE_RUNTIME", "torch")
    _, said = ask_json(folder, video, db)
    assert "ONNX" not in said and entries(cache) == []
    monkeypatch.setenv("TSPO_EDGE_RUNTIME", "onnx")
    r = invoke("ask", video, QUESTION, "--db", db, code=2)
    assert "TSPO_EDGE_RUNTIME=onnx: choose torch or auto" in r.stderr


def test_two_publishers_of_one_entry_leave_one_whole_entry(cache, tspo):
    """Two processes finishing the same entry: the second rename fails, its copy is dropped."""
    folder, _, video, db = tspo
    ask_json(folder, video, db)
    [entry] = entries(cache)
    key = json.loads((entry / "cache-key.json").read_text())
    spec = str(folder)
    late = staging_dir(entry.parent)
    for p in entry.iterdir():  # a second writer's finished copy
        if p.is_file():
            (late / p.name).write_bytes(p.read_bytes())
        else:
            (late / p.name).mkdir()
            for q in p.iterdir():
                (late / p.name / q.name).write_bytes(q.read_bytes())
    assert publish(late, key, spec) == entry
    assert entries(cache) == [entry] and not late.exists()
    assert_whole(entry)
    assert lookup(spec).hit


# ---- fresh processes: imports, and two writers at once -----------------------------------------------


def env_with(cache: Path) -> dict:
    e = startup_env()
    e.pop("TSPO_EDGE_RUNTIME", None)
    e["TSPO_EDGE_CACHE"] = str(cache)
    return e


def cli(*args, env: dict, modules: Path | None = None) -> subprocess.CompletedProcess:
    """`tspo-edge ARGS` in a fresh process; with `modules`, the names it imported are written there."""
    if modules is None:
        cmd = [sys.executable, "-m", "tspo_edge"]
    else:
        (modules.parent / "run_cli.py").write_text(WRAPPER)
        cmd = [sys.executable, str(modules.parent / "run_cli.py"), str(modules)]
    r = subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=900,
                       cwd=modules.parent if modules else None)
    assert r.returncode == 0, f"{args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def answer_of(r: subprocess.CompletedProcess) -> dict:
    return json.loads(r.stdout[r.stdout.index("{"):])


def heavy_imports(modules: Path) -> list[str]:
    names = set(json.loads(modules.read_text())["modules"])
    assert "onnxruntime" in names and "tspo_edge.models.encoders.onnx" in names
    return sorted(m for m in names if m.split(".")[0] in HEAVY)


@pytest.mark.slow
def test_tspo_folder_asks_on_the_cache_without_torch(tspo, tmp_path):
    folder, official, video, _ = tspo
    e, db = env_with(tmp_path / "cache"), tmp_path / "i.db"
    r = cli("index", video, "--encoder", folder, "--db", db, "--device", "cpu", env=e)
    assert "cached ONNX towers" in r.stderr
    r = cli("ask", video, QUESTION, "--encoder", folder, "--db", db, "--mllm", "none", "--json",
            env=e, modules=tmp_path / "modules.json")
    assert heavy_imports(tmp_path / "modules.json") == []
    torch_answer = answer_of(cli("ask", video, QUESTION, "--encoder", folder, "--db", db, "--mllm", "none", "--json",
                                 "--runtime", "torch", env=e))
    assert_same_keyframes(answer_of(r), torch_answer)
    assert torch_answer["models"]["agent"] == official.id


@pytest.mark.slow
def test_two_processes_writing_at_once_leave_one_whole_entry(tspo, tmp_path):
    folder, _, video, _ = tspo
    cache = tmp_path / "cache"
    e = env_with(cache)
    procs = [subprocess.Popen([sys.executable, "-m", "tspo_edge", "index", str(video), "--encoder", str(folder),
                               "--db", str(tmp_path / f"{i}.db"), "--device", "cpu"], env=e,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("cached ONNX towers" in err for _, err in outs)
    [entry] = entries(cache)  # one entry, no staging folder left behind
    assert_whole(entry)
    assert OnnxEncoder(entry).encode_texts([QUESTION]).shape == (1, 768)


@pytest.mark.slow
def test_lite_ask_and_search_on_the_cache_match_torch(real_clips, tmp_path):
    """The lite profile on a real clip: index (writes the cache), then ask with the lite answerer,
    ask --mllm none and search, each in a fresh process without torch, against --runtime torch."""
    video, db, e = real_clips["bikes"], tmp_path / "lite.db", env_with(tmp_path / "cache")
    r = cli("index", video, "--db", db, env=e)
    assert "cached ONNX towers for lite in" in " ".join(r.stderr.split())
    mc = "What are the people doing? A. riding bikes B. swimming C. cooking"
    for args in ((QUESTION, "--mllm", "none"), (mc, "--mllm", "lite")):
        onnx_answer = answer_of(cli("ask", video, *args, "--db", db, "--json", env=e, modules=tmp_path / "m.json"))
        assert heavy_imports(tmp_path / "m.json") == []
        torch_answer = answer_of(cli("ask", video, *args, "--db", db, "--json", "--runtime", "torch", env=e))
        assert_same_keyframes(onnx_answer, torch_answer)
        assert onnx_answer["letter"] == torch_answer["letter"]
    found = answer_of(cli("search", "people riding bikes", "--db", db, "--json", env=e, modules=tmp_path / "s.json"))
    assert heavy_imports(tmp_path / "s.json") == []
    want = answer_of(cli("search", "people riding bikes", "--db", db, "--json", "--runtime", "torch", env=e))
    assert [(m["path"], m["time"]) for m in found["moments"]] == [(m["path"], m["time"]) for m in want["moments"]]


# ---- hashing each tower once ------------------------------------------------------------------------


def test_a_verified_file_is_hashed_again_only_when_it_changes(tmp_path, monkeypatch):
    """verify_files remembers a checked file by its stat (ctime and inode included): the next start
    skips hashing it; a write (same size) or a replacement is hashed again and refused."""
    import time

    import tspo_edge.models.manifest as manifest

    model = tmp_path / "text.onnx"
    model.write_bytes(b"x" * 4096)
    entries = {"text": {"file": "text.onnx", "sha256": manifest.sha256_file(model)}}
    hashed = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p, **kw: hashed.append(Path(p).name) or real(p, **kw))

    manifest.verify_files(tmp_path, entries)
    manifest.verify_files(tmp_path, entries)
    assert hashed == ["text.onnx", "text.onnx"]  # just written: too fresh to be remembered (coarse clocks)

    monkeypatch.setattr(manifest, "RACY_NS", 0)
    manifest.verify_files(tmp_path, entries)
    manifest.verify_files(tmp_path, entries)
    assert hashed == ["text.onnx"] * 3  # remembered after the third check

    time.sleep(0.05)  # past the file system's timestamp granularity
    with open(model, "r+b") as f:  # same size, other content
        f.write(b"y")
    with pytest.raises(manifest.ManifestError, match="sha256 differs"):
        manifest.verify_files(tmp_path, entries)
