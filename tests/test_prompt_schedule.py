"""Prompt editing, alternation and AND in the loop (sdgen/engine/prompt_schedule.py and plugins/composable.py).

Editing is checked against diffusers' StableDiffusionPipeline given the same embedding switches through
`callback_on_step_end` (float32, within 1/255); the texts each step reads are written out by hand from
A1111's rules (its step counter starts at 0, an entry lasts through its end_at_step). AND is checked against
a loop built by hand from the tiny U-Net: each part and the unconditional prediction in calls of their own,
combined as A1111's combine_denoised does (uncond + sum_k w_k * scale * (cond_k - uncond)).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sdgen.engine.checking import check_request
from sdgen.engine.pipeline import ImageTask, generate, generate_batch
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError

from .conftest import SIZE
from .test_pipeline import pixels, reference_pipeline

STEPS = 6
NEGATIVE = "blurry"


def edited(prompt: str, **overrides) -> GenerationRequest:
    values = dict(prompt=prompt, negative_prompt=NEGATIVE, seed=7, num_inference_steps=STEPS, width=SIZE,
                  height=SIZE, scheduler="euler-a")
    values.update(overrides)
    return GenerationRequest(**values)


def diffusers_with_texts(parts, texts: list[str], negatives: list[str], guidance: float = 7.5):
    """diffusers' pipeline whose prompt (and negative) at step i is texts[i] (negatives[i]), switched through
    callback_on_step_end after step i - 1."""
    import torch

    pipe = reference_pipeline(parts, "euler-a")

    def embed(text: str):
        return pipe.encode_prompt(text, "cpu", 1, False)[0]

    def switch(pipeline, index: int, t, callback_kwargs: dict) -> dict:
        following = min(index + 1, len(texts) - 1)
        embeds = embed(texts[following])
        callback_kwargs["prompt_embeds"] = torch.cat([embed(negatives[following]), embeds]) if guidance > 1 else embeds
        return callback_kwargs

    return pipe(
        prompt_embeds=embed(texts[0]), negative_prompt_embeds=embed(negatives[0]), num_inference_steps=STEPS,
        width=SIZE, height=SIZE, guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(7),
        callback_on_step_end=switch, callback_on_step_end_tensor_inputs=["prompt_embeds"],
    ).images[0]


CAT, DOG = "a cat in snow", "a dog in snow"


@pytest.mark.parametrize(
    ("prompt", "texts"),
    [
        # [from:to:0.5] of 6 steps: entry (3, from), (6, to): steps 0-3 read `from`
        ("a [cat:dog:0.5] in snow", [CAT] * 4 + [DOG] * 2),
        # [to:2]: steps 0-2 without it
        ("a [dog:2] in snow", ["a  in snow"] * 3 + [DOG] * 3),
        # [from::0.5]
        ("a cat [in snow::0.5]", [CAT] * 4 + ["a cat "] * 2),
        # [a|b] alternates: entries end at every step, so step 0 and 1 both read the first
        ("a [cat|dog] in snow", [CAT, CAT, DOG, CAT, DOG, CAT]),
        # nested: [cat:[dog:fox:4]:1]
        ("a [cat:[dog:fox:4]:1] in snow", [CAT, CAT, DOG, DOG, DOG, "a fox in snow"]),
    ],
)
def test_editing_matches_diffusers_given_the_same_switches(tiny_parts, prompt: str, texts: list[str]) -> None:
    steps: list = []
    [ours] = generate(edited(prompt), tiny_parts, on_step=steps.append)
    reference = diffusers_with_texts(tiny_parts, texts, [NEGATIVE] * STEPS)
    assert np.abs(pixels(ours.image) - pixels(reference)).max() <= 1
    plain: list = []
    generate(edited(texts[0]), tiny_parts, on_step=plain.append)
    assert (steps[-1].latents - plain[-1].latents).abs().max() > 1e-4, "the edit must change the run"


def test_the_negative_prompt_is_scheduled_too(tiny_parts) -> None:
    [ours] = generate(edited("a [cat:dog:0.5] in snow", negative_prompt="[blurry:ugly:1]"), tiny_parts)
    reference = diffusers_with_texts(tiny_parts, [CAT] * 4 + [DOG] * 2, ["blurry"] * 2 + ["ugly"] * 4)
    assert np.abs(pixels(ours.image) - pixels(reference)).max() <= 1


def test_without_guidance_the_prompt_alone_is_switched(tiny_parts) -> None:
    [ours] = generate(edited("a [cat:dog:0.5] in snow", guidance_scale=1.0), tiny_parts)
    reference = diffusers_with_texts(tiny_parts, [CAT] * 4 + [DOG] * 2, [NEGATIVE] * STEPS, guidance=1.0)
    assert np.abs(pixels(ours.image) - pixels(reference)).max() <= 1


def embeds_seen(parts, request: GenerationRequest) -> list:
    """The prompt embedding each step after the first runs with (what the step-end hooks hand on)."""
    seen: list = []

    def spy(step):
        seen.append(step.conditioning.prompt_embeds[:1].clone())

    generate(request, parts, on_step_end=spy)
    return seen


def encoded(parts, text: str, weighting: bool = True):
    from sdgen.engine.text import TextOptions, encode_prompt

    return encode_prompt(text, parts.tokenizer, parts.text_encoder, "cpu", TextOptions(weighting=weighting))


def test_the_hires_pass_counts_its_steps_as_a1111(tiny_parts) -> None:
    """First pass 6 steps, hires pass 4 steps at strength 0.5 (2 of them run). The first pass reads
    `[cat:dog:1.25]` as 7.5 steps (cat throughout) and `[fox:8]` past its end (no fox). The hires pass counts
    on from the first: 1.25 is a quarter into it (step 1), 8 is its step 2, so its schedule is (1, cat),
    (2, dog), (4, dog fox): hires steps 0 and 1 read cat, the step after reads dog."""
    import torch

    request = edited("a [cat:dog:1.25] [fox:8]", hires_scale=2, hires_steps=4, hires_strength=0.5)
    seen = embeds_seen(tiny_parts, request)
    assert len(seen) == STEPS + 2
    cat = encoded(tiny_parts, "a cat ")
    assert all(torch.equal(embeds, cat) for embeds in seen[:STEPS]), "the first pass reads cat, no fox"
    assert torch.equal(seen[STEPS], cat), "hires step 1 still reads cat"
    assert torch.equal(seen[STEPS + 1], encoded(tiny_parts, "a dog ")), "the step after hires step 1: dog"


def test_no_weighting_reads_the_brackets_as_typed(tiny_parts) -> None:
    import torch

    prompt = "a [cat:dog:0.5] AND [x|y]"
    seen = embeds_seen(tiny_parts, edited(prompt, weighting=False))
    literal = encoded(tiny_parts, prompt, weighting=False)
    assert all(torch.equal(embeds, literal) for embeds in seen)


def test_a_plain_prompt_is_encoded_as_before_and_switches_nothing(tiny_parts) -> None:
    from sdgen.engine.prompt_schedule import PassSteps, image_prompts, prompt_switch

    request = check_request(edited("a (red:1.2) fox BREAK in snow"))
    images = [image_prompts(request.prompt, request, PassSteps(STEPS), lambda text: encoded(tiny_parts, text))]
    assert prompt_switch(images) is None and images[0].plain


# ---- AND -----------------------------------------------------------------------------------------


def composable_reference(parts, texts_per_part: list[list[str]], weights: list[float], negative: str,
                         guidance: float, scheduler: str = "euler") -> object:
    """A1111's composable diffusion written out on the tiny U-Net: every prediction in a call of its own."""
    import diffusers
    import torch

    from sdgen.config.schedulers import scheduler_spec

    spec = scheduler_spec(scheduler)
    sampler = getattr(diffusers, spec.class_name).from_config(parts.scheduler_config, **spec.options)
    sampler.set_timesteps(STEPS)
    generator = torch.Generator("cpu").manual_seed(7)
    latents = torch.randn((1, 4, SIZE // 2, SIZE // 2), generator=generator) * sampler.init_noise_sigma
    uncond_embeds = encoded(parts, negative)
    with torch.inference_mode():
        for index, t in enumerate(sampler.timesteps):
            model_input = sampler.scale_model_input(latents, t)
            uncond = parts.unet(model_input, t, encoder_hidden_states=uncond_embeds).sample
            denoised = uncond.clone()
            for texts, weight in zip(texts_per_part, weights, strict=True):
                cond = parts.unet(model_input, t, encoder_hidden_states=encoded(parts, texts[index])).sample
                denoised += (cond - uncond) * (weight * guidance)
            latents = sampler.step(denoised, t, latents).prev_sample
    return latents


def final_latents(parts, request: GenerationRequest):
    steps: list = []
    generate(request, parts, on_step=steps.append)
    return steps[-1].latents


@pytest.mark.parametrize(
    ("prompt", "texts", "weights"),
    [
        ("a cat :1.2 AND a dog :0.8", [["a cat"] * STEPS, [" a dog"] * STEPS], [1.2, 0.8]),
        ("a red fox:1.5", [["a red fox"] * STEPS], [1.5]),
        ("a [cat:dog:0.5] AND snow :0.5", [["a cat"] * 4 + ["a dog"] * 2, [" snow"] * STEPS], [1.0, 0.5]),
        ("a cat AND a dog AND a cat", [["a cat"] * STEPS, [" a dog"] * STEPS, [" a cat"] * STEPS], [1, 1, 1]),
    ],
)
def test_and_combines_the_parts_as_a1111(tiny_parts, prompt: str, texts: list, weights: list) -> None:
    ours = final_latents(tiny_parts, edited(prompt, scheduler="euler"))
    reference = composable_reference(tiny_parts, texts, weights, NEGATIVE, 7.5)
    assert (ours - reference).abs().max() <= 1e-3  # latents of magnitude ~20: float32 rounding only
    unweighted = composable_reference(tiny_parts, texts, [1.0] * len(weights), NEGATIVE, 7.5)
    if weights != [1.0] * len(weights):
        assert (unweighted - reference).abs().max() > 1e-2, "the weights must matter"


def test_and_runs_the_parts_in_one_unet_call(tiny_parts, monkeypatch) -> None:
    calls: list = []
    unet = tiny_parts.unet
    original = type(unet).forward

    def counting(self, sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return original(self, sample, *args, **kwargs)

    monkeypatch.setattr(type(unet), "forward", counting)
    generate(edited("a cat AND a dog AND a fox", scheduler="euler"), tiny_parts)
    assert calls == [4] * STEPS, "one call a step: the unconditional row and three parts"


def test_images_with_other_schedules_and_parts_share_a_batch_and_equal_their_own_runs(tiny_parts) -> None:
    prompts = ["a [cat:dog:0.5] in snow", "a cat :1.2 AND a dog :0.8", "a [cat|dog]", "a plain fox"]
    requests = [check_request(edited(prompt, scheduler="euler")) for prompt in prompts]
    together = generate_batch([ImageTask.of(request) for request in requests], tiny_parts)
    for request, image in zip(requests, together, strict=True):
        [alone] = generate(request, tiny_parts)
        assert np.abs(pixels(image.image) - pixels(alone.image)).max() <= 1, request.prompt


def test_a_long_edited_prompt_pads_its_short_entries(tiny_parts) -> None:
    """Entries of one image share one length (empty chunks, as a prompt and its negative always had)."""
    long_text = ", ".join(["a very detailed painting of a small red fox"] * 12)
    [image] = generate(edited(f"[{long_text}:a fox:0.5]"), tiny_parts)
    assert image.image.size == (SIZE, SIZE)


@pytest.mark.parametrize(
    ("overrides", "key"), [({"guidance_scale": 1.0}, "guidance_scale"), ({"cfg_end": 0.5}, "cfg_end")]
)
def test_and_without_the_unconditional_prediction_is_refused(no_weights_load, overrides: dict, key: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_request(edited("a cat AND a dog", **overrides))
    assert caught.value.key == key and "AND" in str(caught.value)
    check_request(edited("a cat AND a dog", weighting=False, **overrides))  # read as typed: nothing to combine


def test_and_with_inpainting_gives_each_part_the_mask(tiny_parts, tmp_path) -> None:
    """The 4-channel blend and the final paste act on the combined prediction as on a plain one."""
    from PIL import Image

    init = Image.new("RGB", (SIZE, SIZE), (200, 120, 40))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = edited("a cat AND a dog", init_image=init, mask=mask, strength=1.0, scheduler="euler")
    [image] = generate(request, tiny_parts)
    assert pixels(image.image)[0, 0].tolist() == [200, 120, 40], "outside the mask: the init image"
    assert dataclasses.is_dataclass(request)


def test_more_and_parts_than_one_unet_call_should_hold_are_refused(no_weights_load) -> None:
    from sdgen.prompts.editing import MAX_PARTS

    check_request(edited(" AND ".join(["a cat"] * MAX_PARTS)))
    with pytest.raises(InvalidRequestError, match=f"{MAX_PARTS + 1} parts joined by AND") as caught:
        check_request(edited(" AND ".join(["a cat"] * (MAX_PARTS + 1))))
    assert caught.value.key == "prompt"
