"""Question parsing: the stem the agent sees, the options, and answer letters (R_A reuses it)."""

import pytest

from tspo_edge.mllm.base import build_prompt, mmss
from tspo_edge.questions import option_letters, parse_answer_letter, parse_question


@pytest.mark.parametrize("text", [
    "What colour is the car?\nA. red\nB. blue\nC. green",
    "What colour is the car?\nA) red\nB) blue\nC) green",
    "What colour is the car?\n(A) red\n(B) blue\n(C) green",
    "What colour is the car?\nOptions:\nA. red\nB. blue\nC. green",
    "What colour is the car? A. red B. blue C. green",
    "What colour is the car? (A) red (B) blue (C) green",
])
def test_stem_and_options_are_split(text):
    q = parse_question(text)
    assert q.stem == "What colour is the car?"
    assert q.options == ["red", "blue", "green"]
    assert q.letters == ["A", "B", "C"] and q.multiple_choice


def test_multiword_options_and_blank_lines():
    q = parse_question("Where does the man go\nafter lunch?\n\nA. to the red house\n\nB. home, by bus\n")
    assert q.stem == "Where does the man go\nafter lunch?"
    assert q.options == ["to the red house", "home, by bus"]


def test_open_question_and_false_markers():
    for text in ["What happens at the end?", "Who is Mr. A. Smith?", "Is plan A. better than plan C?"]:
        q = parse_question(text)
        assert q.stem == text and q.options == [] and not q.multiple_choice


def test_explicit_options_win_and_stem_drops_listed_ones():
    q = parse_question("Which one?\nA. x\nB. y", options=["cat", "dog", "bird"])
    assert q.stem == "Which one?" and q.options == ["cat", "dog", "bird"]
    assert parse_question("Which one?", options=["cat", "dog"]).stem == "Which one?"


@pytest.mark.parametrize("bad", ["", "   \n"])
def test_empty_question_is_refused(bad):
    with pytest.raises(ValueError, match="empty"):
        parse_question(bad)


def test_empty_option_is_refused():
    with pytest.raises(ValueError, match="option"):
        parse_question("Which?", options=["a", " "])


@pytest.mark.parametrize("reply,n,letter", [
    ("B", 4, "B"), ("b", 4, "B"), ("(c)", 4, "C"), ("The answer is D.", 4, "D"),
    ("<answer>c</answer>", 4, "C"), ("<think>A or B?</think><answer>b</answer>", 4, "B"),
    ("A man rides a bike, so C.", 4, "C"), ("Answer: A because it is red", 4, "A"),
    ("it is a dog", 4, None), ("E", 4, None), ("E", 5, "E"), ("", 4, None), ("no idea", 4, None),
    ("B", 0, None),
])
def test_parse_answer_letter(reply, n, letter):
    assert parse_answer_letter(reply, n) == letter


def test_option_letters_and_prompt():
    assert option_letters(4) == ["A", "B", "C", "D"]
    p = build_prompt("What colour?", ["red", "blue"], [3.2, 75.0, 3725.0])
    assert "00:03, 01:15, 1:02:05" in p and "A. red\nB. blue" in p and "letter" in p
    assert build_prompt("Why?", [], None) == "Why?"
    assert mmss(59.6) == "01:00"
