"""Prompt encoding."""

from __future__ import annotations

import logging

import torch

from sdgen.text import encode_prompt


def test_prompt_becomes_77_token_embeddings(tiny_parts) -> None:
    embeds = encode_prompt("a cat", tiny_parts.tokenizer, tiny_parts.text_encoder, "cpu")
    assert embeds.shape == (1, 77, 32)


def test_different_prompts_give_different_embeddings(tiny_parts) -> None:
    a = encode_prompt("a cat", tiny_parts.tokenizer, tiny_parts.text_encoder, "cpu")
    b = encode_prompt("a dog", tiny_parts.tokenizer, tiny_parts.text_encoder, "cpu")
    assert not torch.allclose(a, b)


def test_long_prompt_is_truncated_with_a_warning(tiny_parts, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sdgen")
    embeds = encode_prompt("cat " * 100, tiny_parts.tokenizer, tiny_parts.text_encoder, "cpu")
    assert embeds.shape == (1, 77, 32)
    assert "Prompt truncated" in caplog.text
