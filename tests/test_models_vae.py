"""--vae: another VAE, from a folder, a Hub id in the cache, or one .safetensors file in the LDM or diffusers
layout; against diffusers' pipeline given the same VAE (float32, within 1/255)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.checking import check_request
from sdgen.engine.loader import load_model
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import InvalidRequestError
from sdgen.models.vae import vae_source
from sdgen.record.metadata import read_image_metadata
from sdgen.testing.ldm import vae_to_ldm

from .conftest import put_in_hub_cache
from .test_pipeline import reference_pipeline

runner = CliRunner()
PROMPT, SIZE, STEPS, SEED = "a lighthouse at dusk", 64, 3, 5


@pytest.fixture(scope="module")
def vaes(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny VAE (other random weights, same architecture): as a folder, an LDM-layout file, a
    diffusers-layout file, a pickle, and a Hub repo in the cache."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("vaes")
    torch.manual_seed(1)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(tiny_model_dir / "vae"))
    vae.save_pretrained(folder / "other-vae")
    state = {key: value.contiguous() for key, value in vae.state_dict().items()}
    save_file(vae_to_ldm(state, len(vae.config.block_out_channels)), str(folder / "other-vae-ldm.safetensors"))
    save_file(state, str(folder / "other-vae-diffusers.safetensors"))
    torch.save(state, folder / "other-vae.pt")
    put_in_hub_cache(folder / "other-vae", "someone/tiny-vae", "d" * 40)
    return folder


def image(tiny_model_dir: Path, vae: str | None) -> np.ndarray:
    parts = load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32", vae=vae))
    request = GenerationRequest(PROMPT, seed=SEED, num_inference_steps=STEPS, width=SIZE, height=SIZE)
    return np.asarray(generate(request, parts)[0].image).astype(np.int16)


def test_a_replaced_vae_matches_diffusers_with_that_vae(tiny_model_dir, vaes) -> None:
    from diffusers import AutoencoderKL

    ours = image(tiny_model_dir, str(vaes / "other-vae"))
    parts = load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32"))
    parts.vae = AutoencoderKL.from_pretrained(vaes / "other-vae")
    pipe = reference_pipeline(parts, check_request(GenerationRequest("x")).scheduler)
    expected = pipe(PROMPT, num_inference_steps=STEPS, width=SIZE, height=SIZE,
                    generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    assert np.abs(ours - np.asarray(expected).astype(np.int16)).max() <= 1
    assert np.abs(ours - image(tiny_model_dir, None)).max() > 5  # the model's own VAE draws another picture


@pytest.mark.parametrize("given", ["other-vae-ldm.safetensors", "other-vae-diffusers.safetensors", "hub"])
def test_single_files_and_hub_ids_equal_the_folder(tiny_model_dir, vaes, given: str) -> None:
    source = "someone/tiny-vae" if given == "hub" else str(vaes / given)
    assert np.array_equal(image(tiny_model_dir, source), image(tiny_model_dir, str(vaes / "other-vae")))


@pytest.mark.parametrize(
    ("value", "message"),
    [("VAES/other-vae.pt", "a pickle file can run code"), ("VAES/nothing.safetensors", "no such file or folder"),
     ("VAES", "has no config.json")],
)
def test_bad_vae_values_fail_before_loading(vaes, value: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        vae_source(value.replace("VAES", str(vaes)))


def test_the_cli_records_the_vae_and_replays_it(tiny_model_dir, vaes, tmp_path) -> None:
    args = [PROMPT, "--model", str(tiny_model_dir), "-W", "64", "-H", "64", "--steps", "2", "--seed", "1",
            "--vae", str(vaes / "other-vae-ldm.safetensors"), "-o", str(tmp_path / "a.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    parameters, record = read_image_metadata(tmp_path / "a.png")
    assert "VAE: other-vae-ldm.safetensors, VAE hash: " in parameters
    assert record["vae"] == str(vaes / "other-vae-ldm.safetensors") and len(record["vae_hash"]) == 10
    again = runner.invoke(app, ["--from", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png")])
    assert again.exit_code == 0, again.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_a_pickled_vae_is_refused_with_exit_2_before_loading(vaes, no_weights_load, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", "--vae", str(vaes / "other-vae.pt"), "-o", f"{tmp_path}/"])
    assert result.exit_code == 2 and "Invalid --vae" in result.stderr and "pickle" in result.stderr
