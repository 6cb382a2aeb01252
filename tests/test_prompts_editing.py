"""Prompt editing, alternation and AND (sdgen/prompts/editing.py) against A1111's own examples.

The schedules are the doctests of A1111 1.10's modules/prompt_parser.py
(get_learned_conditioning_prompt_schedules), for 10 steps and for a 10-step hires pass after 10 steps.
One doctest there, `a [{b|d{:.5] c` ("not handling this right now"), does not hold for A1111's own grammar
today (its parser rejects the `|` and keeps the prompt as typed); sdgen does what A1111's code does.
"""

from __future__ import annotations

import pytest

from sdgen.prompts.editing import composable_parts, entry_at, is_plain, prompt_schedule

ALTERNATING = [[step, "a" if step % 2 else "(b:1.1)"] for step in range(1, 11)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("test", [[10, "test"]]),
        ("a [b:3]", [[3, "a "], [10, "a b"]]),
        ("a [b: 3]", [[3, "a "], [10, "a b"]]),
        ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
        ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
        ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
        ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
        ("a [unbalanced", [[10, "a [unbalanced"]]),
        ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
        ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
        ("[a|(b:1.1)]", ALTERNATING),
        ("[fe|]male", [[step, "female" if step % 2 else "male"] for step in range(1, 11)]),
        ("[fe|||]male", [[step, "female" if step % 4 == 1 else "male"] for step in range(1, 11)]),
    ],
)
def test_schedules_are_a1111s_doctests(prompt: str, expected: list) -> None:
    assert [list(entry) for entry in prompt_schedule(prompt, 10)] == expected


def test_the_example_at_the_top_of_a1111s_parser() -> None:
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
              "[ in background:0.25] [shoddy:masterful:0.5]")
    start = "fantasy landscape with a "
    assert prompt_schedule(prompt, 100) == (
        (25, start + "mountain and an oak in foreground shoddy"),
        (50, start + "lake and an oak in foreground in background shoddy"),
        (60, start + "lake and an oak in foreground in background masterful"),
        (75, start + "lake and an oak in background masterful"),
        (100, start + "lake and a christmas tree in background masterful"),
    )


@pytest.mark.parametrize(
    ("prompt", "expected"), [("a [b:.5] c", [[10, "a b c"]]), ("a [b:1.5] c", [[5, "a  c"], [10, "a b c"]])]
)
def test_a_hires_pass_counts_on_from_the_first_pass(prompt: str, expected: list) -> None:
    """A1111's hires doctests: a fraction past 1.0 or a step past the first pass's falls in the hires pass."""
    assert [list(entry) for entry in prompt_schedule(prompt, 10, 10)] == expected


def test_integer_steps_in_a_hires_pass_count_after_the_first_pass() -> None:
    assert prompt_schedule("a [b:c:15]", 10, 20) == ((5, "a b"), (20, "a c"))
    assert prompt_schedule("a [b:c:5]", 10, 20) == ((20, "a c"),)  # switched during the first pass


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a [cat:dog:0.5] in snow", ((5, "a cat in snow"), (10, "a dog in snow"))),
        ("a [dog:2] in snow", ((2, "a  in snow"), (10, "a dog in snow"))),
        ("a cat [in snow::0.5]", ((5, "a cat in snow"), (10, "a cat "))),
        ("[a:b:1.0]", ((10, "a"),)),  # a decimal point makes it a fraction: the whole run
        ("[a:b:0]", ((10, "b"),)),
        ("[a:b:-1]", ((10, "b"),)),
        ("[a:b:1e1]", ((10, "a"),)),
        ("[a:b:x]", ((10, "[a:b:x]"),)),  # no number: as typed (outside round brackets)
        ("(a [b:c:x] d) [e:2]", ((2, "(a [b:c:x] d) "), (10, "(a [b:c:x] d) e"))),  # outside: text too
        ("([a|b:c] [d:2])", ((10, "([a|b:c] [d:2])"),)),  # a bar in a bracket that reads no way: as typed
        ("a | b [c:2]", ((10, "a | b [c:2]"),)),  # a bar outside brackets: the prompt as typed
        ("a [b:2] \\", ((10, "a [b:2] \\"),)),  # a lone backslash at the end: as typed
        ("a \\[b:2\\] [c:2]", ((2, "a \\[b:2\\] "), (10, "a \\[b:2\\] c"))),  # escapes stay for emphasis
        ("(x:1.2) [a:b:1] BREAK <x>", ((1, "(x:1.2) a BREAK <x>"), (10, "(x:1.2) b BREAK <x>"))),
        ("[[a|b]:c:2]", ((1, "a"), (2, "b"), (3, "c"), (10, "c"))),
    ],
)
def test_editing_as_a1111_reads_it(prompt: str, expected: tuple) -> None:
    """Checked against A1111's parser (its lark grammar) run on the same prompts."""
    schedule = prompt_schedule(prompt, 10)
    if len(expected) < len(schedule):  # an alternation lists every step: compare the steps given
        schedule = tuple(entry for entry in schedule if entry[0] in {end for end, _ in expected})
    assert schedule == expected


def test_old_timelines_read_below_one_as_a_fraction() -> None:
    assert prompt_schedule("[a:b:1.5]", 10, old_scheduling=True) == ((1, "a"), (10, "b"))
    assert prompt_schedule("[a:b:1.5]", 10) == ((10, "a"),)


def test_the_loop_reads_the_first_entry_that_ends_at_or_after_its_step() -> None:
    """A1111's step counter starts at 0 and an entry lasts through its end_at_step: [b:3] of 10 steps is off
    for steps 0-3, on for 4-9; [a|b] reads a, a, b, a, b, ..."""
    schedule = prompt_schedule("a [b:3]", 10)
    assert [entry_at(schedule, index) for index in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    alternating = prompt_schedule("[a|b]", 6)
    assert [alternating[entry_at(alternating, index)][1] for index in range(6)] == ["a", "a", "b", "a", "b", "a"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat :1.2 AND a dog :0.8", (("a cat", 1.2), (" a dog", 0.8))),
        ("a cat AND a dog", (("a cat", 1.0), (" a dog", 1.0))),
        ("a cat:1.5", (("a cat", 1.5),)),  # a weight without AND weighs the one part
        ("(a cat:1.5)", (("(a cat:1.5)", 1.0),)),  # emphasis is no part weight
        ("a [cat:dog:0.5] AND snow", (("a [cat:dog:0.5]", 1.0), (" snow", 1.0))),
        ("ANDROID and AND", (("ANDROID and", 1.0), ("", 1.0))),
    ],
)
def test_and_splits_into_weighted_parts(prompt: str, expected: tuple) -> None:
    assert composable_parts(prompt) == expected


def test_only_one_part_at_weight_one_is_plain_guidance() -> None:
    assert is_plain(composable_parts("a cat"))
    assert not is_plain(composable_parts("a cat:1.2"))
    assert not is_plain(composable_parts("a cat AND a dog"))


def test_a_deeply_nested_prompt_is_read_as_typed_without_recursing_forever() -> None:
    prompt = "[" * 5000 + "a:2" + "]" * 5000
    assert prompt_schedule(prompt, 10)[-1][0] == 10
