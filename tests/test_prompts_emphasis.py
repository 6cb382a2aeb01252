"""A1111's emphasis rules, case by case: the expected pieces are the examples A1111 documents for its
parse_prompt_attention, plus nesting, escapes, BREAK and stray brackets."""

from __future__ import annotations

import pytest

from sdgen.prompts.emphasis import literal_pieces, parse_emphasis


def parsed(prompt: str) -> list[tuple[str, float]]:
    return [(piece.text, round(piece.weight, 6)) for piece in parse_emphasis(prompt)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("((word))", [("word", 1.21)]),
        ("[word]", [("word", round(1 / 1.1, 6))]),
        ("[[word]]", [("word", round(1 / 1.21, 6))]),
        ("(word:1.3)", [("word", 1.3)]),
        ("(word: 0.5 )", [("word", 0.5)]),
        ("((word:1.3))", [("word", 1.43)]),
        ("[(word:1.5)]", [("word", round(1.5 / 1.1, 6))]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("[unbalanced", [("unbalanced", round(1 / 1.1, 6))]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        (r"a \\ b", [("a \\ b", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("stray) and ] closers", [("stray) and ] closers", 1.0)]),
        ("time: 12:30", [("time: 12:30", 1.0)]),
        ("(a:b)", [("a:b", 1.1)]),
        ("word:1.3)", [("word:1.3)", 1.0)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
             (", sun, ", 1.1), ("sky", 1.4641), (".", 1.1)],
        ),
        ("", [("", 1.0)]),
    ],
)
def test_weights_follow_a1111(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parsed(prompt) == expected


def test_break_splits_into_pieces_of_their_own() -> None:
    pieces = parse_emphasis("a cat BREAK (a dog) BREAK")
    assert [(p.text, p.is_break) for p in pieces] == [
        ("a cat", False), ("BREAK", True), ("", False), ("a dog", False), ("", False), ("BREAK", True),
        ("", False),
    ]
    assert pieces[3].weight == pytest.approx(1.1)


def test_break_needs_capitals_and_a_word_of_its_own() -> None:
    assert [p.is_break for p in parse_emphasis("breakfast BREAKS break")] == [False]


def test_weight_one_point_zero_is_plain_text() -> None:
    assert parsed("a (cat:1.0)") == [("a cat", 1.0)]


def test_literal_pieces_keep_everything() -> None:
    [piece] = literal_pieces("a (cat:1.3) BREAK")
    assert (piece.text, piece.weight, piece.is_break) == ("a (cat:1.3) BREAK", 1.0, False)
