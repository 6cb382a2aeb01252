"""Variation seeds against a hand computation of A1111's published algorithm (modules/rng.py: ImageRNG.first,
slerp), and through the request, the pipeline, the record, --from, batch lines and the server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.checking import check_request
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.engine.variation import Variation, varied_noise
from sdgen.errors import InvalidRequestError
from sdgen.record.metadata import parse_a1111, request_values_from_image

from .conftest import SIZE
from .test_pipeline import PROMPT, pixels, reference_pipeline

runner = CliRunner()
LATENT = (4, SIZE // 2, SIZE // 2)  # the tiny VAE scales by 2


def a1111_noise(seed: int, subseed: int, strength: float, shape, resize_from=None) -> torch.Tensor:
    """A1111's first noise of one image, computed by hand from its published code (CPU RNG, float32): the
    seed's and subseed's noise at the "resize from" latent size, joined by slerp over dim 1, pasted centred
    into the seed's noise at the image's size."""

    def randn(s, size):
        torch.manual_seed(s)  # A1111's randn(seed, shape): the global generator, seeded
        return torch.randn(size)

    drawn = shape if resize_from is None else (shape[0], *resize_from)
    noise = randn(seed, drawn)
    if strength:
        sub = randn(subseed, drawn)
        low, high = noise / noise.norm(dim=1, keepdim=True), sub / sub.norm(dim=1, keepdim=True)
        dot = (low * high).sum(1)
        if dot.mean() > 0.9995:
            noise = noise * strength + sub * (1 - strength)
        else:
            omega = torch.acos(dot)
            noise = (torch.sin((1 - strength) * omega) / torch.sin(omega)).unsqueeze(1) * noise + (
                torch.sin(strength * omega) / torch.sin(omega)
            ).unsqueeze(1) * sub
    if drawn == shape:
        return noise
    full = randn(seed, shape)
    dx, dy = (shape[2] - drawn[2]) // 2, (shape[1] - drawn[1]) // 2
    w = drawn[2] if dx >= 0 else drawn[2] + 2 * dx
    h = drawn[1] if dy >= 0 else drawn[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    full[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
    return full


@pytest.mark.parametrize(
    ("strength", "resize_from"),
    [(0.3, None), (1.0, None), (0.5, (24, 40)), (0.0, (40, 20)), (0.7, (16, 16))],
)
def test_noise_equals_a1111_by_hand(strength, resize_from) -> None:
    seeds, subseeds = [11, 11], [500, 501]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    variation = Variation(tuple(subseeds), strength, resize_from)
    new = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    noise = varied_noise(seeds, generators, (2, *LATENT), variation, new, "cpu", torch.float32)
    for index in range(2):
        expected = a1111_noise(seeds[index], subseeds[index], strength, LATENT, resize_from)
        assert torch.allclose(noise[index], expected, atol=1e-6)
    # each image's generator drew one tensor of its size, as without a variation: ancestral noise is the seed's
    plain = torch.Generator().manual_seed(11)
    torch.randn((1, *LATENT), generator=plain)
    assert torch.equal(torch.randn(3, generator=generators[0]), torch.randn(3, generator=plain))


@pytest.mark.parametrize("scheduler", ["euler", "euler-a"])
def test_picture_equals_diffusers_started_from_a1111_noise(tiny_parts, scheduler) -> None:
    """diffusers' pipeline given A1111's noise as its latents, and a generator that has drawn it (so an
    ancestral sampler's later noise is the seed's), makes the same picture within 1/255."""
    seed, subseed, strength, resize = 7, 99, 0.4, (24, 40)
    made = generate(GenerationRequest(
        PROMPT, seed=seed, subseed=subseed, subseed_strength=strength, seed_resize_from="80x48",
        num_inference_steps=3, width=SIZE, height=SIZE, scheduler=scheduler,
    ), tiny_parts)[0]
    generator = torch.Generator("cpu").manual_seed(seed)
    torch.randn((1, *LATENT), generator=generator)
    latents = a1111_noise(seed, subseed, strength, LATENT, resize).unsqueeze(0)
    pipe = reference_pipeline(tiny_parts, scheduler)
    image = pipe(PROMPT, num_inference_steps=3, width=SIZE, height=SIZE, latents=latents, generator=generator).images[0]
    assert np.abs(pixels(made.image) - pixels(image)).max() <= 1


def test_unset_or_zero_strength_keeps_todays_noise_exactly(tiny_parts) -> None:
    base = dict(prompt=PROMPT, seed=5, num_inference_steps=2, width=SIZE, height=SIZE, num_images=2)
    plain = generate(GenerationRequest(**base), tiny_parts)
    zero = generate(GenerationRequest(**base, subseed=9, subseed_strength=0.0), tiny_parts)
    assert [pixels(a.image).tobytes() for a in plain] == [pixels(b.image).tobytes() for b in zero]
    assert [image.seed for image in zero] == [5, 6] and zero[0].request.subseed is None  # means nothing: dropped


def test_a1111_rule_for_several_images_same_seed_subseed_plus_i(tiny_parts) -> None:
    """A1111 keeps the seed for every image of a varied run and counts the subseed up (processing.py)."""
    base = dict(prompt=PROMPT, seed=5, num_inference_steps=2, width=SIZE, height=SIZE, subseed_strength=0.3)
    batch = generate(GenerationRequest(**base, subseed=40, num_images=3, batch_size=3), tiny_parts)
    assert [(image.seed, image.job.subseed) for image in batch] == [(5, 40), (5, 41), (5, 42)]
    alone = generate(GenerationRequest(**base, subseed=42), tiny_parts)[0]
    assert np.abs(pixels(batch[2].image) - pixels(alone.image)).max() <= 1
    assert pixels(batch[0].image).tobytes() != pixels(batch[1].image).tobytes()


def test_strength_without_subseed_draws_one_and_reports_it() -> None:
    request = check_request(GenerationRequest(PROMPT, seed=1, subseed_strength=0.2, width=SIZE, height=SIZE))
    assert isinstance(request.subseed, int)


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        ({"subseed_strength": 1.5}, "subseed_strength", "1.5"),
        ({"subseed_strength": 0.5, "subseed": -3}, "subseed", "-3"),
        ({"seed_resize_from": "wide"}, "seed_resize_from", "'wide'"),
        ({"seed_resize_from": "4x4"}, "seed_resize_from", "'4x4'"),
    ],
)
def test_bad_values_name_the_value_before_loading(no_weights_load, overrides, key, text) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_request(GenerationRequest(PROMPT, width=SIZE, height=SIZE, **overrides))
    assert caught.value.key == key and text in str(caught.value)


def test_cli_records_a1111_fields_and_from_replays(tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "v.png"
    args = ["a fox", "--model", str(tiny_model_dir), "--device", "cpu", "-W", "64", "-H", "64", "--steps", "2",
            "-s", "3", "--subseed", "8", "--subseed-strength", "0.25", "--seed-resize-from", "48x80", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    from PIL import Image

    text = Image.open(out).info["parameters"]
    fields = parse_a1111(text)["fields"]
    assert fields["Variation seed"] == "8" and fields["Variation seed strength"] == "0.25"
    assert fields["Seed resize from"] == "48x80"
    record = json.loads(Image.open(out).info["sdgen"])
    assert (record["subseed"], record["subseed_strength"], record["seed_resize_from"]) == (8, 0.25, "48x80")
    again = tmp_path / "again.png"
    assert runner.invoke(app, ["--from", str(out), "-o", str(again)]).exit_code == 0
    assert pixels(Image.open(again)).tobytes() == pixels(Image.open(out)).tobytes()
    # the A1111 text alone says the same
    Image.open(out).save(tmp_path / "a1111.png", pnginfo=_text_only(text))
    values = request_values_from_image(tmp_path / "a1111.png")
    assert (values["subseed"], values["subseed_strength"], values["seed_resize_from"]) == (8, 0.25, "48x80")


def _text_only(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    return info


def test_cli_bad_strength_is_exit_2_naming_the_flag(no_weights_load) -> None:
    result = runner.invoke(app, ["a fox", "--subseed-strength", "3"])
    assert result.exit_code == 2 and "--subseed-strength 3" in result.output


def test_batch_line_sets_the_variation(tiny_model_dir, tmp_path) -> None:
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"prompt": "a fox", "seed": 4, "subseed": 30, "subseed_strength": 0.5}) + "\n")
    args = ["batch", str(lines), "-o", str(tmp_path / "out") + "/", "--model", str(tiny_model_dir), "--device", "cpu",
            "-W", "64", "-H", "64", "--steps", "2", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert (record["seed"], record["subseed"], record["subseed_strength"]) == (4, 30, 0.5)


def test_server_body_sets_variation_and_resize() -> None:
    from sdgen.serve.schema import Txt2ImgBody
    from sdgen.serve.translate import request_values

    body = Txt2ImgBody(prompt="a fox", subseed=12, subseed_strength=0.4, seed_resize_from_w=640,
                       seed_resize_from_h=512)
    values = request_values(body, {})
    assert (values["subseed"], values["subseed_strength"], values["seed_resize_from"]) == (12, 0.4, "640x512")
    unset = request_values(Txt2ImgBody(prompt="a fox", seed_resize_from_w=640), {})  # one side: off, as in A1111
    assert "seed_resize_from" not in unset and unset["subseed"] is None
