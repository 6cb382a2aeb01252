"""The loop's two public extension points against diffusers (float32, within 1/255): a step-end hook that
swaps the prompt's embedding, as `callback_on_step_end` does, and a predictor wrapper that feeds the U-Net
ControlNet's residuals through the conditioning, as StableDiffusionControlNetPipeline does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sdgen.engine import plugins
from sdgen.engine.denoise import Conditioning, NoisePredictor, StepEnd
from sdgen.engine.pipeline import generate
from sdgen.engine.plugins import Plugin, Run

from .conftest import SIZE
from .test_pipeline import PROMPT, STEPS, pixels, reference_pipeline, request

SWAP_AT = 1  # the steps after this index see the other prompt
OTHER_PROMPT = "a red fox sleeping in the snow"


def latents_and_pixels(parts, **kwargs) -> tuple:
    steps: list = []
    [result] = generate(request(scheduler="euler-a", seed=7), parts, on_step=steps.append, **kwargs)
    return steps[-1].latents, pixels(result.image)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_swapping_the_prompt_embedding_at_step_k_matches_callback_on_step_end(tiny_parts, guidance: float) -> None:
    import torch

    pipe = reference_pipeline(tiny_parts, "euler-a")
    other = pipe.encode_prompt(OTHER_PROMPT, "cpu", 1, False)[0]  # (1, 77, D), the same tensor on both sides

    def diffusers_swap(pipeline, index: int, t, callback_kwargs: dict) -> dict:
        if index == SWAP_AT:  # with guidance diffusers' prompt_embeds is the batch [negative, positive]
            embeds = callback_kwargs["prompt_embeds"]
            callback_kwargs["prompt_embeds"] = torch.cat([embeds[:1], other]) if guidance > 1 else other
        return callback_kwargs

    def our_swap(step: StepEnd) -> StepEnd | None:
        if step.index != SWAP_AT:
            return None
        return dataclasses.replace(step, conditioning=dataclasses.replace(step.conditioning, prompt_embeds=other))

    image = pipe(
        PROMPT, num_inference_steps=STEPS, width=SIZE, height=SIZE, guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(7),
        callback_on_step_end=diffusers_swap, callback_on_step_end_tensor_inputs=["prompt_embeds"],
    ).images[0]
    steps: list = []
    [ours] = generate(
        request(scheduler="euler-a", seed=7, guidance_scale=guidance), tiny_parts,
        on_step=steps.append, on_step_end=our_swap,
    )
    assert np.abs(pixels(ours.image) - pixels(image)).max() <= 1
    plain: list = []
    generate(request(scheduler="euler-a", seed=7, guidance_scale=guidance), tiny_parts, on_step=plain.append)
    assert torch.equal(steps[SWAP_AT].latents, plain[SWAP_AT].latents), "the swap acts from the next step on"
    assert (steps[-1].latents - plain[-1].latents).abs().max() > 1e-3, "the swap must change the run"


class ControlNetWrapper:
    """What a ControlNet plug-in's predictor wrapper does: run the ControlNet on the step's input, then the
    U-Net call below with its residuals in the conditioning."""

    def __init__(self, inner: NoisePredictor, controlnet, image) -> None:
        self.inner, self.controlnet, self.image = inner, controlnet, image  # image: (1, 3, H, W) in [0, 1]

    def __call__(self, model_input, t, cond: Conditioning):
        image = self.image.repeat(model_input.shape[0], 1, 1, 1)  # one per row: [uncond, cond] when guiding
        down, mid = self.controlnet(
            model_input, t, encoder_hidden_states=cond.encoder_hidden_states(), controlnet_cond=image,
            conditioning_scale=1.0, return_dict=False,
        )
        with_residuals = dataclasses.replace(
            cond, down_block_additional_residuals=tuple(down), mid_block_additional_residual=mid
        )
        return self.inner(model_input, t, with_residuals)


@pytest.fixture(scope="module")
def tiny_controlnet(tiny_parts):
    """A ControlNet of the tiny U-Net (its conditioning embedding downsamples 2x, as the tiny VAE does) with
    its zero convolutions made random, so that its residuals change the picture."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(tiny_parts.unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            for parameter in block.parameters():
                parameter.normal_(0, 0.1)
    return controlnet.eval()


