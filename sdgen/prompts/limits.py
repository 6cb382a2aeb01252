"""Limits on the work one prompt may ask for, checked before anything is expanded, queued or loaded.

A prompt is text a stranger may send (`sdgen serve`), so what it costs must be bounded before the model
sees it: its length, how deep its brackets nest (the emphasis parser's work is the prompt's length times
that depth), how many BREAKs it holds (each one a 77-token chunk for CLIP and the U-Net's cross-attention),
how many LoRAs and embeddings it names, and how many wildcard look-ups its expansion makes. Each limit is
an option (`--max-prompt-length` ...; sdgen/config/options.py) with a default no real prompt reaches; an error names
the limit and the flag that raises it. Emphasis weights must be finite and at most MAX_WEIGHT in size, so no
prompt can overflow the text embedding to infinity (NaN latents). Text that is not valid Unicode (a lone
surrogate, "\\ud800") is refused by name before the tokenizer sees it.

Only the standard library: this runs on the request path, before any weights load.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sdgen.errors import NAME, InvalidRequestError
from sdgen.prompts.emphasis import parse_emphasis
from sdgen.prompts.networks import without_tags

MAX_WEIGHT = 100.0  # the largest |weight| a piece of a prompt may end up with, nested brackets multiplied
SHOWN = 60  # characters of a prompt an error message quotes

# The keys of the options (sdgen/config/options.py) and the flags that set them.
LIMIT_FLAGS = {
    "max_prompt_length": "--max-prompt-length",
    "max_nesting": "--max-nesting",
    "max_breaks": "--max-breaks",
    "max_networks": "--max-networks",
    "max_wildcards": "--max-wildcards",
}
LARGEST_LIMIT = 10**9

_BRACKET = re.compile(r"\\.|[()\[\]{}]", re.S)  # an escaped character, or a bracket
_BREAK_WORD = re.compile(r"\bBREAK\b")
_CLOSING = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True)
class PromptLimits:
    """The limits one request's prompts are held to (GenerationRequest's max_* fields)."""

    length: int  # characters of a prompt or negative prompt, wildcards expanded
    nesting: int  # brackets open at once: ( [ with emphasis on, { of alternatives always
    breaks: int  # BREAK words of one prompt (emphasis on)
    networks: int  # LoRAs and embeddings one image uses
    wildcards: int  # wildcard look-ups per image, nested ones included

    def checked(self) -> PromptLimits:
        """The limits themselves must be whole numbers from 1 up (there is no "off": a huge number is)."""
        values = (self.length, self.nesting, self.breaks, self.networks, self.wildcards)
        for key, value in zip(LIMIT_FLAGS, values, strict=True):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LARGEST_LIMIT:
                raise InvalidRequestError(
                    f"Invalid {NAME} {value!r}: a limit is a whole number from 1 to {LARGEST_LIMIT}.", key
                )
        return self


def quoted(text: str) -> str:
    """A prompt as an error message shows it: repr (so no control character or lone surrogate reaches a
    terminal or a JSON body), cut to SHOWN characters."""
    return repr(text) if len(text) <= SHOWN else repr(text[:SHOWN]) + f"... ({len(text)} characters)"


def check_text(text: object, key: str, limits: PromptLimits, weighting: bool, shown: str | None = None) -> None:
    """A prompt or negative prompt (`key`) within the limits, with finite, bounded weights; InvalidRequestError
    naming `key` and the limit's flag if not. `shown` is how the message quotes it (default: the text)."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"Invalid {NAME} {text!r}: must be text.", key)
    check_encodable(text, key)
    label = shown or quoted(text)
    if len(text) > limits.length:
        raise InvalidRequestError(
            f"Invalid {NAME} {label}: {len(text)} characters, more than the {limits.length} allowed; shorten it, "
            "or raise --max-prompt-length.",
            key,
        )
    depth = nesting_depth(text, weighting)
    if depth > limits.nesting:
        raise InvalidRequestError(
            f"Invalid {NAME} {label}: brackets nested {depth} deep, more than the {limits.nesting} allowed; "
            "nest fewer (e.g. (word:1.5) rather than ((((word))))), or raise --max-nesting.",
            key,
        )
    if not weighting:
        return
    clip_text = without_tags(text)  # what the text encoder reads
    breaks = len(_BREAK_WORD.findall(clip_text))
    if breaks > limits.breaks:
        raise InvalidRequestError(
            f"Invalid {NAME} {label}: {breaks} BREAKs, more than the {limits.breaks} allowed; each starts "
            "another 77-token chunk: use fewer, or raise --max-breaks.",
            key,
        )
    check_weights(clip_text, key, label)


def check_encodable(text: str, key: str) -> None:
    """Text the tokenizer can read: valid Unicode (a lone surrogate such as "\\ud800" is not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequestError(
            f"Invalid {NAME} {quoted(text)}: character {error.start + 1} ({text[error.start]!r}) is not valid "
            "Unicode (a lone surrogate); remove it.",
            key,
        ) from None


def nesting_depth(text: str, weighting: bool = True) -> int:
    """The most brackets open at once, counted as the parsers count them: ( and [ (emphasis, when on) and
    { (alternatives), a closer with nothing of its kind open and an escaped bracket (`\\(`) not counting.
    One pass: this is what bounds the emphasis parser's work before it runs."""
    open_count = {"(": 0, "[": 0, "{": 0}
    depth = deepest = 0
    for match in _BRACKET.finditer(text):
        char = match.group(0)
        if len(char) > 1 or (not weighting and char in "()[]"):
            continue
        opener = _CLOSING.get(char)
        if opener is None:
            open_count[char] += 1
            depth += 1
            deepest = max(deepest, depth)
        elif open_count[opener]:
            open_count[opener] -= 1
            depth -= 1
    return deepest


def check_weights(text: str, key: str, label: str | None = None) -> None:
    """Every piece's weight finite and at most MAX_WEIGHT in size: (word:1e999), or brackets multiplying a
    weight past it, would push CLIP's embedding to infinity and the latents to NaN."""
    for piece in parse_emphasis(text):
        if piece.is_break or (math.isfinite(piece.weight) and abs(piece.weight) <= MAX_WEIGHT):
            continue
        raise InvalidRequestError(
            f"Invalid {NAME} {label or quoted(text)}: the weight of {quoted(piece.text.strip())} comes to "
            f"{piece.weight!r} (nested brackets multiply); a weight must be between -{MAX_WEIGHT:g} and "
            f"{MAX_WEIGHT:g}.",
            key,
        )


def check_networks(count: int, limit: int, text: str, key: str = "prompt") -> None:
    """No more LoRAs and embeddings for one image than --max-networks (counted before any is looked up)."""
    if count > limit:
        raise InvalidRequestError(
            f"Invalid {NAME} {quoted(text)}: it uses {count} LoRAs and embeddings, more than the {limit} allowed; "
            "use fewer, or raise --max-networks.",
            key,
        )
