"""Prompt text -> CLIP embeddings the U-Net attends to (its `encoder_hidden_states`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

log = logging.getLogger("sdgen")


def encode_prompt(
    text: str, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, device: str | torch.device
) -> torch.Tensor:
    """Tokenize to CLIP's fixed 77 tokens (padded, truncated) and return the last hidden state.

    Returns (1, 77, D): D = 768 for SD1.x. Text past 77 tokens is cut, as in diffusers, with a warning.
    """
    tokens = tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    untruncated = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > tokens.input_ids.shape[-1]:
        cut = tokenizer.batch_decode(untruncated[:, tokenizer.model_max_length - 1 : -1])[0]
        log.warning("Prompt truncated: CLIP reads %d tokens; dropped %r", tokenizer.model_max_length, cut)
    # SD1.x text encoders take no attention mask: padding tokens are attended to, as in training.
    prompt_embeds = text_encoder(tokens.input_ids.to(device))[0]  # (1, 77, D)
    return prompt_embeds
