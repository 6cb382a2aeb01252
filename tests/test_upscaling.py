"""Tiled upscaling (sdgen/engine/upscaling.py) against spandrel's own untiled call on tiny random ESRGAN,
Real-ESRGAN compact and SwinIR files (sdgen/testing/tiny_upscalers.py); the hires pass with an upscaler model;
`sdgen upscale` end to end in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli.app import build_app
from sdgen.engine.upscaling import to_bytes, upscale_image, upscale_with_model
from sdgen.models.upscalers import identify, load_upscaler

from .test_pipeline import SIZE, generate, pixels, request

NAMES = ["4x-tiny-esrgan", "2x-tiny-compact", "2x-tiny-swinir"]


@pytest.fixture(scope="module")
def upscaler_files(tmp_path_factory) -> dict[str, Path]:
    from sdgen.models.upscalers import import_spandrel
    from sdgen.testing.tiny_upscalers import save_tiny_upscalers

    import_spandrel()  # without torchvision where it cannot be imported

    return save_tiny_upscalers(tmp_path_factory.mktemp("upscalers"))


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((64, 96, 3)) * 255).astype(np.uint8))


def untiled(model, picture: Image.Image) -> np.ndarray:
    """spandrel's own call on the whole picture, rounded to 8 bits."""
    import torch

    tensor = torch.from_numpy(np.asarray(picture, dtype=np.float32).transpose(2, 0, 1).copy() / 255.0)[None]
    return to_bytes(model(tensor)[0]).astype(int)


@pytest.mark.parametrize("name", NAMES)
def test_tiles_with_overlap_equal_spandrels_untiled_output(upscaler_files, picture, name) -> None:
    found = identify(upscaler_files[name])
    model = load_upscaler(found)
    reference = untiled(model, picture)
    tiles = []
    tiled = np.asarray(upscale_with_model(model, picture, 32, 16, lambda done, total: tiles.append((done, total))))
    assert tiled.shape == reference.shape == (64 * model.scale, 96 * model.scale, 3)
    assert np.abs(tiled - reference).max() <= 1  # 1/255: identical where each tile sees 16 pixels around it
    assert tiles[-1] == (6, 6)  # 2 rows x 3 columns of 32-pixel tiles, each reported
    # without context the tiles differ from the whole only near the seams (4 input pixels for these models)
    bare = np.abs(np.asarray(upscale_with_model(model, picture, 32, 0)) - reference).max(axis=2)
    seam = np.zeros(bare.shape, bool)
    for line in (32, 64):
        lo, hi = (line - 4) * model.scale, (line + 4) * model.scale
        seam[lo:hi, :] = True
        seam[:, lo:hi] = True
    assert bare[~seam].max() <= 1
    assert bare[seam].max() > 1  # the seam is real: context matters


def test_a_scale_the_model_lacks_is_reached_with_lanczos(upscaler_files, picture) -> None:
    model = load_upscaler(identify(upscaler_files["2x-tiny-compact"]))
    three = upscale_image(model, picture, 288, 192, tile=0)  # 2x twice, then down to 3x, as A1111 does
    twice = upscale_with_model(model, upscale_with_model(model, picture, 0), 0)
    assert three.size == (288, 192)
    assert np.array_equal(pixels(three), pixels(twice.resize((288, 192), Image.Resampling.LANCZOS)))


def test_the_hires_pass_with_an_upscaler_model_is_the_model_then_image_to_image(
    tiny_parts, upscaler_files, tmp_path
) -> None:
    folder = str(upscaler_files["2x-tiny-compact"].parent)
    hires = request(seed=3, hires_scale=2.0, hires_steps=6, hires_strength=0.5, hires_upscaler="2x-tiny-compact",
                    upscaler_dir=folder)
    [result] = generate(hires, tiny_parts)
    [first] = generate(request(seed=3), tiny_parts)
    model = load_upscaler(identify(upscaler_files["2x-tiny-compact"]))
    enlarged = upscale_with_model(model, first.image)
    [again] = generate(request(seed=3, init_image=enlarged, width=2 * SIZE, height=2 * SIZE,
                               num_inference_steps=6, strength=0.5), tiny_parts)
    assert np.array_equal(pixels(result.image), pixels(again.image))
    from sdgen.record.metadata import a1111_parameters, encoded_image
    from sdgen.record.replay import replay_values

    assert "Hires upscaler: 2x-tiny-compact" in a1111_parameters(result, tiny_parts)
    (tmp_path / "hires.png").write_bytes(encoded_image(result, tiny_parts))
    replayed = replay_values(tmp_path / "hires.png", set())  # --from finds the model again by name in its folder
    assert replayed["hires_upscaler"] == "2x-tiny-compact" and replayed["upscaler_dir"] == folder


def test_sdgen_upscale_writes_each_picture_with_a1111s_postprocess_fields(upscaler_files, picture, tmp_path) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a fox\nSteps: 4, Seed: 1")
    picture.save(tmp_path / "fox.png", pnginfo=info)
    picture.save(tmp_path / "cat.png")
    app, runner = build_app(), CliRunner()
    folder = str(upscaler_files["4x-tiny-esrgan"].parent)
    args = ["upscale", str(tmp_path / "fox.png"), str(tmp_path / "cat.png"), "--upscaler-dir", folder,
            "--upscaler", "4x-tiny-esrgan", "--scale", "2", "-o", f"{tmp_path}/big/", "--device", "cpu"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    with Image.open(tmp_path / "big" / "fox-upscaled.png") as fox:
        assert fox.size == (192, 128)
        assert fox.info["parameters"] == (
            "a fox\nSteps: 4, Seed: 1, Postprocess upscale by: 2, Postprocess upscaler: 4x-tiny-esrgan"
        )
    assert (tmp_path / "big" / "cat-upscaled.png").is_file()
    again = runner.invoke(app, args)  # nothing is replaced without --overwrite, before the model loads
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--upscaler", "missing"], "Invalid --upscaler 'missing': no such upscaler file"),
        (["--tile", "8"], "Invalid --tile 8: must be a whole number from 32"),
        (["--scale", "0"], "Invalid --scale 0.0: must be more than 0"),
        ([], "no upscaler; pass --upscaler FILE"),
    ],
)
def test_bad_upscale_input_is_one_line_and_exit_2_before_loading(
    upscaler_files, picture, tmp_path, monkeypatch, extra, message
) -> None:
    from sdgen.models import upscalers

    monkeypatch.setattr(upscalers, "load_upscaler", lambda *a, **k: pytest.fail("the model loaded"))
    picture.save(tmp_path / "in.png")
    base = [] if "--upscaler" in extra or not extra else ["--upscaler", str(upscaler_files["2x-tiny-compact"])]
    if not extra:
        base = []
    done = CliRunner().invoke(build_app(), ["upscale", str(tmp_path / "in.png"), *base, *extra])
    assert done.exit_code == 2
    assert message in done.output and len(done.output.strip().splitlines()) == 1, done.output
