"""Inpainting against diffusers' StableDiffusionInpaintPipeline (float32, within 1/255), with a standard
4-channel model and a 9-channel inpainting model; what is outside the mask stays the init image's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.config.schedulers import scheduler_spec
from sdgen.engine.checking import check_request
from sdgen.engine.loader import load_model
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import GenerationError, InvalidRequestError
from sdgen.record.metadata import read_image_metadata
from sdgen.testing.tiny_model import build_tiny_model

runner = CliRunner()
PROMPT, SIZE, STEPS, SEED = "a red fox sitting in the snow", 64, 4, 21


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inpaint")
    build_tiny_model(folder / "tiny-inpainting", in_channels=9)
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(folder / "init.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 20:44] = 255  # repaint a box in the middle
    Image.fromarray(mask).save(folder / "mask.png")
    return folder


def request(files: Path, **overrides) -> GenerationRequest:
    values = dict(prompt=PROMPT, seed=SEED, num_inference_steps=STEPS, init_image=str(files / "init.png"),
                  mask=str(files / "mask.png"), mask_blur=0, strength=1.0)
    return GenerationRequest(**{**values, **overrides})


def reference(parts, files: Path, scheduler: str, strength: float, blur: int = 0) -> Image.Image:
    """diffusers' inpainting pipeline, then A1111's paste of the init image outside the mask."""
    import diffusers
    from diffusers import StableDiffusionInpaintPipeline

    spec = scheduler_spec(scheduler)
    pipe = StableDiffusionInpaintPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=getattr(diffusers, spec.class_name).from_config(parts.scheduler_config, **spec.options),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    init = Image.open(files / "init.png").convert("RGB")
    mask = Image.open(files / "mask.png").convert("L")
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    out = pipe(PROMPT, image=init, mask_image=mask, height=SIZE, width=SIZE, strength=strength,
               num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    return Image.composite(out, init, mask)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize(("scheduler", "strength"), [("dpm++2m-karras", 1.0), ("euler-a", 0.75), ("ddim", 1.0)])
def test_a_standard_model_inpaints_like_diffusers(tiny_parts, files, scheduler: str, strength: float) -> None:
    [result] = generate(request(files, scheduler=scheduler, strength=strength), tiny_parts)
    expected = reference(tiny_parts, files, scheduler, strength)
    assert np.abs(pixels(result.image) - pixels(expected)).max() <= 1


@pytest.mark.parametrize(("scheduler", "strength"), [("dpm++2m-karras", 1.0), ("euler-a", 0.75)])
def test_a_9_channel_inpainting_model_matches_diffusers(files, scheduler: str, strength: float) -> None:
    parts = load_model(ModelSpec(model=str(files / "tiny-inpainting"), device="cpu", dtype="float32"))
    assert parts.unet.config.in_channels == 9
    [result] = generate(request(files, scheduler=scheduler, strength=strength), parts)
    assert np.abs(pixels(result.image) - pixels(reference(parts, files, scheduler, strength))).max() <= 1


def test_outside_the_mask_is_the_init_image_and_inside_is_new(tiny_parts, files) -> None:
    [result] = generate(request(files), tiny_parts)
    out, init = pixels(result.image), pixels(Image.open(files / "init.png"))
    keep = pixels(Image.open(files / "mask.png")) == 0
    assert np.array_equal(out[keep], init[keep])
    assert np.abs(out[~keep] - init[~keep]).mean() > 10


def test_invert_and_blur(tiny_parts, files, tmp_path) -> None:
    inverted = np.asarray(Image.open(files / "mask.png")).copy()
    Image.fromarray(255 - inverted).save(tmp_path / "inverted.png")
    [a] = generate(request(files, mask=str(tmp_path / "inverted.png"), invert_mask=True), tiny_parts)
    [b] = generate(request(files), tiny_parts)
    assert np.array_equal(pixels(a.image), pixels(b.image))
    [blurred] = generate(request(files, mask_blur=4), tiny_parts)
    assert np.abs(pixels(blurred.image) - pixels(reference(tiny_parts, files, "dpm++2m-karras", 1.0, 4))).max() <= 1


def test_batch_of_inpaintings_equals_single_runs(tiny_parts, files) -> None:
    made = generate(request(files, num_images=2, batch_size=2), tiny_parts)
    for result in made:
        [alone] = generate(request(files, seed=result.seed), tiny_parts)
        assert np.abs(pixels(result.image) - pixels(alone.image)).max() <= 1


def test_mask_errors_before_loading(files, tmp_path) -> None:
    with pytest.raises(InvalidRequestError, match="give one"):
        check_request(GenerationRequest("a fox", mask=str(files / "mask.png")))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InvalidRequestError, match="Invalid mask"):
        check_request(request(files, mask=str(tmp_path / "broken.png")))


def test_an_inpainting_model_without_a_mask_says_so(files) -> None:
    parts = load_model(ModelSpec(model=str(files / "tiny-inpainting"), device="cpu", dtype="float32"))
    with pytest.raises(GenerationError, match="inpainting model"):
        generate(GenerationRequest("a fox", seed=1, num_inference_steps=2, width=64, height=64), parts)


def test_the_cli_inpaints_records_and_replays(tiny_model_dir, files, tmp_path) -> None:
    args = [PROMPT, "--model", str(tiny_model_dir), "--steps", "2", "--seed", "5", "--init-image",
            str(files / "init.png"), "--mask", str(files / "mask.png"), "--mask-blur", "2", "--strength", "0.9",
            "-o", str(tmp_path / "a.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    parameters, record = read_image_metadata(tmp_path / "a.png")
    assert "Mask blur: 2" in parameters and record["mask"] == str(files / "mask.png")
    again = runner.invoke(app, ["--from", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png")])
    assert again.exit_code == 0, again.output
    assert np.array_equal(pixels(Image.open(tmp_path / "a.png")), pixels(Image.open(tmp_path / "b.png")))


def test_a_batch_line_inpaints_like_the_command(tiny_model_dir, files, tmp_path) -> None:
    line = {"prompt": PROMPT, "seed": 2, "init_image": str(files / "init.png"), "mask": str(files / "mask.png"),
            "mask_blur": 0, "invert_mask": True, "strength": 1.0}
    source = tmp_path / "lines.jsonl"
    source.write_text(json.dumps(line) + "\n")
    common = ["--model", str(tiny_model_dir), "--steps", "2"]
    result = runner.invoke(app, ["batch", str(source), *common, "-o", f"{tmp_path}/batch/"])
    assert result.exit_code == 0, result.output
    [made] = sorted((tmp_path / "batch").glob("*.png"))
    single = runner.invoke(app, [PROMPT, *common, "--seed", "2", "--init-image", str(files / "init.png"), "--mask",
                                 str(files / "mask.png"), "--mask-blur", "0", "--invert-mask", "--strength", "1",
                                 "-o", str(tmp_path / "single.png")])
    assert single.exit_code == 0, single.output
    assert np.array_equal(pixels(Image.open(made)), pixels(Image.open(tmp_path / "single.png")))
    assert read_image_metadata(made)[1]["invert_mask"] is True
