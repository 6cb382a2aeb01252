"""Guidance modifiers against their diffusers references on the tiny model in float32 (within 1/255 in
pixels, float32 noise in latents): --guidance-rescale against StableDiffusionPipeline(guidance_rescale=),
--freeu against pipe.enable_freeu, --pag-scale against StableDiffusionPAGPipeline (pag_applied_layers
["mid"]), --sag-scale against StableDiffusionSAGPipeline; and how they combine with the rest."""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError

from .conftest import SIZE
from .test_pipeline import PROMPT, pixels, reference_pipeline
from .test_stepsavers import SCHEDULER, STEPS, assert_same_and_changed, ours, references


def pipeline_like(cls, parts, scheduler_name: str = SCHEDULER, **kwargs):
    """A diffusers pipeline of class `cls` on the same parts and scheduler as reference_pipeline's."""
    base = reference_pipeline(parts, scheduler_name)
    pipe = cls(**{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
               safety_checker=None, feature_extractor=None, requires_safety_checker=False, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_guidance_rescale_matches_diffusers(tiny_parts, fraction: float) -> None:
    pipe = reference_pipeline(tiny_parts, SCHEDULER)
    expected = references(pipe, guidance_rescale=fraction, guidance_scale=12.0)
    assert_same_and_changed(tiny_parts, expected, {"guidance_rescale": fraction, "guidance_scale": 12.0})


def test_freeu_matches_diffusers_and_leaves_the_model_unchanged(tiny_parts) -> None:
    import torch

    state = {key: value.clone() for key, value in tiny_parts.unet.state_dict().items()}
    blocks = [dict(vars(block)) for block in tiny_parts.unet.up_blocks]
    pipe = reference_pipeline(tiny_parts, SCHEDULER)
    pipe.enable_freeu(b1=1.5, b2=1.6, s1=0.9, s2=0.2)
    try:
        expected = references(pipe)
    finally:
        pipe.disable_freeu()
    for block in tiny_parts.unet.up_blocks:  # diffusers leaves None behind; sdgen removes what it added
        for key in ("b1", "b2", "s1", "s2"):
            vars(block).pop(key, None)
    assert_same_and_changed(tiny_parts, expected, {"freeu": "1.5,1.6,0.9,0.2"})
    assert [dict(vars(block)) for block in tiny_parts.unet.up_blocks] == blocks
    assert all(torch.equal(value, state[key]) for key, value in tiny_parts.unet.state_dict().items())


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_pag_matches_diffusers_pag_pipeline(tiny_parts, guidance: float) -> None:
    from diffusers import StableDiffusionPAGPipeline

    pipe = pipeline_like(StableDiffusionPAGPipeline, tiny_parts, pag_applied_layers=["mid"])
    expected = references(pipe, pag_scale=3.0, guidance_scale=guidance)
    assert_same_and_changed(tiny_parts, expected, {"pag_scale": 3.0, "guidance_scale": guidance})
    processors = tiny_parts.unet.attn_processors
    assert all(type(p).__name__ != "IdentityAttention" for p in processors.values())


def test_pag_with_guidance_rescale_matches_diffusers(tiny_parts) -> None:
    from diffusers import StableDiffusionPAGPipeline

    pipe = pipeline_like(StableDiffusionPAGPipeline, tiny_parts, pag_applied_layers=["mid"])
    expected = references(pipe, pag_scale=2.0, guidance_rescale=0.7)
    assert_same_and_changed(tiny_parts, expected, {"pag_scale": 2.0, "guidance_rescale": 0.7})


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_sag_matches_diffusers_sag_pipeline(tiny_parts, guidance: float) -> None:
    from diffusers import StableDiffusionSAGPipeline

    before = dict(tiny_parts.unet.attn_processors)
    pipe = pipeline_like(StableDiffusionSAGPipeline, tiny_parts)
    expected = references(pipe, sag_scale=0.75, guidance_scale=guidance)
    assert_same_and_changed(tiny_parts, expected, {"sag_scale": 0.75, "guidance_scale": guidance})
    assert tiny_parts.unet.attn_processors == before
