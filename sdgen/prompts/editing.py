"""A1111's prompt editing, alternation and AND: which text CLIP reads at each step, and with what weight.

- `[from:to:when]` reads `from` until step `when`, then `to`; `[to:when]` adds `to` after `when`;
  `[from::when]` drops `from` after it. A `when` written with a decimal point is a fraction of the steps
  (`0.25`, `.5`), one without is a step number (`10`); brackets nest.
- `[a|b|c]` alternates every step (an empty alternative, `[fe|]male`, is the empty text).
- `part :1.2 AND part :0.8` (composable diffusion): each part is scheduled on its own; a trailing `:weight`
  weighs a part's prediction against the unconditional one (`composable_parts`).

The rules are A1111 1.10's (modules/prompt_parser.py, get_learned_conditioning_prompt_schedules, with its
default new timelines): `prompt_schedule` returns A1111's list of `(end_at_step, text)`, and the loop uses
entry k while its step index (0-based) is at most end_at_step (A1111's reconstruct_cond_batch). Text that
the grammar does not read (a `|` outside brackets, a `when` that is no number inside round brackets, a lone
trailing backslash) leaves the whole prompt as typed, as A1111 does; inside the texts, emphasis, BREAK and
escapes are left for sdgen.prompts.emphasis. Only the standard library: prompts are checked before loading.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from sdgen.errors import NAME, InvalidRequestError
from sdgen.prompts.limits import quoted
from sdgen.prompts.networks import without_tags

Schedule = tuple[tuple[int, str], ...]  # (end_at_step, text), end_at_step rising, the last one the step count

# The grammar's number: an optional sign, digits with an optional fraction, or a fraction alone, and an
# optional exponent (lark's SIGNED_NUMBER)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")  # text: no brackets, colons or bars, but any escaped character
_STRAY = "[]():"  # outside every bracket these may stand alone, as text
_AND = re.compile(r"\bAND\b")
_PART_WEIGHT = re.compile(r"(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*\Z", re.S)


@dataclass(frozen=True)
class _Edit:
    before: tuple[_Node, ...] | None  # None: `[to:when]`
    after: tuple[_Node, ...]
    when: str  # the number as written: its decimal point decides fraction or step


@dataclass(frozen=True)
class _Alternate:
    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Edit | _Alternate


class _NoParse(Exception):
    """The grammar does not read this text."""


class _Parser:
    """A recursive descent over A1111's grammar; a bracket that reads no other way is literal text only
    outside every bracket (the grammar's stray `[ ] ( ) :`). Constructs are remembered by position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.constructs: dict[int, tuple[_Node | tuple[_Node, ...], int] | None] = {}

    def parse(self) -> tuple[_Node, ...]:
        nodes: list[_Node] = []
        position = 0
        while position < len(self.text):
            found, position = self.sequence(position, top=True)
            nodes.extend(found)
            if position < len(self.text):
                char = self.text[position]
                if char not in _STRAY:  # a bar outside brackets, a lone backslash at the end
                    raise _NoParse
                nodes.append(char)
                position += 1
        return tuple(nodes)

    def sequence(self, position: int, top: bool = False) -> tuple[list[_Node], int]:
        """Text, emphasis and edits up to a `:`, `|` or closing bracket (or a bracket that reads no way)."""
        nodes: list[_Node] = []
        text = self.text
        while position < len(text):
            char = text[position]
            if char in "([":
                construct = self.construct(position)
                if construct is None:
                    if top:
                        return nodes, position
                    raise _NoParse
                node, position = construct
                nodes.extend(node) if isinstance(node, tuple) else nodes.append(node)
                continue
            plain = _PLAIN.match(text, position)
            if plain is None:
                return nodes, position
            nodes.append(plain.group(0))
            position = plain.end()
        return nodes, position

    def construct(self, position: int) -> tuple[_Node | tuple[_Node, ...], int] | None:
        if position not in self.constructs:
            try:
                self.constructs[position] = self._construct(position)
            except _NoParse:
                self.constructs[position] = None
        return self.constructs[position]

    def _construct(self, position: int) -> tuple[_Node | tuple[_Node, ...], int]:
        text = self.text
        opener = text[position]
        first, position = self.sequence(position + 1)
        delimiter = text[position : position + 1]
        if opener == "(":  # emphasis, kept as typed for the emphasis parser
            if delimiter == ")":
                return ("(", *first, ")"), position + 1
            if delimiter == ":":
                second, position = self.sequence(position + 1)
                if text[position : position + 1] == ")":
                    return ("(", *first, ":", *second, ")"), position + 1
            raise _NoParse
        if delimiter == "]":
            return ("[", *first, "]"), position + 1
        if delimiter == "|":
            options = [tuple(first)]
            while text[position : position + 1] == "|":
                option, position = self.sequence(position + 1)
                options.append(tuple(option))
            if text[position : position + 1] != "]":
                raise _NoParse
            return _Alternate(tuple(options)), position + 1
        if delimiter != ":":
            raise _NoParse
        when = self.when(position + 1)
        if when is not None:  # [to:when]
            return _Edit(None, tuple(first), when[0]), when[1]
        second, position = self.sequence(position + 1)
        when = self.when(position + 1) if text[position : position + 1] == ":" else None
        if when is None:
            raise _NoParse
        return _Edit(tuple(first), tuple(second), when[0]), when[1]

    def when(self, position: int) -> tuple[str, int] | None:
        """`[ws] NUMBER [ws] ]` from `position`: the number as written and the position after the bracket."""
        text = self.text
        while position < len(text) and text[position].isspace():
            position += 1
        number = _NUMBER.match(text, position)
        if number is None:
            return None
        end = number.end()
        while end < len(text) and text[end].isspace():
            end += 1
        if text[end : end + 1] != "]":
            return None
        return number.group(0), end + 1


@dataclass(frozen=True)
class _Steps:
    """How a `when` becomes a step: A1111 counts a hires pass on from the first pass's steps (an integer
    `when` past them, or a fraction past 1.0, falls in the hires pass)."""

    steps: int
    int_offset: int = 0
    fraction_offset: float = 0.0
    old_scheduling: bool = False

    def step(self, when: str) -> int:
        value = float(when)
        if self.old_scheduling:  # A1111's "old prompt editing timelines": below 1 a fraction, else a step
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.fraction_offset) * self.steps
        else:
            value = value - self.int_offset
        return min(self.steps, int(value))


