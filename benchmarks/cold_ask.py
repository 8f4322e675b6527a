"""Cold `tspo-edge ask`: a new process per question, wall time and peak RSS, torch vs ONNX runtime.

    python benchmarks/cold_ask.py                  # 10-minute 360p video, 5 runs per runtime
    python benchmarks/cold_ask.py --runs 9 --minutes 60

What a user waits for when they type one question: interpreter start, imports, opening the
models an ask needs (the text tower), reading the video's features from the index, scoring,
selection (`--mllm none`: no answerer). The video is generated and indexed once (cached under
benchmarks/out/cold_ask/, with the lite ONNX export); both runtimes then ask the same index.
Runs alternate between the runtimes, after one discarded warm-up run each (so both see the
same page cache and machine load); each run is `python -m tspo_edge ask …` in a fresh
process, its peak RSS and CPU time from wait4's rusage of that child alone. Medians; the torch runtime is
the baseline, and the bare interpreter (`python -c pass`) is measured alongside as the floor.
Results: a Markdown table on stdout, benchmarks/out/cold_ask.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What colour is the screen when the bar passes the middle?"
GOAL = {"seconds": 1.5, "rss_mb": 400.0}  # ONNX runtime, issue 10


def run_child(cmd: list[str], *, env: dict) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, peak RSS in MB, result) of `cmd` in a new process started from ROOT.
    CPU time (user + system) is the figure that a loaded machine disturbs least.

    The child is reaped with os.wait4, whose rusage is that child's alone (RUSAGE_CHILDREN
    would be the largest of all children so far). Output goes to files, so no pipe fills up."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, p.returncode, out.read(), err.read())
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, result  # ru_maxrss: KiB


def child_env(threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads))
    return env


def cli(*args, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "tspo_edge", *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"tspo-edge {' '.join(map(str, args[:2]))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r


def prepare(work: Path, *, minutes: float, height: int, env: dict) -> tuple[Path, Path, Path]:
    """(video, lite ONNX export, index), made once and reused."""
    work.mkdir(parents=True, exist_ok=True)
    video = work / f"video-{minutes:g}min-{height}p.mp4"
    if not video.exists():
        print(f"generating {video.name} …", file=sys.stderr)
        # benchmarks/ask.py's long video, made in a child: this process stays small, because a
        # child's peak RSS on Linux starts from its parent's RSS at fork
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from ask import make_long_video; "
                "make_long_video(Path(sys.argv[2]), minutes=float(sys.argv[3]), height=int(sys.argv[4]))")
        subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(video), str(minutes),
                        str(height)], env=env, check=True)
    edge = work / "edge-lite"
    if not (edge / "manifest.json").exists():
        print(f"exporting the lite encoder and agent to {edge} …", file=sys.stderr)
        cli("export", "--out", edge, env=env)
    db = work / f"index-{video.stem}.db"
    cli("index", video, "--model-dir", edge, "--db", db, env=env)  # skips when already indexed
    return video, edge, db


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="cold asks per runtime (after one warm-up each)")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the generated video")
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the asks")
    a = p.parse_args(argv)
    env = child_env(a.threads)
    video, edge, db = prepare(OUT / "cold_ask", minutes=a.minutes, height=a.height, env=env)

    ask = [sys.executable, "-m", "tspo_edge", "ask", str(video), QUESTION, "--mllm", "none", "--db", str(db), "--json"]
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "ask --runtime torch": ask + ["--runtime", "torch"],
        "ask --model-dir (onnx)": ask + ["--model-dir", str(edge)],
    }
    runs: dict[str, list[dict]] = {k: [] for k in cases}
    load_before = [round(x, 2) for x in os.getloadavg()]
    for i in range(a.runs + 1):  # run 0 of each case warms the page cache and is discarded
        for name, cmd in cases.items():
            wall, cpu, rss, r = run_child(cmd, env=env)
            if r.returncode != 0:
                sys.exit(f"{name} failed ({r.returncode}):\n{r.stderr[-2000:]}")
            rec = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "peak_rss_mb": round(rss, 1)}
            if name.startswith("ask"):
                res = json.loads(r.stdout[r.stdout.index("{"):])
                if res["indexed_now"]:
                    sys.exit(f"{name}: the video was indexed by the ask; the benchmark needs an indexed video")
                rec.update(agent=res["models"]["agent"], encoder=res["models"]["encoder"],
                           work_s=round(sum(v for k, v in res["timings"].items() if k != "total"), 4),
                           frames=len(res["frames"]))
            if i:
                runs[name].append(rec)

    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "peak_rss_mb", "work_s") if k in rs[0]}
           for name, rs in runs.items()}
    base, onnx = med["ask --runtime torch"], med["ask --model-dir (onnx)"]
    agents = {name: {r["agent"] for r in rs} for name, rs in runs.items() if name.startswith("ask")}
    result = {
        "benchmark": "cold_ask",
        "command": " ".join([Path(sys.executable).name, "benchmarks/cold_ask.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "video": {"file": video.name, "minutes": a.minutes, "height": a.height},
        "runs_per_case": a.runs, "threads": a.threads,
        "median": med,
        "ratio_onnx_vs_torch": {"wall": round(onnx["wall_s"] / base["wall_s"], 3),
                                "cpu": round(onnx["cpu_s"] / base["cpu_s"], 3),
                                "peak_rss": round(onnx["peak_rss_mb"] / base["peak_rss_mb"], 3)},
        "goal_onnx": {**GOAL, "met": onnx["wall_s"] < GOAL["seconds"] and onnx["peak_rss_mb"] < GOAL["rss_mb"]},
        "agents": {k: sorted(v) for k, v in agents.items()},
        "runs": runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cold_ask.json").write_text(json.dumps(result, indent=2) + "\n")

    print(f"cold ask on {video.name} ({a.runs} runs each, median; {os.cpu_count()} CPUs, "
          f"load {load_before} before, {result['machine']['load_avg_after']} after)\n")
    print("| process | wall s | CPU s | peak RSS MB | ask work s | wall vs torch | RSS vs torch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, m in med.items():
        work = f"{m['work_s']:.3f}" if "work_s" in m else "-"
        print(f"| {name} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} | {m['peak_rss_mb']:.0f} | {work} | "
              f"{m['wall_s'] / base['wall_s']:.2f} | {m['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")
    g = result["goal_onnx"]
    print(f"\nONNX goal (< {GOAL['seconds']} s and < {GOAL['rss_mb']:.0f} MB): {'met' if g['met'] else 'NOT met'}; "
          f"results: {OUT / 'cold_ask.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
