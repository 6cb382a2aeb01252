"""Prompt -> CLIP embeddings, A1111's way: chunks of 75 tokens, BREAK, the comma rule, emphasis with the
mean put back, and clip skip, each against a reference computed by hand from the text encoder itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sdgen.engine.text import (
    TextOptions,
    _emphasized,
    chunk_prompt,
    encode_prompt,
    final_layer_norm,
    pad_to_chunks,
)


def encode(parts, text: str, **options) -> torch.Tensor:
    with torch.inference_mode():
        return encode_prompt(text, parts.tokenizer, parts.text_encoder, "cpu", TextOptions(**options))


def diffusers_way(parts, text: str, clip_skip: int | None = None) -> torch.Tensor:
    """What diffusers' StableDiffusionPipeline.encode_prompt computes (77 tokens, its clip_skip counting the
    layers skipped), written out here because its own clip-skip path fails on transformers 5."""
    ids = parts.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        if clip_skip is None:
            return parts.text_encoder(ids)[0]
        hidden = parts.text_encoder(ids, output_hidden_states=True)[-1][-(clip_skip + 1)]
        return final_layer_norm(parts.text_encoder)(hidden)


def test_short_prompt_is_exactly_what_diffusers_encodes(tiny_parts) -> None:
    embeds = encode(tiny_parts, "a cat")
    assert embeds.shape == (1, 77, 32)
    assert torch.equal(embeds, diffusers_way(tiny_parts, "a cat"))


def test_long_prompt_is_not_truncated_but_chunked(tiny_parts) -> None:
    prompt = "cat " * 25 + "dog " * 25 + "owl " * 17  # 3 tokens a word in the tiny tokenizer: 201 tokens
    embeds = encode(tiny_parts, prompt)
    assert embeds.shape == (1, 3 * 77, 32)
    # each chunk is 75 tokens with their own start and end tokens
    assert torch.equal(embeds[:, :77], encode(tiny_parts, "cat " * 25))
    assert torch.equal(embeds[:, 77:154], encode(tiny_parts, "dog " * 25))
    assert torch.equal(embeds[:, 154:], encode(tiny_parts, "owl " * 17))


def test_75_tokens_fill_one_chunk_and_76_start_a_second(tiny_parts) -> None:
    assert len(chunk_prompt("cat " * 25, tiny_parts.tokenizer).ids) == 1
    assert len(chunk_prompt("cat " * 25 + "a", tiny_parts.tokenizer).ids) == 2


def test_every_chunk_has_start_and_end_and_is_padded_with_end(tiny_parts) -> None:
    tokenizer = tiny_parts.tokenizer
    chunks = chunk_prompt("cat " * 30, tokenizer)  # 90 tokens
    for ids in chunks.ids:
        assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert chunks.ids[1][16:] == [tokenizer.eos_token_id] * 61  # 15 tokens, then padding


def test_break_starts_a_new_chunk(tiny_parts) -> None:
    embeds = encode(tiny_parts, "a cat BREAK a dog")
    assert embeds.shape == (1, 154, 32)
    assert torch.equal(embeds[:, :77], encode(tiny_parts, "a cat"))
    assert torch.equal(embeds[:, 77:], encode(tiny_parts, "a dog"))


def test_no_weighting_reads_break_and_brackets_as_text(tiny_parts) -> None:
    embeds = encode(tiny_parts, "a (cat:1.5) BREAK", weighting=False)
    assert torch.equal(embeds, diffusers_way(tiny_parts, "a (cat:1.5) BREAK"))


def test_a_full_chunk_breaks_after_a_comma_within_20_tokens(tiny_parts) -> None:
    tokenizer = tiny_parts.tokenizer
    a, comma, b = (tokenizer.convert_tokens_to_ids(t) for t in ("a</w>", ",</w>", "b</w>"))
    chunks = chunk_prompt("a " * 70 + ", " + "b " * 10, tokenizer)  # comma at token 71 of 81
    assert chunks.ids[0][1:72] == [a] * 70 + [comma]
    assert chunks.ids[0][72:] == [tokenizer.eos_token_id] * 5  # the b's moved on
    assert chunks.ids[1][1:11] == [b] * 10
    far = chunk_prompt("a " * 40 + ", " + "b " * 40, tokenizer)  # comma 35 tokens back: no move
    assert far.ids[0][1:76] == [a] * 40 + [comma] + [b] * 34


@pytest.fixture
def shifted_parts(tiny_parts):
    """The tiny model with a text encoder whose output mean is clearly not zero (its final layer norm's bias
    moved): the tiny encoder's own output has a mean of about zero, unlike a trained CLIP's."""
    import copy

    text_encoder = copy.deepcopy(tiny_parts.text_encoder)
    with torch.no_grad():
        final_layer_norm(text_encoder).bias.add_(0.5)
    return SimpleNamespace(tokenizer=tiny_parts.tokenizer, text_encoder=text_encoder)


def test_emphasis_scales_token_embeddings_then_restores_the_mean(shifted_parts) -> None:
    tokenizer = shifted_parts.tokenizer
    chunks = chunk_prompt("a (cat:1.5) [dog]", tokenizer)
    weights = chunks.weights[0]
    cat = tokenizer("cat", add_special_tokens=False).input_ids
    dog = tokenizer("dog", add_special_tokens=False).input_ids
    assert weights[:2] == [1.0, 1.0]  # the start token, then 'a' (one token)
    assert weights[2 : 2 + len(cat)] == [1.5] * len(cat)
    assert weights[2 + len(cat) : 2 + len(cat) + len(dog)] == [pytest.approx(1 / 1.1)] * len(dog)
    # by hand: z * w, times original mean / new mean
    with torch.inference_mode():
        z = shifted_parts.text_encoder(torch.tensor(chunks.ids))[0]
    assert z.mean().abs() > 0.1  # the premise: a mean to restore
    scaled = z * torch.tensor(weights).reshape(1, -1, 1)
    expected = scaled * (z.mean() / scaled.mean())
    embeds = encode(shifted_parts, "a (cat:1.5) [dog]")
    assert torch.allclose(embeds, expected, atol=1e-6)
    assert embeds.mean().item() == pytest.approx(z.mean().item(), rel=1e-5)
    assert not torch.allclose(expected, z)


@pytest.mark.parametrize("offset", [0.0, 1e-9])
def test_emphasis_keeps_the_weighted_embedding_when_a_mean_is_about_zero(offset: float) -> None:
    # a zero-mean embedding (each token's vector sums to zero, as a layer norm without bias gives)
    hidden = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(0))
    hidden = hidden - hidden.mean(dim=-1, keepdim=True) + offset
    weights = [1.0, 1.5, 0.5, *[1.0] * 74]
    embeds = _emphasized(hidden, weights)
    assert torch.isfinite(embeds).all()
    assert torch.equal(embeds, hidden * torch.tensor(weights).reshape(1, -1, 1))


def test_emphasis_on_the_tiny_model_never_gives_nan(tiny_parts) -> None:
    embeds = encode(tiny_parts, "a (cat:1.5) [dog] ((((fox:1.9))))")
    assert torch.isfinite(embeds).all()


def test_weight_one_equals_the_plain_prompt(tiny_parts) -> None:
    assert torch.equal(encode(tiny_parts, "a (cat:1.0)"), encode(tiny_parts, "a cat"))


def test_emphasis_on_a_long_prompt_weighs_the_right_chunk(tiny_parts) -> None:
    plain = encode(tiny_parts, "cat " * 30 + "dog")
    weighted = encode(tiny_parts, "cat " * 30 + "(dog:1.4)")
    assert torch.equal(plain[:, :77], weighted[:, :77])
    assert not torch.allclose(plain[:, 77:], weighted[:, 77:])


@pytest.mark.parametrize("clip_skip", [2, 3])
def test_clip_skip_n_equals_diffusers_clip_skip_n_minus_1(tiny_parts, clip_skip: int) -> None:
    ours = encode(tiny_parts, "a cat", clip_skip=clip_skip)
    assert torch.allclose(ours, diffusers_way(tiny_parts, "a cat", clip_skip=clip_skip - 1), atol=1e-6)
    assert not torch.allclose(ours, encode(tiny_parts, "a cat"))


def test_clip_skip_one_is_the_last_layer(tiny_parts) -> None:
    assert torch.equal(encode(tiny_parts, "a cat", clip_skip=1), diffusers_way(tiny_parts, "a cat"))


def test_pad_to_chunks_appends_the_empty_prompt(tiny_parts) -> None:
    empty = encode(tiny_parts, "")
    short = encode(tiny_parts, "a cat")
    padded = pad_to_chunks(short, 3, empty)
    assert padded.shape == (1, 231, 32)
    assert torch.equal(padded[:, :77], short) and torch.equal(padded[:, 154:], empty)
    assert pad_to_chunks(padded, 2, empty) is padded
