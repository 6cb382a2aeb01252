"""Seamless tiling: circular padding in the U-Net's and the VAE's convolutions, per axis, undone after the run;
against A1111's way (every Conv2d's padding_mode set to "circular") on diffusers' pipeline; end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.checking import check_request
from sdgen.engine.denoise import StopDenoising
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.engine.tiling import checked_tiling, tiled
from sdgen.errors import InvalidRequestError
from sdgen.record.metadata import parse_a1111

from .conftest import SIZE
from .test_pipeline import PROMPT, pixels, reference_pipeline

runner = CliRunner()
SHIFT = 4  # latent columns: a multiple of the tiny U-Net's downsampling, so a roll commutes with it
SCALE = 2  # the tiny VAE's pixels per latent


def convs(parts) -> list[torch.nn.Conv2d]:
    return [m for part in (parts.unet, parts.vae) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]


def assert_untouched(parts) -> None:
    assert all(conv.padding_mode == "zeros" and "_conv_forward" not in vars(conv) for conv in convs(parts))


def made(parts, tiling, on_step_end=None, on_step=None, seed=3) -> np.ndarray:
    request = GenerationRequest(PROMPT, seed=seed, num_inference_steps=3, width=SIZE, height=SIZE, scheduler="euler",
                                tiling=tiling)
    return pixels(generate(request, parts, on_step=on_step, on_step_end=on_step_end)[0].image)


def roll_after_first_step(axis: int):
    """A step-end hook that rolls the latents by SHIFT along `axis` (3: x, 2: y) after the first step."""

    def hook(end):
        if end.index == 0:
            return dataclasses.replace(end, latents=torch.roll(end.latents, SHIFT, dims=axis))
        return None

    return hook


@pytest.mark.parametrize(("tiling", "axis"), [("both", 3), ("x", 3), ("y", 2), ("both", 2)])
def test_the_picture_wraps_on_its_tiled_axis(tiny_parts, tiling, axis) -> None:
    """On a tiled axis the picture lives on a cylinder: its left edge continues its right one, so latents
    rolled mid-run give the same picture rolled. Untiled, the borders break that by far."""
    image = made(tiny_parts, tiling)
    rolled = made(tiny_parts, tiling, roll_after_first_step(axis))
    expected = np.roll(image, SHIFT * SCALE, axis=axis - 2)  # (H, W, 3): x is axis 1, y axis 0
    assert np.abs(rolled - expected).max() <= 1
    plain_image = made(tiny_parts, None)
    plain_rolled = made(tiny_parts, None, roll_after_first_step(axis))
    plain_error = np.abs(plain_rolled - np.roll(plain_image, SHIFT * SCALE, axis=axis - 2)).mean()
    assert plain_error > 20 * max(np.abs(rolled - expected).mean(), 0.05)
    assert_untouched(tiny_parts)


def test_one_axis_leaves_the_other_with_its_borders(tiny_parts) -> None:
    image = made(tiny_parts, "x")
    rolled = made(tiny_parts, "x", roll_after_first_step(2))  # across y, which is not tiled
    assert np.abs(rolled - np.roll(image, SHIFT * SCALE, axis=0)).mean() > 1  # a tiled axis: within 1/255 (above)


def test_both_axes_equal_diffusers_with_circular_padding_mode(tiny_parts) -> None:
    """A1111's tiling (modules/sd_hijack.py apply_circular: every Conv2d's padding_mode = "circular") on
    diffusers' pipeline, same seed: the same picture within 1/255."""
    ours = made(tiny_parts, "both", seed=8)
    pipe = reference_pipeline(tiny_parts, "euler")
    try:
        for conv in convs(tiny_parts):
            conv.padding_mode = "circular"
        generator = torch.Generator("cpu").manual_seed(8)
        theirs = pipe(PROMPT, num_inference_steps=3, width=SIZE, height=SIZE, generator=generator).images[0]
    finally:
        for conv in convs(tiny_parts):
            conv.padding_mode = "zeros"
    assert np.abs(ours - pixels(theirs)).max() <= 1
    assert np.abs(ours - made(tiny_parts, None, seed=8)).mean() > 1  # tiling did change the picture


def test_the_model_is_itself_again_after_an_error_or_a_stop(tiny_parts) -> None:
    before = made(tiny_parts, None)

    def fail(info):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        made(tiny_parts, "both", on_step=fail)
    assert_untouched(tiny_parts)

    def stop(info):
        raise StopDenoising

    made(tiny_parts, "x", on_step=stop)  # stopped early: decoded, then put back
    assert_untouched(tiny_parts)
    assert made(tiny_parts, None).tobytes() == before.tobytes()


def test_nested_tiling_is_undone_by_the_outer_block_only(tiny_parts) -> None:
    with tiled((tiny_parts.unet, tiny_parts.vae), "both"):
        with tiled((tiny_parts.unet,), "x"):
            pass
        assert all("_conv_forward" in vars(conv) for conv in convs(tiny_parts) if conv.padding != (0, 0))
    assert_untouched(tiny_parts)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (True, "both"), ("XY", "both"), ("x", "x"),
                                                  ("none", None), (False, None)])
def test_spellings(value, expected) -> None:
    assert checked_tiling(value) == expected


def test_a_bad_axis_names_the_value(no_weights_load) -> None:
    with pytest.raises(InvalidRequestError, match="'z'") as caught:
        check_request(GenerationRequest(PROMPT, tiling="z"))
    assert caught.value.key == "tiling"
    result = runner.invoke(app, ["a fox"], env={"SDGEN_TILING": "diagonal"})
    assert result.exit_code == 2 and "--tiling 'diagonal'" in result.output


def test_cli_flag_alone_or_with_an_axis_recorded_and_replayed(tiny_model_dir, tmp_path) -> None:
    base = ["--model", str(tiny_model_dir), "--device", "cpu", "-W", "64", "-H", "64", "--steps", "2", "-s", "5"]
    both, one = tmp_path / "both.png", tmp_path / "x.png"
    assert runner.invoke(app, ["a fox", "--tiling", *base, "-o", str(both)]).exit_code == 0
    assert runner.invoke(app, ["a fox", *base, "--tiling", "x", "-o", str(one)]).exit_code == 0
    assert parse_a1111(Image.open(both).info["parameters"])["fields"]["Tiling"] == "True"  # A1111's field
    assert json.loads(Image.open(one).info["sdgen"])["tiling"] == "x"
    assert pixels(Image.open(both)).tobytes() != pixels(Image.open(one)).tobytes()
    again = tmp_path / "again.png"
    assert runner.invoke(app, ["--from", str(both), "-o", str(again)]).exit_code == 0
    assert pixels(Image.open(again)).tobytes() == pixels(Image.open(both)).tobytes()


def test_server_tiling_boolean() -> None:
    from sdgen.serve.schema import Txt2ImgBody
    from sdgen.serve.translate import request_values

    assert request_values(Txt2ImgBody(prompt="a", tiling=True), {})["tiling"] == "both"
    assert request_values(Txt2ImgBody(prompt="a", tiling=False), {})["tiling"] is None
    assert "tiling" not in request_values(Txt2ImgBody(prompt="a"), {})  # the server's own setting stays
