"""Outpainting and the masked region's fill (sdgen/engine/outpaint.py): the canvas and mask for each side, the
old picture kept outside the blend band with a 4- and a 9-channel model, outpainting equal to inpainting the
made canvas with the made mask, and A1111's four "Masked content" fills."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdgen.engine.checking import check_request
from sdgen.engine.loader import load_model
from sdgen.engine.outpaint import OVERLAP, fill_masked, outpainted, parse_outpaint
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import InvalidRequestError

from . import test_inpaint
from .test_inpaint import PROMPT, SEED, STEPS, pixels

files = test_inpaint.files  # the fixture: the init image, the mask and a 9-channel tiny model

BLUR = 2


def outpaint_request(files, **overrides) -> GenerationRequest:
    values = dict(prompt=PROMPT, seed=SEED, num_inference_steps=STEPS, init_image=str(files / "init.png"),
                  outpaint="left=16,top=8", mask_blur=BLUR, strength=1.0)
    return GenerationRequest(**{**values, **overrides})


@pytest.mark.parametrize("side", ["left", "top", "right", "bottom"])
def test_the_canvas_and_the_mask_for_each_side(side) -> None:
    picture = Image.fromarray(np.arange(24 * 32 * 3, dtype=np.uint8).reshape(24, 32, 3))
    canvas, mask = outpainted(picture, parse_outpaint(f"{side}=16"))
    wide = side in ("left", "right")
    assert canvas.size == ((48, 24) if wide else (32, 40))
    old = {"left": (16, 0), "top": (0, 16), "right": (0, 0), "bottom": (0, 0)}[side]
    inside = np.asarray(canvas)[old[1]:old[1] + 24, old[0]:old[0] + 32]
    assert np.array_equal(inside, np.asarray(picture))
    white = np.asarray(mask) == 255
    new_and_seam = {"left": (slice(None), slice(0, 16 + OVERLAP)), "right": (slice(None), slice(32 - OVERLAP, 48)),
                    "top": (slice(0, 16 + OVERLAP), slice(None)), "bottom": (slice(24 - OVERLAP, 40), slice(None))}
    expected = np.zeros_like(white)
    expected[new_and_seam[side]] = True
    assert np.array_equal(white, expected)


@pytest.mark.parametrize("nine_channels", [False, True])
def test_outpainting_is_inpainting_the_canvas_and_keeps_the_old_picture(tiny_parts, files, tmp_path,
                                                                        nine_channels) -> None:
    parts = tiny_parts
    if nine_channels:
        parts = load_model(ModelSpec(model=str(files / "tiny-inpainting"), device="cpu", dtype="float32"))
    [result] = generate(outpaint_request(files), parts)
    assert result.image.size == (80, 72)
    canvas, mask = outpainted(Image.open(files / "init.png"), parse_outpaint("left=16,top=8"))
    canvas.save(tmp_path / "canvas.png")
    mask.save(tmp_path / "mask.png")
    [same] = generate(outpaint_request(files, init_image=str(tmp_path / "canvas.png"), outpaint=None,
                                       mask=str(tmp_path / "mask.png")), parts)
    assert np.array_equal(pixels(result.image), pixels(same.image))
    band = OVERLAP + 3 * BLUR  # the mask's overlap and its blurred edge
    out, init = pixels(result.image), pixels(Image.open(files / "init.png"))
    assert np.array_equal(out[8 + band:, 16 + band:], init[band:, band:])
    assert np.abs(out[:8, :] - pixels(canvas)[:8, :]).mean() > 5  # the new area is painted


def test_the_fills_change_what_the_masked_region_starts_from(tiny_parts, files) -> None:
    common = dict(prompt=PROMPT, seed=SEED, num_inference_steps=STEPS, init_image=str(files / "init.png"),
                  mask=str(files / "mask.png"), mask_blur=0, strength=0.5)
    images = {fill: pixels(generate(GenerationRequest(**common, inpaint_fill=fill), tiny_parts)[0].image)
              for fill in ("original", "fill", "noise", "nothing")}
    keep = pixels(Image.open(files / "mask.png")) == 0
    for fill, image in images.items():
        assert np.array_equal(image[keep], images["original"][keep]), fill  # only the masked region differs
        if fill != "original":
            assert not np.array_equal(image, images["original"]), fill


def test_a1111s_fill_paints_the_masked_region_with_the_colours_around_it() -> None:
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[:, :16] = (200, 40, 40)
    picture[:, 16:] = (0, 255, 0)  # hidden by the mask
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255
    filled = np.asarray(fill_masked(Image.fromarray(picture), Image.fromarray(mask))).astype(int)
    assert np.abs(filled[:, :16] - picture[:, :16]).max() <= 1  # premultiplied alpha rounds by one
    assert np.abs(filled[:, 16:] - (200, 40, 40)).max() <= 6  # the known colour spread over the masked half


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"outpaint": "left=10"}, "must be a multiple of 8"),
        ({"outpaint": "sideways=16"}, "give SIDE=PIXELS pairs"),
        ({"outpaint": "left=0"}, "extend at least one side"),
        ({"init_image": None}, "outpainting extends an --init-image"),
        ({"mask": "mask.png"}, "with --mask: outpainting makes its own mask"),
        ({"width": 128}, "with --width/--height"),
        ({"inpaint_fill": "latent"}, "choose fill, original, noise, nothing"),
    ],
)
def test_bad_outpainting_is_refused_before_loading(no_weights_load, files, overrides, message) -> None:
    if overrides.get("mask"):
        overrides["mask"] = str(files / "mask.png")
    with pytest.raises(InvalidRequestError, match=message):
        check_request(outpaint_request(files, **overrides))
