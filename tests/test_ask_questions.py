"""Question parsing: the stem the agent sees, the options, and answer letters (R_A reuses it)."""

import pytest

from tspo_edge.models.mllm.base import build_prompt
from tspo_edge.timestamps import mmss
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
    assert mmss(59.6) == "00:59"


def test_timestamps_floor_as_players_and_the_web_page_do():
    """One formatter for the prompt, the CLI and /api/search (the CLI rounded 73.6 s to 01:14 while
    the API truncated it to 01:13): the second the moment falls in, as web/app.js's mmss shows it."""
    assert [mmss(t) for t in (73.6, 73.0, 0.99, 3599.9, 3725.5, -2.0)] == [
        "01:13", "01:13", "00:00", "59:59", "1:02:05", "00:00"]


# ---- options in every common form (issue 22 item 1) -------------------------------------------

OPTS = ["riding bicycles", "swimming", "cooking"]


@pytest.mark.parametrize("text", [
    "What are the people doing? 1) riding bicycles 2) swimming 3) cooking",
    "What are the people doing? 1. riding bicycles 2. swimming 3. cooking",
    "What are the people doing?\n1. riding bicycles\n2. swimming\n3. cooking",
    "What are the people doing?\n(1) riding bicycles\n(2) swimming\n(3) cooking",
    "What are the people doing? a) riding bicycles b) swimming c) cooking",
    "What are the people doing?\na) riding bicycles\nb) swimming\nc) cooking",
    "What are the people doing?\nA: riding bicycles\nB: swimming\nC: cooking",
    "What are the people doing? Options: A) riding bicycles B) swimming C) cooking",
    "What are the people doing?\nChoices:\n(a) riding bicycles\n(b) swimming\n(c) cooking\n",
])
def test_options_in_every_common_form(text):
    q = parse_question(text)
    assert (q.stem, q.options, q.warning) == ("What are the people doing?", OPTS, None)


# the benchmarks' own question texts (shared/reference/eval-formats), as a user pastes them
@pytest.mark.parametrize("text,stem,options", [
    ("What does the hand coming out of the computer do?\n(A) Delivers a product\n(B) Shakes the woman's hand\n"
     "(C) Takes the woman's credit card\n(D) Points at something on the screen\n",                    # MLVU
     "What does the hand coming out of the computer do?",
     ["Delivers a product", "Shakes the woman's hand", "Takes the woman's credit card",
      "Points at something on the screen"]),
    ("How many red socks are above the fireplace at the end of this video?\nA. 1.\nB. 4.\nC. 2.\nD. 3.",  # Video-MME
     "How many red socks are above the fireplace at the end of this video?", ["1.", "4.", "2.", "3."]),
    ("Which kind of the decoration has the largest number? A. Apples. B. Candles. C. Berries. "             # Video-MME inline
     "D. The three kinds are of the same number.",
     "Which kind of the decoration has the largest number?",
     ["Apples.", "Candles.", "Berries.", "The three kinds are of the same number."]),
    ("In front of an ancient building, a woman walks by holding something. When the subtitle says 'temples "
     "scattered throughout the', what color is the woman's clothing at that moment?\nA. yellow\nB. green\n"
     "C. blue\nD. red",                                                                                   # LongVideoBench
     "In front of an ancient building, a woman walks by holding something. When the subtitle says 'temples "
     "scattered throughout the', what color is the woman's clothing at that moment?",
     ["yellow", "green", "blue", "red"]),
])
def test_benchmark_question_texts(text, stem, options):
    q = parse_question(text)
    assert (q.stem, q.options, q.warning) == (stem, options, None)


@pytest.mark.parametrize("text", [
    "What happens in step 1. and step 2. of the recipe?",
    "Does the talk about version 1.5 start at 3:45 or at 4:30?",
    "What happens when a) the light turns red?",
    "Is plan A. better than plan B. or plan C?",
    "Who says (a) first and (b) later?",
    "Who is Mr. A. Smith?",
    "What happens between 1:30 and 2:45, after chapter 1. ends?",
])
def test_free_form_questions_are_not_mangled(text):
    q = parse_question(text)
    assert (q.stem, q.options, q.warning) == (text, [], None)


@pytest.mark.parametrize("text", ["Which colour?\nA. red", "Which colour?\nOptions: red, blue",
                                  "Which colour?\n1) red\n3) blue"])
def test_options_that_cannot_be_read_give_one_warning(text):
    q = parse_question(text)
    assert q.options == [] and q.stem == text
    assert q.warning and "\n" not in q.warning and "open question" in q.warning


def test_options_never_stay_in_the_stem_even_when_given_explicitly():
    q = parse_question("Which one? 1) x 2) y", options=["cat", "dog"])
    assert q.stem == "Which one?" and q.options == ["cat", "dog"]


def test_the_last_list_is_the_options():
    q = parse_question("Follow the steps: 1. open 2. close. Which came first? A. open B. close")
    assert q.stem == "Follow the steps: 1. open 2. close. Which came first?" and q.options == ["open", "close"]
