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


def parse_emphasis(prompt: str) -> list[Piece]:
    """The prompt as weighted pieces, A1111's way (see the module's docstring); never raises."""
    pieces: list[Piece] = []
    open_round: list[int] = []  # where each open bracket's pieces start
    open_square: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece.weight *= factor

    for match in _SYNTAX.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append(Piece(token[1:]))
        elif token == "(":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif weight is not None and open_round:
            multiply_from(open_round.pop(), _number(weight))
        elif token == ")" and open_round:
            multiply_from(open_round.pop(), ROUND)
        elif token == "]" and open_square:
            multiply_from(open_square.pop(), SQUARE)
        else:  # text, a stray closer, a colon, or a weight with no open bracket: all literal
            for number, part in enumerate(_BREAK.split(token)):
                if number:
                    pieces.append(Piece("BREAK", is_break=True))
                pieces.append(Piece(part))
    for start in open_round:  # left open: to the end of the prompt
        multiply_from(start, ROUND)
    for start in open_square:
        multiply_from(start, SQUARE)
    return _joined(pieces) or [Piece("")]


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
