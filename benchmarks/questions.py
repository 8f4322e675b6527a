"""Question parsing time against question length: the parser is linear (issue 25).

    python benchmarks/questions.py            # 1 MB questions; the old parser on 48 KB
    python benchmarks/questions.py --old-kb 24

Each shape is one a user (or a batch line) can send: thousands of option markers, a marker that
restarts a list again and again, long runs of spaces. Prints seconds per parse and the ratio of
the 1 MB time to the 100 KB time (about 10 for a linear parser, about 100 for a quadratic one).
With git available, the parser of the commit before the rewrite (OLD) runs on a smaller input in
the same run, for comparison; it is skipped when that commit cannot be read.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tspo_edge.questions import parse_question  # noqa: E402

OLD = "2e8ef6c"  # the last commit with the regex-per-line parser


def shapes(n: int) -> dict[str, str]:
    return {
        "markers": "Which? " + "A. x " * (n // 5),
        "restarts": "Which? " + "A) x B) y " * (n // 10),
        "spaces": "Which?" + " " * n + "A. red B. blue",
        "lines": "Which?\n" + "A. x\n" * (n // 5),
        "prose": "What happens " * (n // 13) + "?",
    }


def timed(parse, text: str) -> float:
    t = time.perf_counter()
    parse(text)
    return time.perf_counter() - t


def old_parser():
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:tspo_edge/questions.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("old_questions")
    sys.modules["old_questions"] = mod  # dataclasses look their module up
    exec(compile(src, "old_questions.py", "exec"), mod.__dict__)
    return mod.parse_question


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=int, default=1024, help="size of the long question (KB)")
    ap.add_argument("--old-kb", type=int, default=48, help="size given to the old parser (KB); 0 skips it")
    args = ap.parse_args()
    big, small = shapes(args.kb * 1024), shapes(args.kb * 1024 // 10)
    old = old_parser() if args.old_kb else None
    old_in = shapes(args.old_kb * 1024) if old else {}
    old_head = f" {'old ' + str(args.old_kb) + ' KB':>12s}" if old else ""
    print(f"{'shape':10s} {'new 1/10':>10s} {'new full':>10s} {'ratio':>6s}" + old_head)
    for name in big:
        a, b = timed(parse_question, small[name]), timed(parse_question, big[name])
        line = f"{name:10s} {a:9.3f}s {b:9.3f}s {b / max(a, 1e-9):6.1f}"
        if old:
            line += f" {timed(old, old_in[name]):11.3f}s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
