"""The engine against diffusers' own pipelines: same components, same seed -> same image within 1/255."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdgen.config.options import default, describe
from sdgen.config.schedulers import SCHEDULERS, scheduler_spec
from sdgen.engine.checking import check_request
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError

from .conftest import SIZE

PROMPT = "a photo of an astronaut riding a horse"
STEPS = 4


def reference_pipeline(parts, scheduler_name: str, img2img: bool = False):
    """diffusers' pipeline on the same components, its scheduler built as diffusers documents."""
    import diffusers
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    spec = scheduler_spec(scheduler_name)
    scheduler = getattr(diffusers, spec.class_name).from_config(parts.scheduler_config, **spec.options)
    cls = StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline
    pipe = cls(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_image(parts, scheduler: str, seed: int, **kwargs) -> np.ndarray:
    import torch

    img2img = "image" in kwargs
    pipe = reference_pipeline(parts, scheduler, img2img)
    if not img2img:
        kwargs.setdefault("width", SIZE)
        kwargs.setdefault("height", SIZE)
    kwargs.setdefault("num_inference_steps", STEPS)
    if scheduler == "tcd":  # TCD's eta is a pipeline argument (default 0 there); sdgen's --tcd-eta default is TCD's
        kwargs.setdefault("eta", default("tcd_eta"))
    image = pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]
    return np.asarray(image).astype(np.int16)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def request(**overrides) -> GenerationRequest:
    values = dict(prompt=PROMPT, seed=1234, num_inference_steps=STEPS, width=SIZE, height=SIZE)
    values.update(overrides)
    return GenerationRequest(**values)


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    """A smooth, colourful 64x64 picture: a gradient with a disc."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([x * 4, y * 4, ((x - 32) ** 2 + (y - 32) ** 2 < 300) * 200 + 30], axis=-1)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_text_to_image_matches_diffusers(tiny_parts, scheduler: str) -> None:
    [ours] = generate(request(scheduler=scheduler), tiny_parts)
    reference = reference_image(tiny_parts, scheduler, 1234)
    assert ours.image.size == (SIZE, SIZE) and ours.image.mode == "RGB"
    assert pixels(ours.image).std() > 10, "a flat image would make the comparison meaningless"
    assert np.abs(pixels(ours.image) - reference).max() <= 1


@pytest.mark.parametrize("scheduler", ["euler-a", "dpm++2m-sde-karras", "ddpm"])  # the ones that draw noise per image
def test_several_images_equal_single_runs_with_seed_plus_i(tiny_parts, scheduler: str) -> None:
    results = generate(request(scheduler=scheduler, num_images=3, batch_size=2, seed=50), tiny_parts)
    assert [r.seed for r in results] == [50, 51, 52]
    assert [r.index for r in results] == [0, 1, 2]
    for result in results:
        [single] = generate(request(scheduler=scheduler, seed=result.seed), tiny_parts)
        assert np.abs(pixels(result.image) - pixels(single.image)).max() <= 1
        assert np.abs(pixels(result.image) - reference_image(tiny_parts, scheduler, result.seed)).max() <= 1
    assert np.abs(pixels(results[0].image) - pixels(results[1].image)).max() > 20, "seeds must differ"


@pytest.mark.parametrize("scheduler", ["dpm++2m-karras", "euler-a"])
def test_guidance_scale_one_skips_unconditional_and_matches(tiny_parts, scheduler: str) -> None:
    calls = []
    original = tiny_parts.unet.forward

    def spy(sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    tiny_parts.unet.forward = spy
    try:
        [ours] = generate(request(scheduler=scheduler, guidance_scale=1.0), tiny_parts)
    finally:
        del tiny_parts.unet.forward
    assert calls == [1] * STEPS, "guidance 1 must run the U-Net on the conditional half only"
    reference = reference_image(tiny_parts, scheduler, 1234, guidance_scale=1.0)
    assert np.abs(pixels(ours.image) - reference).max() <= 1


def test_negative_prompt_matches_diffusers(tiny_parts) -> None:
    [ours] = generate(request(scheduler="euler", negative_prompt="blurry, low quality"), tiny_parts)
    reference = reference_image(tiny_parts, "euler", 1234, negative_prompt="blurry, low quality")
    assert np.abs(pixels(ours.image) - reference).max() <= 1
    [plain] = generate(request(scheduler="euler"), tiny_parts)
    assert np.abs(pixels(ours.image) - pixels(plain.image)).max() > 3


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a", "dpm++2m-karras", "heun", "pndm"])
def test_image_to_image_matches_diffusers(tiny_parts, init_image: Image.Image, scheduler: str) -> None:
    results = generate(
        request(
            scheduler=scheduler,
            init_image=init_image,
            strength=0.6,
            num_inference_steps=5,
            width=None,
            height=None,
            num_images=2,
            seed=7,
        ),
        tiny_parts,
    )
    for result in results:
        reference = reference_image(
            tiny_parts, scheduler, result.seed, image=init_image, strength=0.6, num_inference_steps=5
        )
        assert np.abs(pixels(result.image) - reference).max() <= 1
    # the init image matters: a different one gives a different result (a random VAE cannot show more)
    inverted = Image.fromarray(255 - pixels(init_image).astype(np.uint8))
    [other] = generate(
        request(
            scheduler=scheduler,
            init_image=inverted,
            strength=0.6,
            num_inference_steps=5,
            width=None,
            height=None,
            seed=7,
        ),
        tiny_parts,
    )
    assert np.abs(pixels(results[0].image) - pixels(other.image)).max() > 5


def test_image_to_image_from_a_file_resizes_to_the_requested_size(tiny_parts, init_image, tmp_path) -> None:
    path = tmp_path / "init.png"
    init_image.resize((99, 72)).save(path)
    [result] = generate(request(init_image=str(path), width=None, height=None, strength=0.5), tiny_parts)
    assert result.image.size == (96, 72)  # the image's own size, rounded down to a multiple of 8
    assert result.request.width == 96 and result.request.height == 72
    [result] = generate(request(init_image=path, width=132 - 4, height=None, strength=0.5), tiny_parts)
    assert result.image.size == (128, 88)  # 72 * 128 / 99 = 93 px, rounded down to a multiple of 8


def test_same_seed_gives_identical_bytes(tiny_parts) -> None:
    from sdgen.record.output import png_bytes

    first = generate(request(scheduler="euler-a"), tiny_parts)[0].image
    second = generate(request(scheduler="euler-a"), tiny_parts)[0].image
    assert png_bytes(first) == png_bytes(second)


def test_random_seed_is_chosen_and_reported(tiny_parts) -> None:
    [result] = generate(request(seed=None, num_inference_steps=1), tiny_parts)
    assert isinstance(result.seed, int) and 0 <= result.seed < 2**32
    assert result.request.seed == result.seed
    [again] = generate(request(seed=result.seed, num_inference_steps=1), tiny_parts)
    assert np.array_equal(pixels(again.image), pixels(result.image))


def test_step_callback_sees_every_step_with_latents_and_x0(tiny_parts) -> None:
    seen = []
    generate(request(scheduler="dpm++2m-karras", num_images=2, batch_size=2), tiny_parts, on_step=seen.append)
    assert [info.index for info in seen] == list(range(STEPS))
    assert all(info.total == STEPS for info in seen)
    assert seen[0].latents.shape == (2, 4, SIZE // 2, SIZE // 2)
    assert seen[0].pred_x0.shape == seen[0].latents.shape
    assert seen[0].seeds == (1234, 1235)
    assert int(seen[0].timestep) > int(seen[-1].timestep), "timesteps run from noisy to clean"
    # at the last step the scheduler lands on its own x0 estimate (final sigma 0)
    assert np.allclose(seen[-1].latents.numpy(), seen[-1].pred_x0.numpy(), atol=1e-4)


def test_second_order_scheduler_callback_counts_unet_evaluations(tiny_parts) -> None:
    seen = []
    generate(request(scheduler="heun", num_inference_steps=3), tiny_parts, on_step=seen.append)
    assert len(seen) == seen[0].total == 5  # Heun: 2 evaluations per step but the last


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(width=100), "Invalid --width 100: must be a multiple of 8"),
        (dict(height=32), "Invalid --height 32: must be a whole number from 64 to 4096"),
        (dict(num_inference_steps=0), "Invalid --steps 0"),
        (dict(guidance_scale=-1.0), "Invalid --guidance-scale -1.0"),
        (dict(strength=0.0, init_image="x.png"), "Invalid --strength 0.0"),
        (dict(scheduler="fancy"), "Unknown --scheduler 'fancy': choose one of dpm++2m, dpm++sde"),
        (dict(seed=-5), "Invalid --seed -5"),
        (dict(init_image="/no/such/image.png"), "Invalid --init-image '/no/such/image.png': no such file"),
    ],
)
def test_bad_input_is_rejected_before_any_weights_load(no_weights_load, overrides, message) -> None:
    from sdgen.engine.request import ModelSpec
    from sdgen.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError) as caught:
        generate(request(**overrides), ModelSpec(model="never/loaded"))
    assert message in describe(caught.value)


def test_one_batch_can_mix_prompts_and_seeds(tiny_parts) -> None:
    from sdgen.engine.pipeline import ImageTask, generate_batch

    first = check_request(request(prompt="a red fox", negative_prompt="blurry", seed=3))
    second = check_request(request(prompt="a blue whale", seed=90, num_images=2))
    tasks = [ImageTask.of(first, 0), ImageTask.of(second, 1), ImageTask.of(second, 0)]
    together = generate_batch(tasks, tiny_parts)
    assert [(r.job.prompt, r.seed, r.index) for r in together] == [
        ("a red fox", 3, 0),
        ("a blue whale", 91, 1),
        ("a blue whale", 90, 0),
    ]
    for result, task in zip(together, tasks, strict=True):
        [alone] = generate_batch([task], tiny_parts)
        # batched GEMMs sum in another order: at most 1/255 apart, never a different picture
        assert np.abs(pixels(result.image) - pixels(alone.image)).max() <= 1


def test_a_batch_refuses_requests_that_cannot_share_the_unet(tiny_parts) -> None:
    from sdgen.engine.pipeline import ImageTask, generate_batch

    small = check_request(request(seed=1))
    more_steps = check_request(request(seed=1, num_inference_steps=STEPS + 1))
    with pytest.raises(ValueError, match="differ in size, steps, scheduler"):
        generate_batch([ImageTask.of(small), ImageTask.of(more_steps)], tiny_parts)


def test_iter_generate_yields_each_batch_as_it_is_done(tiny_parts) -> None:
    from sdgen.engine.pipeline import iter_generate

    steps_seen = []
    images = iter_generate(request(num_images=3, batch_size=1, seed=5), tiny_parts, on_step=steps_seen.append)
    first = next(images)
    assert first.seed == 5 and len(steps_seen) == STEPS  # the later images are not made yet
    assert [r.seed for r in images] == [6, 7] and len(steps_seen) == 3 * STEPS


LONG = "cat " * 25 + "dog " * 25 + "owl " * 17  # 201 tokens for the tiny tokenizer: 3 chunks


def test_a_long_prompt_is_read_whole(tiny_parts) -> None:
    first_75 = "cat " * 25
    long_image = pixels(generate(request(prompt=LONG, seed=4), tiny_parts)[0].image)
    assert np.abs(long_image - pixels(generate(request(prompt=first_75, seed=4), tiny_parts)[0].image)).max() > 5
    assert np.array_equal(long_image, pixels(generate(request(prompt=LONG, seed=4), tiny_parts)[0].image))


def test_prompts_of_different_lengths_in_one_batch_equal_single_runs(tiny_parts) -> None:
    from sdgen.engine.pipeline import ImageTask, generate_batch

    long = check_request(request(prompt=LONG, negative_prompt="blurry", seed=3))
    short = check_request(request(prompt="a fox", negative_prompt="blurry " * 30, seed=8))  # a long negative
    tasks = [ImageTask.of(long), ImageTask.of(short), ImageTask.of(check_request(request(seed=2)))]
    together = generate_batch(tasks, tiny_parts)
    assert [r.seed for r in together] == [3, 8, 2]  # in the order asked, though made in two groups
    for result, task in zip(together, tasks, strict=True):
        [alone] = generate_batch([task], tiny_parts)
        assert np.abs(pixels(result.image) - pixels(alone.image)).max() <= 1


def test_a_negative_prompt_longer_than_the_prompt_is_padded_with_the_empty_prompt(tiny_parts) -> None:
    import torch

    from sdgen.engine.pipeline import ImageTask, _conditions

    checked = check_request(request(prompt="a fox", negative_prompt="blurry " * 15))
    prompts = _conditions(ImageTask.of(checked), tiny_parts).first  # one part, no schedule: one text each
    assert prompts.negative is not None
    cond, uncond = prompts.parts[0].embeds[0], prompts.negative.embeds[0]
    assert cond.shape == uncond.shape == (1, 154, 32)
    from sdgen.engine.text import encode_prompt

    empty = encode_prompt("", tiny_parts.tokenizer, tiny_parts.text_encoder, "cpu")
    assert torch.equal(cond[:, 77:], empty)


def test_wildcard_images_match_their_prompts_made_alone(tiny_parts, tmp_path) -> None:
    (tmp_path / "animals.txt").write_text("fox\nowl\nwhale\n")
    made = generate(request(prompt="a __animals__", seed=20, num_images=3, batch_size=3, wildcard_dir=str(tmp_path)),
                    tiny_parts)
    for result in made:
        assert result.job.template == "a __animals__" and result.job.prompt.startswith("a ")
        [alone] = generate(request(prompt=result.job.prompt, seed=result.seed), tiny_parts)
        assert np.abs(pixels(result.image) - pixels(alone.image)).max() <= 1


def hires_reference(parts, upscaler: str) -> np.ndarray:
    """diffusers' own two runs: text-to-image at 64x64, scaled up 2x (the latents bilinearly, or the image with
    Pillow's Lanczos), then its image-to-image pipeline at 128x128 with 6 steps and strength 0.5."""
    import torch

    scheduler = check_request(request()).scheduler
    generator = torch.Generator("cpu").manual_seed(3)
    if upscaler == "latent":
        latents = reference_pipeline(parts, scheduler)(
            PROMPT, width=SIZE, height=SIZE, num_inference_steps=STEPS, generator=generator, output_type="latent"
        ).images
        start = torch.nn.functional.interpolate(latents, scale_factor=2, mode="bilinear")
    else:
        image = reference_pipeline(parts, scheduler)(
            PROMPT, width=SIZE, height=SIZE, num_inference_steps=STEPS, generator=generator
        ).images[0]
        start = image.resize((2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS)
    img2img = reference_pipeline(parts, scheduler, img2img=True)
    out = img2img(PROMPT, image=start, strength=0.5, num_inference_steps=6,
                  generator=torch.Generator("cpu").manual_seed(3)).images[0]
    return pixels(out)


@pytest.mark.parametrize("upscaler", ["latent", "lanczos"])
def test_hires_pass_equals_text_to_image_then_image_to_image(tiny_parts, upscaler: str) -> None:
    hires = request(seed=3, hires_scale=2.0, hires_steps=6, hires_strength=0.5, hires_upscaler=upscaler)
    [result] = generate(hires, tiny_parts)
    assert result.image.size == (2 * SIZE, 2 * SIZE)
    assert np.abs(pixels(result.image) - hires_reference(tiny_parts, upscaler)).max() <= 1
    if upscaler == "lanczos":  # and exactly sdgen's own --init-image run of the first image at the large size
        [first] = generate(request(seed=3), tiny_parts)
        [again] = generate(request(seed=3, init_image=first.image, width=2 * SIZE, height=2 * SIZE,
                                   num_inference_steps=6, strength=0.5), tiny_parts)
        assert np.array_equal(pixels(result.image), pixels(again.image))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hires_scale": 1.0}, "Invalid hires_scale 1.0: must be more than 1"),
        ({"hires_scale": 2.0, "hires_upscaler": "esrgan"}, "give latent, lanczos or an upscaler model file"),
        ({"hires_scale": 2.0, "hires_strength": 0.05, "hires_steps": 10}, "runs no step"),
        ({"hires_scale": 8.0, "width": 1024}, "more than 4096"),
    ],
)
def test_bad_hires_values_are_refused_before_loading(no_weights_load, overrides, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_request(request(**overrides))


@pytest.fixture(scope="module")
def tiny_v_model(tiny_model_dir, tmp_path_factory):
    """The tiny model as a v-prediction model (SD 2.x 768-v style): only its scheduler config says so."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("v") / "tiny-v"
    shutil.copytree(tiny_model_dir, folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "prediction_type": "v_prediction"}))
    return folder


@pytest.mark.parametrize("scheduler", ["dpm++2m-karras", "euler-a", "ddim"])
def test_v_prediction_model_matches_diffusers(tiny_v_model, scheduler: str) -> None:
    from sdgen.engine.loader import load_model
    from sdgen.engine.request import ModelSpec

    parts = load_model(ModelSpec(model=str(tiny_v_model), device="cpu", dtype="float32"))
    assert parts.scheduler_config["prediction_type"] == "v_prediction"
    [result] = generate(request(scheduler=scheduler, seed=9), parts)
    expected = reference_image(parts, scheduler, 9)
    assert np.abs(pixels(result.image) - expected).max() <= 1
    epsilon = load_model(ModelSpec(model=str(tiny_v_model), device="cpu", dtype="float32", prediction_type="epsilon"))
    assert np.abs(pixels(generate(request(scheduler=scheduler, seed=9), epsilon)[0].image) - expected).max() > 5


def test_v_prediction_clean_estimate_for_schedulers_that_report_none(tiny_v_model) -> None:
    import torch

    from sdgen.config.schedulers import make_scheduler
    from sdgen.engine.denoise import predicted_clean_latents

    parts_config = __import__("json").loads((tiny_v_model / "scheduler" / "scheduler_config.json").read_text())
    scheduler = make_scheduler("dpm++2m", parts_config)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    t = torch.tensor(500)
    a = scheduler.alphas_cumprod[500]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    output = type("Output", (), {"prev_sample": x_t})()
    assert torch.allclose(predicted_clean_latents(scheduler, output, x_t, v, t), x0, atol=1e-5)


def test_a_run_stopped_early_is_decoded_and_skips_its_hires_pass(tiny_parts) -> None:
    from sdgen.engine.denoise import StopDenoising

    sizes = []

    def stop_at_two(info) -> None:
        sizes.append(info.latents.shape[-1])
        if info.index == 1:
            raise StopDenoising

    [result] = generate(request(seed=3, hires_scale=2.0, hires_steps=6), tiny_parts, on_step=stop_at_two)
    assert len(sizes) == 2 and len(set(sizes)) == 1  # two steps of the first pass, none of the hires pass
    assert result.image.size == (SIZE, SIZE)