def prompt_schedule(prompt: str, steps: int, hires_steps: int | None = None, old_scheduling: bool = False) -> Schedule:
    """A1111's schedule of one prompt over `steps` (or, for a hires pass after `steps` first-pass steps,
    over `hires_steps`): `(end_at_step, text)` for each step at which the text may change.

    >>> prompt_schedule("a [b:3]", 10)
    ((3, 'a '), (10, 'a b'))
    >>> prompt_schedule("a [b:1.5] c", 10, 10)
    ((5, 'a  c'), (10, 'a b c'))
    """
    if old_scheduling or hires_steps is None:  # the old timelines count a hires pass like the first one
        counting = _Steps(steps, old_scheduling=old_scheduling)
    else:
        counting = _Steps(hires_steps, steps, 1.0)
    try:
        tree = _Parser(prompt).parse()
    except (_NoParse, RecursionError):
        return ((counting.steps, prompt),)
    ends = {counting.steps}
    _collect(tree, counting, ends)
    return tuple((end, _render(tree, end, counting)) for end in sorted(ends))


def _collect(nodes: tuple[_Node, ...], counting: _Steps, ends: set[int]) -> None:
    """Every step at which an edit switches (both sides of every edit), and every step for an alternation."""
    for node in nodes:
        if isinstance(node, _Edit):
            at = counting.step(node.when)
            if at >= 1:
                ends.add(at)
            _collect(node.before or (), counting, ends)
            _collect(node.after, counting, ends)
        elif isinstance(node, _Alternate):
            ends.update(range(1, counting.steps + 1))
            for option in node.options:
                _collect(option, counting, ends)


def _render(nodes: tuple[_Node, ...], step: int, counting: _Steps) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            chosen = (node.before or ()) if step <= counting.step(node.when) else node.after
            out.append(_render(chosen, step, counting))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, counting))
    return "".join(out)


def entry_at(schedule: Schedule, index: int) -> int:
    """Which entry the loop's step `index` (0-based) reads: the first whose end_at_step is at least it (the
    last one past the end), as A1111's reconstruct_cond_batch picks it."""
    found = bisect.bisect_left([end for end, _ in schedule], index)
    return min(found, len(schedule) - 1)


def composable_parts(prompt: str) -> tuple[tuple[str, float], ...]:
    """The prompt split at each AND (a capitalised word of its own), each part's text and weight: a
    trailing `:1.2` weighs the part (also without AND), as A1111's get_multicond_prompt_list reads it.

    >>> composable_parts("a cat :1.2 AND a dog :0.8")
    (('a cat', 1.2), (' a dog', 0.8))
    """
    parts = []
    for part in _AND.split(prompt):
        match = _PART_WEIGHT.match(part)
        assert match is not None  # every text matches: the weight and the trailing space are optional
        text, weight = match.groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return tuple(parts)


def is_plain(parts: tuple[tuple[str, float], ...]) -> bool:
    """One part at weight 1: plain classifier-free guidance, no composable combination."""
    return len(parts) == 1 and parts[0][1] == 1.0


MAX_PARTS = 32  # AND parts of one prompt: each is a row of every U-Net call


def check_composable(prompt: str, guidance_scale: float, cfg_end: float) -> None:
    """AND and part weights combine each part with the unconditional prediction: a run without it (no
    guidance, or guidance cut off early) cannot honour them, so it is refused (InvalidRequestError), as is
    a prompt of more than MAX_PARTS parts (they all run in one U-Net call)."""
    parts = composable_parts(without_tags(prompt))
    if is_plain(parts):
        return
    shown = f"the prompt {quoted(prompt)}"
    if len(parts) > MAX_PARTS:
        raise InvalidRequestError(
            f"Invalid {NAME} {quoted(prompt)}: {len(parts)} parts joined by AND, more than {MAX_PARTS} (each one "
            "is a row of every U-Net call); join fewer, or write AND in lower case to make it text.",
            "prompt",
        )
    if guidance_scale <= 1.0:
        raise InvalidRequestError(
            f"Invalid {NAME} {guidance_scale!r} for {shown}: AND and a part's :weight combine each part with "
            "the unconditional prediction, which needs a guidance scale above 1 (7.5 is typical).",
            "guidance_scale",
        )
    if cfg_end < 1.0:
        raise InvalidRequestError(
            f"Invalid {NAME} {cfg_end!r} for {shown}: AND and a part's :weight need the unconditional prediction "
            "at every step; use cfg_end 1 (the default), or write the prompt without AND.",
            "cfg_end",
        )
