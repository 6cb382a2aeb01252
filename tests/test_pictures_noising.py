"""Forward noising: q(x_t | x_0) with the model's own schedule, in pixel and latent space."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.explain.noising import chosen_timesteps, forward_noise
from sdgen.record.metadata import read_image_metadata
from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG

runner = CliRunner()


@pytest.fixture
def picture(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cat.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_evenly_spaced_from_0_to_t_or_as_given() -> None:
    assert chosen_timesteps(None, 5, 1000) == [0, 250, 500, 749, 999]
    assert chosen_timesteps("0,100,500,999", 8, 1000) == [0, 100, 500, 999]


def test_the_noise_is_the_schedules_one_jump() -> None:
    from diffusers import DDPMScheduler

    x0 = torch.rand((1, 3, 8, 8)) * 2 - 1
    frames = forward_noise(x0, [0, 500, 999], SD15_SCHEDULER_CONFIG, seed=4)
    assert torch.equal(frames[0], x0)  # t = 0: the image itself
    alpha_bar = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod[500]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(frames[1], alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise, atol=1e-6)
    assert frames[2].std() > 0.9  # t = T: almost only noise


def test_pixel_space_at_t0_is_the_input(tiny_model_dir, picture, tmp_path) -> None:
    out = tmp_path / "strip.png"
    args = [
        "noise",
        str(picture),
        "-m",
        str(tiny_model_dir),
        "--space",
        "pixel",
        "--timesteps",
        "0,999",
        "-o",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    _, record = read_image_metadata(out)
    assert record["timesteps"] == [0, 999] and record["space"] == "pixel" and record["alphas_cumprod"][0] == 1.0
    from sdgen.engine.request import ModelSpec
    from sdgen.explain.noising import NoiseRequest, noise_pictures

    request = NoiseRequest(str(picture), "0,999", space="pixel", seed=record["seed"]).checked()
    spec = ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32")
    frames, _, _ = noise_pictures(request, spec, lambda t: [0, 999])
    assert np.array_equal(np.asarray(frames[0]), np.asarray(Image.open(picture).convert("RGB")))


def test_latent_space_at_t0_is_the_vae_round_trip(tiny_model_dir, tiny_parts, picture) -> None:
    from sdgen.engine.latents import image_to_tensor
    from sdgen.engine.request import ModelSpec
    from sdgen.explain.noising import NoiseRequest, noise_pictures
    from sdgen.pictures.previews import to_images

    request = NoiseRequest(str(picture), "0,500", seed=1).checked()
    spec = ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32")
    frames, timesteps, facts = noise_pictures(request, spec, lambda t: [0, 500])
    vae = tiny_parts.vae
    with torch.inference_mode():
        pixels = image_to_tensor(Image.open(picture), 64, 64)
        round_trip = vae.decode(vae.encode(pixels).latent_dist.mode(), return_dict=False)[0]
    assert np.array_equal(np.asarray(frames[0]), np.asarray(to_images(round_trip)[0]))
    assert timesteps == [0, 500] and 0 < facts["alphas_cumprod"][1] < 1


def test_the_command_writes_a_strip_and_an_animation(tiny_model_dir, picture, tmp_path) -> None:
    out = tmp_path / "n/"
    args = [
        "noise",
        str(picture),
        "-m",
        str(tiny_model_dir),
        "--frames",
        "4",
        "--seed",
        "2",
        "-o",
        str(out) + "/",
        "--animation",
        str(tmp_path / "n.gif"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    [path] = list((tmp_path / "n").iterdir())
    assert path.name == "00000-noise-cat.png" and result.stdout == f"{path}\n"
    with Image.open(tmp_path / "n.gif") as animation:
        assert animation.n_frames == 4
        assert json.loads(animation.info["comment"])["timesteps"] == [0, 333, 666, 999]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timesteps", "0,1000"], "Invalid --timesteps '0,1000': give whole numbers from 0 to 999"),
        (["--space", "pixels"], "Invalid --space 'pixels': choose latent or pixel."),
        (["--animation", "a.avi"], "Invalid --animation 'a.avi': use .gif or .webp."),
    ],
)
def test_bad_noise_options_are_one_line(tiny_model_dir, picture, args, message) -> None:
    result = runner.invoke(app, ["noise", str(picture), "-m", str(tiny_model_dir), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"sdgen: error: {message}\n" or result.stderr.startswith(f"sdgen: error: {message}")
