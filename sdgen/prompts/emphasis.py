"""A1111's prompt emphasis: `(word)` x1.1, `[word]` /1.1, `(word:1.3)`, nesting, `\\(` escapes and BREAK.

parse_emphasis turns prompt text into pieces of text, each with the weight its tokens get; BREAK becomes
a piece of its own (`is_break`). The rules are A1111's (modules/prompt_parser.py, parse_prompt_attention):
- `(` ... `)` multiplies what is inside by 1.1, `[` ... `]` divides it by 1.1; brackets nest and multiply;
- `(text:1.3)` gives the text inside the weight 1.3 (times any outer brackets) instead of 1.1;
- `\\(` `\\)` `\\[` `\\]` are the bracket characters themselves, `\\\\` a backslash; a lone `\\` vanishes;
- a `)` or `]` with nothing open is ordinary text; a bracket left open runs to the end of the prompt;
- `:` that does not end a weight is ordinary text;
- the word BREAK (in capitals, on its own) ends the 75-token chunk: what follows starts the next one;
- neighbouring pieces of the same weight are joined.
Only the standard library: prompts are checked before any weights load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUND, SQUARE = 1.1, 1 / 1.1

# One match per syntax element, tried in this order: escapes, openers, a weight closing a round bracket,
# closers, plain text, a colon that is just text.
_SYNTAX = re.compile(
    r"""
      \\[()\[\]\\]           # an escaped bracket or backslash
    | \\                     # a lone backslash (dropped, as A1111 does)
    | [(\[]                  # an opening bracket
    | :\s*([+-]?[.\d]+)\s*\) # ':1.3)' closes a round bracket with its own weight
    | [)\]]                  # a closing bracket
    | [^\\()\[\]:]+          # text
    | :                      # a colon that is text
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


@dataclass
class Piece:
    text: str
    weight: float = 1.0
    is_break: bool = False


class _Bracket:
    """An opened bracket: its factor and its place among the closings, both known once it closes."""

    __slots__ = ("factor", "order")

    def __init__(self) -> None:
        self.factor = 1.0
        self.order = 0


def parse_emphasis(prompt: str) -> list[Piece]:
    """The prompt as weighted pieces, A1111's way (see the module's docstring); never raises.

    A1111 multiplies every piece after an opening bracket when it closes, which costs the number of pieces
    times the nesting depth. Here each piece keeps the brackets open when it was read (one tuple per
    change of the open brackets, shared by the pieces read meanwhile), and its weight is worked out once per
    such tuple at the end, multiplying the factors in the order the brackets closed: the same floating-point
    products as A1111's, in one pass over the prompt (plus the depth of each distinct bracket state)."""
    pieces: list[Piece] = []
    states: list[tuple[_Bracket, ...]] = []  # the open brackets of each piece
    round_open: list[_Bracket] = []
    square_open: list[_Bracket] = []
    state: tuple[_Bracket, ...] | None = ()
    closed = 0

    def close(stack: list[_Bracket], factor: float) -> None:
        nonlocal closed, state
        bracket = stack.pop()
        closed += 1
        bracket.factor, bracket.order, state = factor, closed, None

    def add(piece: Piece) -> None:
        nonlocal state
        if state is None:
            state = (*round_open, *square_open)
        pieces.append(piece)
        states.append(state)

    for match in _SYNTAX.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            add(Piece(token[1:]))
        elif token in ("(", "["):
            (round_open if token == "(" else square_open).append(_Bracket())
            state = None
        elif weight is not None and round_open:
            close(round_open, _number(weight))
        elif token == ")" and round_open:
            close(round_open, ROUND)
        elif token == "]" and square_open:
            close(square_open, SQUARE)
        else:  # text, a stray closer, a colon, or a weight with no open bracket: all literal
            for number, part in enumerate(_BREAK.split(token)):
                if number:
                    add(Piece("BREAK", is_break=True))
                add(Piece(part))
    # left open: they run to the end of the prompt, the round ones first, each stack outermost first
    for stack, factor in ((round_open, ROUND), (square_open, SQUARE)):
        for bracket in stack:
            closed += 1
            bracket.factor, bracket.order = factor, closed
    _weigh(pieces, states)
    return _joined(pieces) or [Piece("")]


def _weigh(pieces: list[Piece], states: list[tuple[_Bracket, ...]]) -> None:
    """Each piece's weight: 1.0 times its brackets' factors in the order they closed (A1111's order)."""
    weights: dict[int, float] = {}
    for piece, state in zip(pieces, states, strict=True):
        weight = weights.get(id(state))
        if weight is None:
            weight = 1.0
            for bracket in sorted(state, key=_closing_order):
                weight *= bracket.factor
            weights[id(state)] = weight
        piece.weight = weight


def _closing_order(bracket: _Bracket) -> int:
    return bracket.order


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # '1.2.3' matches the pattern but is no number: A1111 would fail; weigh it 1
        return 1.0


def _joined(pieces: list[Piece]) -> list[Piece]:
    joined: list[Piece] = []
    for piece in pieces:
        last = joined[-1] if joined else None
        if last is not None and not last.is_break and not piece.is_break and last.weight == piece.weight:
            last.text += piece.text
        else:
            joined.append(Piece(piece.text, piece.weight, piece.is_break))
    return joined


def literal_pieces(prompt: str) -> list[Piece]:
    """--no-weighting: the whole prompt as typed, brackets and BREAK included, at weight 1."""
    return [Piece(prompt)]
