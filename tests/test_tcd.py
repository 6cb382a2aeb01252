"""TCD (diffusers' TCDScheduler) under sdgen's loop against diffusers' pipeline with TCDScheduler, with the
eta (gamma) passed as the pipeline's `eta`: same tiny model, float32, within 1/255 (tests/test_pipeline.py
runs it too, at the default eta, with every other scheduler)."""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.config.options import default
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError

from .conftest import SIZE

PROMPT = "a red fox in the snow"


def _reference(parts, seed: int, steps: int, eta: float, guidance: float) -> np.ndarray:
    import torch
    from diffusers import StableDiffusionPipeline, TCDScheduler

    pipe = StableDiffusionPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=TCDScheduler.from_config(parts.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, eta=eta, width=SIZE, height=SIZE,
                 generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return np.asarray(image).astype(np.int16)


def _ours(parts, seed: int, steps: int, eta: float, guidance: float) -> np.ndarray:
    request = GenerationRequest(PROMPT, seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                                scheduler="tcd", tcd_eta=eta, width=SIZE, height=SIZE)
    [result] = generate(request, parts)
    return np.asarray(result.image).astype(np.int16)


@pytest.mark.parametrize(("steps", "eta", "guidance"), [(2, 0.0, 1.0), (2, 0.8, 3.0)])
def test_tcd_matches_diffusers_pipeline(tiny_parts, steps: int, eta: float, guidance: float) -> None:
    ours = _ours(tiny_parts, 7, steps, eta, guidance)
    assert ours.std() > 10, "a flat image would make the comparison meaningless"
    assert np.abs(ours - _reference(tiny_parts, 7, steps, eta, guidance)).max() <= 1


def test_eta_changes_the_picture_and_defaults_to_tcds_own(tiny_parts) -> None:
    import inspect

    from diffusers import TCDScheduler

    assert default("tcd_eta") == inspect.signature(TCDScheduler.step).parameters["eta"].default == 0.3
    assert np.abs(_ours(tiny_parts, 3, 2, 0.0, 1.0) - _ours(tiny_parts, 3, 2, 0.9, 1.0)).max() > 10


@pytest.mark.parametrize("eta", [-0.1, 1.5, True])
def test_bad_eta_is_refused_before_loading(eta, no_weights_load) -> None:
    from sdgen.engine.checking import check_request
    from sdgen.engine.request import ModelSpec

    with pytest.raises(InvalidRequestError, match="Invalid tcd_eta .*between 0 and 1"):
        check_request(GenerationRequest(PROMPT, scheduler="tcd", tcd_eta=eta), ModelSpec(model="x/y"))
