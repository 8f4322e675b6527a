"""Splitting a question into the stem the agent sees and its answer options.

TSPO's rule: the temporal agent is given the question text *before* the options;
the MLLM gets the whole multiple-choice question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

LETTERS = "ABCDEFGH"

# "A. text", "A) text", "(A) text", "A: text" at the start of a line.
_LINE_OPTION = re.compile(r"^\s*(?:\(([A-Ha-h])\)|([A-Ha-h])[.):])\s*(\S.*?)\s*$")
# The same markers inside a line ("... ? A. red B. blue"): preceded by start or whitespace.
_INLINE_MARK = re.compile(r"(?:(?<=\s)|^)(?:\(([A-H])\)|([A-H])[.)])\s+")
_OPTIONS_LABEL = re.compile(r"\s*(?:options|choices|candidates)\s*:?\s*$", re.IGNORECASE)


@dataclass
class Question:
    """A question as asked: `stem` is what the agent sees, `options` may be empty (open question)."""

    text: str
    stem: str
    options: list[str] = field(default_factory=list)

    @property
    def letters(self) -> list[str]:
        return option_letters(len(self.options))

    @property
    def multiple_choice(self) -> bool:
        return len(self.options) >= 2


def option_letters(n: int) -> list[str]:
    if n > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {n}")
    return list(LETTERS[:n])


def _strip_label(stem: str) -> str:
    lines = stem.rstrip().splitlines()
    while lines and (not lines[-1].strip() or _OPTIONS_LABEL.fullmatch(lines[-1])):
        lines.pop()
    stem = "\n".join(lines).strip()
    # "…? Options:" on the same line as the question
    return re.sub(r"\s*(?:options|choices)\s*:\s*$", "", stem, flags=re.IGNORECASE).strip()


def _from_lines(text: str) -> tuple[str, list[str]] | None:
    lines = text.splitlines()
    for start, line in enumerate(lines):
        m = _LINE_OPTION.match(line)
        if not m or (m.group(1) or m.group(2)).upper() != "A":
            continue
        options: list[str] = []
        for follow in lines[start:]:
            if not follow.strip():
                continue
            mm = _LINE_OPTION.match(follow)
            if not mm or (mm.group(1) or mm.group(2)).upper() != LETTERS[len(options)]:
                break
            options.append(mm.group(3))
            if len(options) == len(LETTERS):
                break
        if len(options) >= 2:
            return "\n".join(lines[:start]), options
    return None


def _inline(text: str) -> tuple[str, list[str]] | None:
    marks = list(_INLINE_MARK.finditer(text))
    for i, m in enumerate(marks):
        if (m.group(1) or m.group(2)) != "A":
            continue
        chain = [m]
        for nxt in marks[i + 1:]:
            if (nxt.group(1) or nxt.group(2)) == LETTERS[len(chain)]:
                chain.append(nxt)
        if len(chain) < 2:
            continue
        options = [text[a.end(): b.start()].strip() for a, b in zip(chain, chain[1:])]
        options.append(text[chain[-1].end():].strip())
        if all(options):
            return text[: m.start()], options
    return None


def parse_question(text: str, options: Sequence[str] | None = None) -> Question:
    """Split `text` into stem and options.

    Explicit `options` win; otherwise options are parsed from "A. …", "A) …", "(A) …" lines,
    or from inline markers ("Which? A. red B. blue"). Without options the whole text is the stem.
    """
    if text is None or not str(text).strip():
        raise ValueError("the question is empty")
    text = str(text).strip()
    if options:
        opts = [str(o).strip() for o in options]
        if any(not o for o in opts):
            raise ValueError("an answer option is empty")
        option_letters(len(opts))
        parsed = _from_lines(text) or _inline(text)
        stem = parsed[0] if parsed else text
        return Question(text=text, stem=_strip_label(stem) or text, options=opts)
    parsed = _from_lines(text) or _inline(text)
    if parsed is None:
        return Question(text=text, stem=text, options=[])
    stem, opts = parsed
    return Question(text=text, stem=_strip_label(stem) or text, options=opts)


def format_options(options: Sequence[str]) -> str:
    """The options as "A. …" lines."""
    return "\n".join(f"{letter}. {opt}" for letter, opt in zip(option_letters(len(options)), options))


_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE | re.DOTALL)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([A-Ha-h])(?![A-Za-z0-9])")


def parse_answer_letter(text: str | None, n_options: int) -> str | None:
    """The first standalone option letter in an MLLM's reply, upper-case, or None.

    Looks inside `<answer>…</answer>` first (TSPO-10K's format). "A"/"a" used as an
    article ("A man walks…", "it is a dog") does not count; lower-case letters count only
    as the whole reply or in a marker ("b.", "(b)", "b)").
    """
    if not text or n_options <= 0:
        return None
    valid = set(LETTERS[: min(n_options, len(LETTERS))])
    tagged = _TAG.search(text)
    if tagged:
        text = tagged.group(1)
    for m in _STANDALONE.finditer(text):
        ch = m.group(1)
        up = ch.upper()
        if up not in valid:
            continue
        before, after = text[: m.start()], text[m.end():]
        if ch.islower():
            marker = after[:1] in (".", ")", ":") or before.endswith("(")
            whole = text.strip(" \t\n.:()*'\"") == ch
            if not (marker or whole):
                continue
            if ch == "a" and re.match(r"\.\s+[a-z]", after) and before.strip():
                continue  # "... a. nice" is still prose
        elif up == "A" and re.match(r"\s+[a-z]", after) and not re.search(r"(answer|option|choice)\W*(is)?\W*$", before, re.IGNORECASE):
            continue  # "A man …"
        return up
    return None
