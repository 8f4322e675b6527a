"""TSPO-10K training rows: read, validate (file:line errors), resolve videos.

One JSON object a line, as the paper's data:
  video              path relative to --videos
  original_question  "<image>\\nQuestion?\\nA. ...\\nB. ..." (the MLLM sees all of it)
  problem            the question without options (used when the stem cannot be parsed)
  solution           "<answer>a</answer>"
  type               "general" | "specific"
  span               optional [start, end] seconds of the answer's segment: R_T over it (any type)
The agent sees the question stem (the text before the options), the MLLM the stem and options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tspo_edge.errors import DataError
from tspo_edge.jsonl import read_jsonl
from tspo_edge.questions import parse_question

KINDS = ("general", "specific")
REQUIRED = ("video", "original_question", "solution", "type")
_SOLUTION = re.compile(r"^\s*<answer>\s*\(?([A-Ha-h])\)?[.)]?\s*(?:.*?)</answer>\s*$", re.DOTALL)
# Instructions the paper's data appends to questions; neither the agent nor the MLLM needs them twice.
_PROMPTS = ("Please provide your answer by stating the letter followed by the full option.",
            "Please respond with only the letter of the correct answer.")


@dataclass(frozen=True)
class Row:
    """One validated training row."""

    line: int
    video: str            # absolute path (the key for features and decoding)
    question: str         # stem: what the agent's text encoder sees
    options: tuple[str, ...]
    answer: str           # upper-case letter
    kind: str             # general | specific
    span: tuple[float, float] | None = None  # [start, end) s of the answer's segment: R_T on any row


@dataclass
class Dataset:
    rows: list[Row]
    missing: list[str]    # videos named by rows but not found (each once)
    skipped: int          # rows skipped because their video is missing

    @property
    def videos(self) -> list[str]:
        """Distinct videos, in first-seen order."""
        return list(dict.fromkeys(r.video for r in self.rows))


def _clean(text: str) -> str:
    text = text.replace("<image>\n", "").replace("<image>", "").replace("<video>", "")
    for p in _PROMPTS:
        text = text.replace(p, "")
    return text.strip()


def parse_row(obj: object, where: str, videos_dir: Path | None, line: int) -> Row:
    """Validate one decoded JSON line; raise DataError naming `where` (file:line)."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED:
        if key not in obj:
            raise DataError(f"{where}: missing key '{key}'")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise DataError(f"{where}: '{key}' must be a non-empty string")
    kind = obj["type"].strip().lower()
    if kind not in KINDS:
        raise DataError(f"{where}: 'type' is {obj['type']!r}, expected 'general' or 'specific'")
    m = _SOLUTION.match(obj["solution"])
    if not m:
        raise DataError(f"{where}: 'solution' {obj['solution'][:40]!r} is not like '<answer>a</answer>'")
    answer = m.group(1).upper()
    try:
        q = parse_question(_clean(obj["original_question"]))
    except ValueError as e:  # nothing left once <image> and prompts are removed, too many options ...
        raise DataError(f"{where}: 'original_question' cannot be parsed ({e})") from None
    if len(q.options) < 2:
        raise DataError(f"{where}: 'original_question' has no answer options (expected 'A. ...' lines)")
    if ord(answer) - ord("A") >= len(q.options):
        raise DataError(f"{where}: solution '{answer.lower()}' but only {len(q.options)} options")
    stem = q.stem
    if stem == q.text and isinstance(obj.get("problem"), str) and obj["problem"].strip():
        stem = _clean(obj["problem"])
    span = obj.get("span")
    if span is not None:
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, (int, float)) for v in span)
                and 0 <= span[0] < span[1]):
            raise DataError(f"{where}: 'span' must be [start, end] in seconds with 0 <= start < end, got {span!r}")
        span = (float(span[0]), float(span[1]))
    if videos_dir is None:  # --features: the video is a name in the feature file
        key = obj["video"]
    else:
        video = Path(obj["video"])
        key = str((video if video.is_absolute() else videos_dir / video).resolve())
    return Row(line=line, video=key, question=stem, options=tuple(q.options),
               answer=answer, kind=kind, span=span)


def load_rows(path: str | Path, videos_dir: str | Path | None, *, strict: bool = False,
              known: set[str] | None = None) -> Dataset:
    """Read and validate every row up front. Rows whose video is missing are skipped
    (each missing video reported once in `missing`); with `strict` they are an error.
    With `known` (the names in a feature file) a row's video is a name looked up there, not a file."""
    path = Path(path)
    videos_dir = None if known is not None else Path(videos_dir)
    if not path.is_file():
        raise DataError(f"{path}: no such training file")
    if videos_dir is not None and not videos_dir.is_dir():
        raise DataError(f"{videos_dir}: --videos is not a folder")
    rows: list[Row] = []
    missing: dict[str, None] = {}
    skipped = 0
    exists: dict[str, bool] = {}
    for line_no, obj in read_jsonl(path, DataError):
        if isinstance(obj, str):  # the line's error: it is not JSON
            raise DataError(obj)
        where = f"{path}:{line_no}"
        row = parse_row(obj, where, videos_dir, line_no)
        if row.video not in exists:
            exists[row.video] = row.video in known if known is not None else Path(row.video).is_file()
        if not exists[row.video]:
            if strict:
                raise DataError(f"{where}: video not found: {row.video}")
            missing[row.video] = None
            skipped += 1
            continue
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no usable rows" + (f" ({skipped} skipped: videos missing)" if skipped else ""))
    return Dataset(rows=rows, missing=list(missing), skipped=skipped)
