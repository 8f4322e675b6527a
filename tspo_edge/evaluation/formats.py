"""The evaluation files of the TSPO paper: read annotations, write them back with `frame_idx`.

Annotations (a JSON list of objects, or the VLMEvalKit-style TSV):

| benchmark | file | question id | video | options |
| --- | --- | --- | --- | --- |
| lvb      | lvb_val.json   | `id`          | `video_path`        | `candidates` |
| videomme | videomme.json  | `question_id` | `videoID` + ".mp4"  | `options` ("A. ...") |
| mlvu     | mlvu.json      | `question_id` | `video_name`        | `candidates` (also inline in `question`) |
| any, TSV | *.tsv          | `index`       | `video_name`        | `candidates` (a Python list literal) |

LVBench exists only as TSV (`lvbench`). The agent sees the question stem, without options.

Output: the same records, in the same order, each with `frame_idx` appended (or replaced in
place): absolute frame numbers of the native video written as floats, formatted like the
paper's TSPO_*_frameIdx.json files (json indent 1, no trailing newline). Records whose video
is missing get no `frame_idx`, as the paper's own export does.
"""

from __future__ import annotations

import ast
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tspo_edge.errors import AnnotationError
from tspo_edge.questions import parse_question
from tspo_edge.media.video import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Spec:
    name: str                       # the paper's dataset name
    id_key: str
    video: Callable[[dict], str]
    options_key: str
    method: str                     # the paper's selection rule for this benchmark


BENCHMARKS: dict[str, Spec] = {
    "lvb": Spec("LongVideoBench", "id", lambda r: r["video_path"], "candidates", "topk"),
    "videomme": Spec("VideoMME", "question_id", lambda r: f"{r['videoID']}.mp4", "options", "bin-max"),
    "mlvu": Spec("MLVU", "question_id", lambda r: r["video_name"], "candidates", "topk"),
    "lvbench": Spec("LVBench", "index", lambda r: r["video_name"], "candidates", "topk"),
}
TSV_SPEC_KEYS = ("index", "video_name", "question", "candidates")


@dataclass
class EvalItem:
    key: str
    video: str            # as annotated: a file name or a path relative to the video root
    question: str         # the full question text
    query: str            # the stem the agent sees
    options: list[str]
    record: dict          # the annotation record itself (frame_idx is added to it)


def default_method(benchmark: str) -> str:
    """The paper's rule: bin-max for Video-MME, top-k otherwise."""
    if benchmark not in BENCHMARKS:
        raise AnnotationError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[benchmark].method


def _read_tsv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and any(k not in rows[0] for k in TSV_SPEC_KEYS):
        missing = [k for k in TSV_SPEC_KEYS if k not in rows[0]]
        raise AnnotationError(f"{path}: TSV lacks column(s) {', '.join(missing)}")
    return rows


def _tsv_options(path: Path, value: str) -> list[str]:
    try:
        opts = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise AnnotationError(f"{path}: candidates {value[:40]!r} is not a list literal") from None
    if not isinstance(opts, (list, tuple)):
        raise AnnotationError(f"{path}: candidates {value[:40]!r} is not a list")
    return [str(o) for o in opts]


def read_annotations(path: str | Path, benchmark: str) -> list[EvalItem]:
    """The questions of an annotation file (JSON list or TSV) of `benchmark` (see BENCHMARKS)."""
    path = Path(path)
    if benchmark not in BENCHMARKS:
        raise AnnotationError(f"{path}: unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file")
    tsv = path.suffix.lower() == ".tsv"
    if tsv:
        records = _read_tsv(path)
        spec = BENCHMARKS["lvbench"]  # every TSV uses the same columns
    else:
        if benchmark == "lvbench":
            raise AnnotationError(f"{path}: LVBench is read from its TSV form")
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AnnotationError(f"{path}: not JSON ({e})") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise AnnotationError(f"{path}: expected a JSON list of question objects")
        spec = BENCHMARKS[benchmark]
    items = []
    for i, r in enumerate(records):
        try:
            key, video, question = str(r[spec.id_key]), spec.video(r), str(r["question"])
            raw = r[spec.options_key]
        except KeyError as e:
            raise AnnotationError(f"{path}: record {i} has no {e} key; is this {BENCHMARKS[benchmark].name}?") from None
        options = _tsv_options(path, raw) if tsv else [str(o) for o in raw]
        try:
            stem = parse_question(question, options).stem
        except ValueError as e:
            raise AnnotationError(f"{path}: record {i} ({key}): {e}") from None
        items.append(EvalItem(key, str(video), question, stem, options, r))
    return items


def frame_numbers(times: Sequence[float], native_fps: float, frame_count: int | None = None) -> list[float]:
    """Sampled times (s) -> absolute native frame numbers round(t * fps), as floats, in order, unique."""
    idx = np.rint(np.asarray(times, dtype=np.float64) * float(native_fps))
    if frame_count:
        idx = np.clip(idx, 0, frame_count - 1)
    return [float(v) for v in dict.fromkeys(idx.tolist())]


def write_frame_idx(path: str | Path, items: Sequence[EvalItem],
                    frame_idx: Sequence[Sequence[float] | None]) -> Path:
    """Write every record; `frame_idx[i]` (None: leave record i without one) goes to item i."""
    if len(frame_idx) != len(items):
        raise ValueError(f"{len(frame_idx)} frame lists for {len(items)} questions")
    records = []
    for it, fi in zip(items, frame_idx):
        if fi is not None:
            it.record["frame_idx"] = [float(v) for v in fi]
        records.append(it.record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


class VideoFinder:
    """Finds an annotated video under a root: the annotated relative path, the usual
    sub-folders (videos/, data/, video/), then any file with that name (or stem) below."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._by_name: dict[str, Path] | None = None
        self._by_stem: dict[str, Path] = {}

    def _scan(self) -> None:
        self._by_name = {}
        for p in sorted(self.root.rglob("*")):
            if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
                self._by_name.setdefault(p.name, p)
                self._by_stem.setdefault(p.stem, p)

    def find(self, video: str) -> Path | None:
        for sub in ("", "videos", "data", "video"):
            p = self.root / sub / video
            if p.is_file():
                return p
        if self._by_name is None:
            self._scan()
        name = Path(video).name
        return self._by_name.get(name) or self._by_stem.get(Path(name).stem)