def test_a_controlnet_as_a_predictor_wrapper_matches_diffusers_controlnet_pipeline(
    tiny_parts, tiny_controlnet, monkeypatch
) -> None:
    import torch
    from diffusers import StableDiffusionControlNetPipeline
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    y, x = np.mgrid[0:SIZE, 0:SIZE]
    control = Image.fromarray((np.stack([x, y, x * 0], axis=-1) * 4).astype(np.uint8))
    reference = StableDiffusionControlNetPipeline(
        **{name: getattr(reference_pipeline(tiny_parts, "euler-a"), name) for name in
           ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        controlnet=tiny_controlnet, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    reference.set_progress_bar_config(disable=True)
    expected = reference(
        PROMPT, image=control, num_inference_steps=STEPS, width=SIZE, height=SIZE,
        generator=torch.Generator("cpu").manual_seed(7),
    ).images[0]

    image = VaeImageProcessor(vae_scale_factor=2, do_convert_rgb=True, do_normalize=False).preprocess(control)
    def wrap(inner: NoisePredictor, run: Run) -> NoisePredictor:
        return ControlNetWrapper(inner, tiny_controlnet, image)

    monkeypatch.setattr(plugins, "PLUGINS", dict(plugins.PLUGINS))
    plugins.register(Plugin("controlnet-by-hand", options=(), wrap_predictor=wrap))
    latents, ours = latents_and_pixels(tiny_parts)
    assert np.abs(ours - pixels(expected)).max() <= 1
    del plugins.PLUGINS["controlnet-by-hand"]
    plain_latents, _ = latents_and_pixels(tiny_parts)
    assert (latents - plain_latents).abs().max() > 1e-3, "the residuals must change the run"


def test_the_conditional_half_halves_every_guided_input() -> None:
    import torch

    negative, positive = torch.zeros(2, 77, 8), torch.ones(2, 77, 8)
    residuals = (torch.arange(4.0).view(4, 1), torch.arange(4.0).view(4, 1) * 10)
    guided = Conditioning(
        positive, negative, added_cond_kwargs={"image_embeds": [torch.arange(4.0)]},
        cross_attention_kwargs={"scale": 0.5}, down_block_additional_residuals=residuals,
        mid_block_additional_residual=torch.arange(4.0), concat_channels=torch.arange(4.0).view(4, 1, 1, 1),
    )
    assert guided.encoder_hidden_states().shape == (4, 77, 8) and guided.encoder_hidden_states()[0].sum() == 0
    half = guided.conditional()
    assert not half.guided and torch.equal(half.encoder_hidden_states(), positive)
    assert [r.flatten().tolist() for r in half.down_block_additional_residuals] == [[2, 3], [20, 30]]
    assert half.mid_block_additional_residual.tolist() == [2, 3]
    assert half.added_cond_kwargs["image_embeds"][0].tolist() == [2, 3]
    assert half.cross_attention_kwargs == {"scale": 0.5}
    assert half.concat_channels.flatten().tolist() == [2, 3] and half.unet_input(torch.zeros(2, 3, 1, 1)).shape[1] == 4
    assert set(half.unet_kwargs()) == {
        "encoder_hidden_states", "added_cond_kwargs", "cross_attention_kwargs",
        "down_block_additional_residuals", "mid_block_additional_residual",
    }
    assert set(Conditioning(positive).unet_kwargs()) == {"encoder_hidden_states"}, "plain runs call the U-Net as before"


def test_a_plugin_sees_each_run_with_its_request_scheduler_and_timesteps(tiny_parts, monkeypatch) -> None:
    seen: list[Run] = []

    def watch(inner: NoisePredictor, run: Run) -> NoisePredictor:
        seen.append(run)
        return inner

    monkeypatch.setattr(plugins, "PLUGINS", dict(plugins.PLUGINS))
    plugins.register(Plugin("watcher", options=(), wrap_predictor=watch))
    generate(request(hires_scale=1.5, hires_steps=2), tiny_parts)
    assert len(seen) == 2 and len(seen[0].timesteps) == STEPS, "the first pass and the hires pass"
    assert seen[0].scheduler is not seen[1].scheduler, "a fresh scheduler per run"
    assert all(run.parts is tiny_parts and run.request.hires_scale == 1.5 for run in seen)
