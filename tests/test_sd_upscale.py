"""SD upscale (sdgen/engine/sd_upscale.py): A1111's tile placement, the blend of unchanged tiles giving the
picture back, one tile equal to image-to-image of the enlarged picture, several tiles against one within a
stated bound, an upscaler model before the tiles, and the checks before loading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdgen.engine.checking import check_request
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.engine.sd_upscale import blend, tile_starts
from sdgen.errors import InvalidRequestError

from . import test_controlnet

controlnet_dirs = test_controlnet.controlnet_dirs  # the fixture: two tiny ControlNets

STEPS, SEED = 4, 5


@pytest.fixture(scope="module")
def init_file(tmp_path_factory):
    rng = np.random.default_rng(2)
    path = tmp_path_factory.mktemp("sd-upscale") / "small.png"
    Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(path)
    return path


def upscale_request(init_file, **overrides) -> GenerationRequest:
    values = dict(prompt="a fox", seed=SEED, num_inference_steps=STEPS, init_image=str(init_file), strength=0.5,
                  sd_upscale=2.0, sd_upscale_overlap=32, width=64, height=64)
    return GenerationRequest(**{**values, **overrides})


def test_tiles_are_placed_as_a1111_places_them() -> None:
    assert tile_starts(1024, 512, 64) == [0, 256, 512]  # ceil((1024 - 64) / 448) = 3 tiles, spread evenly
    assert tile_starts(512, 512, 64) == [0]
    assert tile_starts(96, 64, 32) == [0, 32]


def test_unchanged_tiles_blend_back_into_the_picture() -> None:
    rng = np.random.default_rng(0)
    picture = (rng.random((96, 160, 3)) * 255).astype(np.uint8)
    tiles = [(left, top, picture[top:top + 64, left:left + 64])
             for top in tile_starts(96, 64, 24) for left in tile_starts(160, 64, 24)]
    assert np.array_equal(np.asarray(blend(tiles, 160, 96, (64, 64))), picture)


def test_one_tile_is_image_to_image_of_the_enlarged_picture(tiny_parts, init_file) -> None:
    [tiled] = generate(upscale_request(init_file, width=96, height=96), tiny_parts)
    enlarged = Image.open(init_file).convert("RGB").resize((96, 96), Image.Resampling.LANCZOS)
    [plain] = generate(upscale_request(init_file, init_image=enlarged, sd_upscale=None, width=96, height=96),
                       tiny_parts)
    assert tiled.image.size == (96, 96)
    assert np.array_equal(np.asarray(tiled.image), np.asarray(plain.image))


def test_four_tiles_stay_closer_to_one_tile_than_the_pass_moves_the_picture(tiny_parts, init_file) -> None:
    [four] = generate(upscale_request(init_file), tiny_parts)  # 2 x 2 tiles of 64 on 96x96
    [one] = generate(upscale_request(init_file, width=96, height=96), tiny_parts)
    difference = np.abs(np.asarray(four.image).astype(int) - np.asarray(one.image).astype(int))
    # each tile's U-Net sees only its tile (attention is global within it), so even a tile's own pixels differ
    # from the one-tile run: on the tiny random model (noise, not pictures) by 42/255 on average at strength
    # 0.5, where the pass itself moves the picture by 65/255; the bound: less than the pass's own change
    moved = np.abs(np.asarray(one.image).astype(int) - np.asarray(
        Image.open(init_file).convert("RGB").resize((96, 96), Image.Resampling.LANCZOS)).astype(int))
    assert difference.mean() < moved.mean(), (difference.mean(), moved.mean())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"init_image": None}, "SD upscale enlarges an --init-image"),
        ({"sd_upscale": 1.0}, "must be more than 1"),
        ({"width": 128}, "no larger than the enlarged picture"),
        ({"hires_scale": 2.0}, "with --hires-scale"),
        ({"sd_upscale_overlap": 40}, "Invalid sd_upscale_overlap 40"),
        ({"sd_upscale_upscaler": "nope"}, "no such upscaler file"),
    ],
)
def test_bad_sd_upscale_requests_are_refused_before_loading(no_weights_load, init_file, overrides, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_request(upscale_request(init_file, **overrides))


def test_sd_upscale_refuses_whole_picture_maps() -> None:
    from sdgen.engine.sd_upscale import check_sd_upscale

    request = GenerationRequest(prompt="a fox", init_image="x.png", sd_upscale=2.0, adapters=("sketch=edges.png",))
    with pytest.raises(InvalidRequestError, match="with --adapter"):
        check_sd_upscale(request, Image.new("RGB", (64, 64)), None, 512, False)


def test_each_tile_is_its_own_controlnet_image(tiny_parts, init_file, controlnet_dirs, tmp_path) -> None:
    """The tile ControlNet's way: one tile steered by itself = image-to-image of the enlarged picture with the
    enlarged picture as the control image."""
    enlarged = Image.open(init_file).convert("RGB").resize((96, 96), Image.Resampling.LANCZOS)
    enlarged.save(tmp_path / "enlarged.png")
    control = (f"{controlnet_dirs[0]}={init_file}:0.8",)
    [tiled] = generate(upscale_request(init_file, width=96, height=96, controls=control), tiny_parts)
    [plain] = generate(upscale_request(init_file, init_image=enlarged, sd_upscale=None, width=96, height=96,
                                       controls=(f"{controlnet_dirs[0]}={tmp_path / 'enlarged.png'}:0.8",)), tiny_parts)
    [unsteered] = generate(upscale_request(init_file, width=96, height=96), tiny_parts)
    assert np.array_equal(np.asarray(tiled.image), np.asarray(plain.image))
    assert not np.array_equal(np.asarray(tiled.image), np.asarray(unsteered.image))


def test_the_seam_fix_repaints_bands_over_the_seams_only(tiny_parts, init_file) -> None:
    from sdgen.engine.sd_upscale import seam_bands

    checked = check_request(upscale_request(init_file, sd_upscale_seam_fix=16))
    bands = seam_bands((96, 96), checked)  # 2 x 2 tiles of 64 at 0 and 32: one seam each way, at 48
    assert [box for box, _ in bands] == [(16, 0, 80, 64), (16, 32, 80, 96), (0, 16, 64, 80), (32, 16, 96, 80)]
    assert np.asarray(bands[0][1])[:, 24:40].min() == 255 and np.asarray(bands[0][1])[:, :24].max() == 0
    [plain] = generate(upscale_request(init_file), tiny_parts)
    [fixed] = generate(upscale_request(init_file, sd_upscale_seam_fix=16), tiny_parts)
    before, after = np.asarray(plain.image).astype(int), np.asarray(fixed.image).astype(int)
    far = np.ones((96, 96), bool)
    far[:, 48 - 8 - 24:48 + 8 + 24] = far[48 - 8 - 24:48 + 8 + 24, :] = False  # the bands, their blur (3 sigma)
    assert np.array_equal(after[far], before[far])
    assert np.abs(after[~far] - before[~far]).mean() > 1
