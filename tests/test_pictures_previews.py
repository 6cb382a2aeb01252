"""Latents -> RGB at three qualities: the fixed linear map, a tiny autoencoder, the model's VAE."""

from __future__ import annotations

import numpy as np
import torch

from sdgen.engine.loader import load_tiny_autoencoder
from sdgen.hardware.devices import choose_placement
from sdgen.pictures.previews import LATENT_TO_RGB, approx_pixels, make_previewer, to_images


def latents(seed: int = 0) -> torch.Tensor:
    return torch.randn((2, 4, 32, 32), generator=torch.Generator().manual_seed(seed))


def test_approx_is_the_fixed_linear_map_of_each_latent_cell() -> None:
    x = latents()
    rgb = approx_pixels(x)
    assert rgb.shape == (2, 3, 32, 32)
    cell = x[1, :, 5, 7]  # one cell's 4 numbers
    expected = [sum(cell[c].item() * LATENT_TO_RGB[c][r] for c in range(4)) for r in range(3)]
    assert torch.allclose(rgb[1, :, 5, 7], torch.tensor(expected), atol=1e-6)


def test_every_quality_gives_pictures_of_the_run_size(tiny_parts, tiny_autoencoder_dir) -> None:
    tiny = load_tiny_autoencoder(str(tiny_autoencoder_dir), choose_placement("cpu", "float32", "cpu"))
    for quality in ("approx", "tiny", "full"):
        pictures = make_previewer(quality, tiny_parts, (64, 64), tiny)(latents())
        assert [p.size for p in pictures] == [(64, 64), (64, 64)], quality


def test_full_previews_decode_as_the_vae_does(tiny_parts) -> None:
    from sdgen.engine.latents import decode_latents

    x = latents(3)
    images, _ = decode_latents(tiny_parts.vae, x)
    previews = make_previewer("full", tiny_parts, (64, 64))(x)
    for image, preview in zip(images, previews, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(preview))


def test_a_broken_preview_is_black_not_an_error() -> None:
    pixels = torch.full((1, 3, 4, 4), float("nan"))
    assert np.asarray(to_images(pixels)[0]).max() == 0


def test_a_missing_tiny_autoencoder_is_one_clear_error(tmp_path) -> None:
    import pytest

    from sdgen.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="Cannot load the tiny autoencoder .*--preview-model"):
        load_tiny_autoencoder(str(tmp_path / "nothing-here"), choose_placement("cpu", "float32", "cpu"), offline=True)
