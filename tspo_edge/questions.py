"""Splitting a question into the stem the agent sees and its answer options.

TSPO's rule: the temporal agent is given the question text *before* the options;
the MLLM gets the whole multiple-choice question.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

LETTERS = "ABCDEFGH"

# An option marker: "(A)", "A.", "A)", "A:" with a letter A-H, a-h or a digit 1-8, standing alone
# (after whitespace or at the start, followed by whitespace), with the whitespace before it in
# group 1. One pass finds every marker in linear time: fixed-width alternatives, and a whitespace
# run is only entered from its start.
_MARK = re.compile(r"(?<!\s)(\s*)(?:\(([A-Ha-h1-8])\)|([A-Ha-h1-8])([.):]))(?=\s)")
_SECOND = re.compile(r"(?<!\S)(?:\([Bb2]\)|[Bb2][.):])(?=\s)")
_FIRST_ON_LINE = re.compile(r"\n[ \t]*(?:\([Aa1]\)|[Aa1][.):])(?=\s)")
_LABELS = ("options", "choices", "candidates")
_SENTENCE_END = frozenset("?:.!\uff1f\uff1a\u3002")  # what may end the text before a first option


@dataclass
class Question:
    """A question as asked: `stem` is what the agent sees, `options` may be empty (open question).
    `warning`: one line when the text looks as if it has options but none could be read."""

    text: str
    stem: str
    options: list[str] = field(default_factory=list)
    warning: str | None = None

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
    """The stem without a trailing "Options:" / "Choices" label (linear: no backtracking regex)."""
    stem = stem.rstrip()
    low = stem.lower()
    for label in _LABELS:
        for tail in (label + ":", label):
            if low.endswith(tail):
                cut = len(stem) - len(tail)
                if cut == 0 or not stem[cut - 1].isalnum():  # "Options:", not "Zoptions"
                    return stem[:cut].rstrip()
    return stem


class _Mark(NamedTuple):
    start: int
    end: int
    key: tuple[str, str]     # (family: A | a | 1, style: "()" | "." | ")" | ":")
    value: int               # 1 for A / a / 1
    line_start: bool         # only whitespace before it on its line
    opens: bool              # may start a list: at a line start, or after "?", ":", "." or "!"


_KINDS = {**{c: ("1", i) for i, c in enumerate("12345678", 1)}, **{c: ("A", i) for i, c in enumerate("ABCDEFGH", 1)},
          **{c: ("a", i) for i, c in enumerate("abcdefgh", 1)}}


def _chains(text: str, keep: int = 8) -> list[list[_Mark]]:
    """The last `keep` runs of markers of one kind numbered 1, 2, 3 … (at least 2, with text
    between markers), in order of their end. A first option opens a run only at a line start or
    after the end of a sentence ("…? A. red B. blue"), so "step 1. and step 2." is no list.
    One pass; a marker that continues no run is dropped at once."""
    current: dict[tuple[str, str], list[_Mark]] = {}
    done: deque[list[_Mark]] = deque(maxlen=keep)
    ends, nl = _SENTENCE_END, "\n"
    for m in _MARK.finditer(text):
        ws, paren, ch, style = m.groups()
        family, value = _KINDS[paren or ch]
        key = (family, "()" if paren else style)
        chain = current.get(key)
        if value != 1 and (chain is None or value != len(chain) + 1):
            continue
        start = m.start()
        if not ws and start:
            continue  # glued to the word before it ("plan.A.")
        line_start = start == 0 or nl in ws
        opens = line_start or text[start - 1] in ends
        mk = _Mark(start + len(ws), m.end(), key, value, line_start, opens)
        if value == 1:
            if not opens:
                continue
            if chain is not None and len(chain) >= 2:
                done.append(chain)
            current[key] = [mk]
        elif mk.start > chain[-1].end:
            chain.append(mk)  # mk.start is after its whitespace: the option before it has text
    return sorted([*done, *(c for c in current.values() if len(c) >= 2)], key=lambda c: c[-1].start)[-keep:]


def _split(text: str, chain: list[_Mark]) -> list[str] | None:
    """The option texts of a chain (each up to the next marker; the last up to the end of its line
    when every marker starts a line, else to the end), or None when one of them is empty."""
    end = len(text)
    if all(m.line_start for m in chain):
        nl = text.find("\n", chain[-1].end)
        end = nl if nl >= 0 else end
    bounds = [m.start for m in chain[1:]] + [end]
    options = [" ".join(text[m.end:b].split()) for m, b in zip(chain, bounds)]
    return options if all(options) else None


def _parse(text: str) -> tuple[str, list[str]] | None:
    if not _SECOND.search(text):
        return None  # no second marker, no list: the walk over the markers is skipped
    for chain in reversed(_chains(text)):  # the options are the last list in the text
        options = _split(text, chain)
        if options is not None:
            return text[: chain[0].start], options
    return None


def _looks_like_options(text: str) -> bool:
    """A line (not the first) starting with a first-option marker, or an "Options:" label."""
    if _FIRST_ON_LINE.search(text):
        return True
    low = text.lower()
    return any(f"{label}:" in low for label in _LABELS)


def parse_question(text: str, options: Sequence[str] | None = None) -> Question:
    """Split `text` into stem and options, in time linear in its length.

    Explicit `options` win; otherwise options are read from markers numbered in sequence —
    "A. …", "A) …", "(A) …", "A: …", "1. …", "1) …", "a) …" — one per line or inline after the
    question ("Which? A. red B. blue"): at least two, of one kind, starting at A, a or 1. The
    options never stay in the stem. Without options the whole text is the stem (with a
    `warning` when it looks as if it had options that could not be read).
    """
    if text is None or not str(text).strip():
        raise ValueError("the question is empty")
    text = str(text).strip()
    parsed = _parse(text)
    if options:
        opts = [str(o).strip() for o in options]
        if any(not o for o in opts):
            raise ValueError("an answer option is empty")
        option_letters(len(opts))
        stem = parsed[0] if parsed else text
        return Question(text=text, stem=_strip_label(stem) or text, options=opts)
    if parsed is None:
        warning = None
        if _looks_like_options(text):
            warning = ("the question looks as if it has answer options, but none could be read "
                       "(expected 'A. …', '(A) …' or '1) …' in sequence, at least two); asked as an open question")
        return Question(text=text, stem=text, options=[], warning=warning)
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
