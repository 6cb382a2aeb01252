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

import math
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


EXACT_DEPTH = 64  # up to this many brackets around a piece, its weight is A1111's product bit for bit


def parse_emphasis(prompt: str) -> list[Piece]:
    """The prompt as weighted pieces, A1111's way (see the module's docstring); never raises.

    A1111 multiplies every piece after an opening bracket when it closes, which costs the number of pieces
    times the nesting depth (a 100 kB prompt of nested brackets took 44 s). Here one pass reads the prompt,
    noting for each piece which brackets were open (the top of each stack: pieces read meanwhile share it),
    and each distinct set of open brackets is weighed once at the end: for up to EXACT_DEPTH brackets by
    multiplying their factors in the order they closed, A1111's floating-point products exactly; deeper, as
    the product of the factors from the outermost in (each bracket's product kept), the same number up to
    rounding. The work is linear in the prompt's length."""
    pieces: list[Piece] = []
    states: list[tuple[int, int]] = []  # the innermost open ( and [ when each piece was read; -1: none
    brackets = _Brackets()
    round_open: list[int] = []
    square_open: list[int] = []

    def add(piece: Piece) -> None:
        pieces.append(piece)
        states.append((round_open[-1] if round_open else -1, square_open[-1] if square_open else -1))

    for match in _SYNTAX.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            add(Piece(token[1:]))
        elif token in ("(", "["):
            stack = round_open if token == "(" else square_open
            stack.append(brackets.open(stack[-1] if stack else -1))
        elif (weight is not None or token == ")") and round_open:
            brackets.close(round_open.pop(), ROUND if weight is None else _number(weight))
        elif token == "]" and square_open:
            brackets.close(square_open.pop(), SQUARE)
        else:  # text, a stray closer, a colon, or a weight with no open bracket: all literal
            for number, part in enumerate(_BREAK.split(token)):
                if number:
                    add(Piece("BREAK", is_break=True))
                add(Piece(part))
    for bracket in round_open:  # left open: to the end of the prompt, round ones first, outermost first
        brackets.close(bracket, ROUND)
    for bracket in square_open:
        brackets.close(bracket, SQUARE)
    weights: dict[tuple[int, int], float] = {}
    for piece, state in zip(pieces, states, strict=True):
        weight = weights.get(state)
        if weight is None:
            weight = weights[state] = brackets.weight(*state)
        piece.weight = weight
    return _joined(pieces) or [Piece("")]


class _Brackets:
    """Every bracket of a prompt by number (in the order they opened): the bracket below it on its stack,
    the brackets of that stack open with it (up to EXACT_DEPTH), its factor and when it closed (both known
    once it closes)."""

    def __init__(self) -> None:
        self.below: list[int] = []
        self.depth: list[int] = []
        self.stack: list[tuple[int, ...]] = []  # itself and those below it; () past EXACT_DEPTH
        self.factor: list[float] = []
        self.closed_at: list[int] = []
        self.closings = 0
        self.products: list[float] | None = None  # outermost-in products, made on the first deep weight

    def open(self, below: int) -> int:
        bracket = len(self.below)
        depth = 1 + (self.depth[below] if below >= 0 else 0)
        self.below.append(below)
        self.depth.append(depth)
        if depth == 1:
            self.stack.append((bracket,))
        else:  # past EXACT_DEPTH a piece's weight is made from `products` instead
            self.stack.append((bracket, *self.stack[below]) if depth <= EXACT_DEPTH else ())
        self.factor.append(1.0)
        self.closed_at.append(0)
        return bracket

    def close(self, bracket: int, factor: float) -> None:
        self.closings += 1
        self.factor[bracket], self.closed_at[bracket] = factor, self.closings

    def weight(self, round_top: int, square_top: int) -> float:
        """The weight of a piece read inside these stacks' brackets (-1: none of that kind)."""
        tops = [top for top in (round_top, square_top) if top >= 0]
        if sum(self.depth[top] for top in tops) > EXACT_DEPTH:
            return math.prod(self._product(top) for top in tops)
        chain = [bracket for top in tops for bracket in self.stack[top]]
        chain.sort(key=self.closed_at.__getitem__)  # A1111 multiplies as each closes, innermost first
        return math.prod(map(self.factor.__getitem__, chain), start=1.0)  # one after the other, as *= does

    def _product(self, bracket: int) -> float:
        if self.products is None:  # a bracket opens after the one below it: one pass in order
            self.products = []
            for below, factor in zip(self.below, self.factor, strict=True):
                self.products.append(factor * (self.products[below] if below >= 0 else 1.0))
        return self.products[bracket]


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
