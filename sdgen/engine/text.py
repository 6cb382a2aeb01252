"""Prompt text -> CLIP embeddings the U-Net attends to (its `encoder_hidden_states`), A1111's way.

CLIP reads 77 tokens: a start token, 75 tokens of text, an end token. A longer prompt is cut into chunks of
75 tokens, each encoded on its own with its start and end tokens, and the chunks' embeddings are joined:
a 200-token prompt gives (1, 3 x 77, 768). `BREAK` ends a chunk early. Emphasis, `(word:1.3)`, scales each
token's embedding, after which the chunk is rescaled to its original mean (sdgen.prompts.emphasis).
A prompt of 75 tokens or fewer without emphasis is encoded exactly as diffusers does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sdgen.prompts.emphasis import literal_pieces, parse_emphasis

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

log = logging.getLogger("sdgen")

CHUNK_TOKENS = 75  # text tokens per chunk: CLIP's 77 less the start and end tokens
COMMA_BACKTRACK = 20  # A1111's default: a chunk that fills up within 20 tokens of a comma breaks after it


@dataclass(frozen=True)
class TextOptions:
    """How text becomes embeddings: emphasis on or off, and which CLIP layer (1 = the last, A1111's count)."""

    weighting: bool = True
    clip_skip: int = 1


@dataclass
class Chunks:
    """A prompt's token ids and per-token weights, in chunks of 77 (start, 75 tokens or padding, end)."""

    ids: list[list[int]] = field(default_factory=list)
    weights: list[list[float]] = field(default_factory=list)


def chunk_prompt(
    text: str, tokenizer: CLIPTokenizer, weighting: bool = True, convert: Callable[[str], str] | None = None
) -> Chunks:
    """Split a prompt into 77-token chunks the way A1111 does (modules/sd_hijack_clip.py, tokenize_line).

    Each piece of emphasis is tokenized on its own; a chunk that reaches 75 tokens moves the words after
    its last comma (if that comma is within 20 tokens of the end) to the next chunk; short chunks are
    closed by the end token and padded with the tokenizer's pad token (the end token for SD 1.x, "!" for SD
    2.x's OpenCLIP).
    `convert` rewrites each piece first (multi-vector embedding tokens).
    """
    pieces = parse_emphasis(text) if weighting else literal_pieces(text)
    texts = [convert(piece.text) if convert else piece.text for piece in pieces]
    tokenized = tokenizer(texts, add_special_tokens=False, truncation=False).input_ids
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end  # SD 1.x: the end token; 2.x: "!"
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks = Chunks()
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close_chunk() -> None:
        nonlocal ids, weights, last_comma
        padding = CHUNK_TOKENS - len(ids)
        # the end token right after the text, then padding: for SD 1.x (pad = end) the same ids either way; for
        # SD 2.x's "!" this is diffusers' layout and A1111's (it pads with the end token, then sets every id
        # after the first end token to the pad token)
        chunks.ids.append([start, *ids, end, *[pad] * padding])
        chunks.weights.append([1.0, *weights, *[1.0] * padding, 1.0])
        ids, weights, last_comma = [], [], -1

    for piece, tokens in zip(pieces, tokenized, strict=True):
        if piece.is_break:
            close_chunk()
            continue
        for token in tokens:
            if token == comma:
                last_comma = len(ids)
            elif len(ids) == CHUNK_TOKENS and last_comma != -1 and len(ids) - last_comma <= COMMA_BACKTRACK:
                moved_ids, moved_weights = ids[last_comma + 1 :], weights[last_comma + 1 :]
                ids, weights = ids[: last_comma + 1], weights[: last_comma + 1]
                close_chunk()
                ids, weights = moved_ids, moved_weights
            if len(ids) == CHUNK_TOKENS:
                close_chunk()
            ids.append(token)
            weights.append(piece.weight)
    if ids or not chunks.ids:
        close_chunk()
    return chunks


def encode_prompt(
    text: str,
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    device: str | torch.device,
    options: TextOptions = TextOptions(),
    convert: Callable[[str], str] | None = None,
) -> torch.Tensor:
    """(1, 77 x chunks, D) embedding of one prompt: D = 768 for SD1.x. Nothing is truncated."""
    import torch

    chunks = chunk_prompt(text, tokenizer, options.weighting, convert)
    encoded = []
    for ids, weights in zip(chunks.ids, chunks.weights, strict=True):
        # SD1.x text encoders take no attention mask: padding tokens are attended to, as in training.
        hidden = _hidden_state(torch.tensor([ids], device=device), text_encoder, options.clip_skip)
        encoded.append(_emphasized(hidden, weights))
    return torch.cat(encoded, dim=1)


def _hidden_state(ids: torch.Tensor, text_encoder: CLIPTextModel, clip_skip: int) -> torch.Tensor:
    """The last layer's output (1, 77, D); with clip skip N > 1 the N-th last layer's, through the final
    layer norm, as A1111 (CLIP_stop_at_last_layers = N) and diffusers (clip_skip = N - 1) do."""
    if clip_skip <= 1:
        return text_encoder(ids)[0]
    outputs = text_encoder(ids, output_hidden_states=True)
    return final_layer_norm(text_encoder)(outputs.hidden_states[-clip_skip])


def final_layer_norm(text_encoder: CLIPTextModel) -> torch.nn.Module:
    """transformers 5 keeps it on the model itself; 4.x under .text_model."""
    norm = getattr(text_encoder, "final_layer_norm", None)
    return norm if norm is not None else text_encoder.text_model.final_layer_norm


MEAN_TOLERANCE = 1e-3  # a mean below this share of the mean magnitude is taken as zero (see _emphasized)


def _emphasized(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Scale each token's embedding by its weight, then restore the chunk's mean (A1111's "Original").

    A1111 divides by the new mean unguarded. Where either mean is (about) zero against the embedding's size,
    the ratio is noise or 0/0 = NaN, so the weighted embedding is kept as it is: never a NaN from a prompt."""
    if all(weight == 1.0 for weight in weights):
        return hidden  # bit for bit what diffusers computes
    import torch

    original_mean = hidden.mean()
    weighted = hidden * torch.tensor(weights, device=hidden.device, dtype=hidden.dtype).reshape(1, -1, 1)
    new_mean = weighted.mean()
    floor = MEAN_TOLERANCE * weighted.abs().mean()
    if not (torch.isfinite(floor) and original_mean.abs() > floor and new_mean.abs() > floor):
        return weighted
    return weighted * (original_mean / new_mean)


def pad_to_chunks(embeds: torch.Tensor, chunks: int, empty: torch.Tensor) -> torch.Tensor:
    """Lengthen (1, 77 k, D) to `chunks` x 77 with the empty prompt's chunk, so a prompt and its negative
    (or prompts of one batch) stack; A1111's "pad prompt/negative prompt" option does the same."""
    import torch

    missing = chunks - embeds.shape[1] // empty.shape[1]
    return embeds if missing <= 0 else torch.cat([embeds, empty.repeat(1, missing, 1)], dim=1)
