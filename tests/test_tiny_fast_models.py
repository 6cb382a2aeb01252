"""The one-step models' layouts load in sdgen and make diffusers' picture: SD 2.x (SD-Turbo) with its Euler
trailing config, and SDXS with an AutoencoderTiny as its vae/, each against StableDiffusionPipeline.from_pretrained
of the same folder, 1 step, guidance 0 (their model cards' settings), float32, within 1/255."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdgen.engine.loader import load_model
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.testing.tiny_fast_models import build_tiny_sd2, build_tiny_sdxs

from .conftest import SIZE

PROMPT = "a lighthouse at dusk"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("one-step")
    return {"sd2": build_tiny_sd2(root / "sd2"), "sdxs": build_tiny_sdxs(root / "sdxs")}


def _diffusers(folder: Path, scheduler: str, seed: int) -> np.ndarray:
    import torch
    from diffusers import StableDiffusionPipeline, TCDScheduler

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if scheduler == "tcd":
        pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config)
    image = pipe(PROMPT, num_inference_steps=1, guidance_scale=0.0, width=SIZE, height=SIZE,
                 generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize(("name", "scheduler", "vae_class"), [
    ("sd2", "euler", "AutoencoderKL"),  # sd-turbo's preset: the model's own Euler (trailing) scheduler
    ("sdxs", "tcd", "AutoencoderTiny"),  # sdxs's preset
])
def test_one_step_layouts_match_diffusers(folders, name: str, scheduler: str, vae_class: str) -> None:
    folder = folders[name]
    parts = load_model(ModelSpec(model=str(folder), device="cpu", dtype="float32"))
    assert type(parts.vae).__name__ == vae_class
    request = GenerationRequest(PROMPT, seed=11, num_inference_steps=1, guidance_scale=0.0, scheduler=scheduler,
                                width=SIZE, height=SIZE)
    ours = np.asarray(generate(request, parts)[0].image).astype(np.int16)
    assert ours.std() > 10, "a flat image would make the comparison meaningless"
    assert np.abs(ours - _diffusers(folder, scheduler, 11)).max() <= 1


def test_img2img_with_a_tiny_autoencoder_as_the_vae_encodes_without_a_draw(folders) -> None:
    from PIL import Image

    folder = folders["sdxs"]
    parts = load_model(ModelSpec(model=str(folder), device="cpu", dtype="float32"))
    start = Image.new("RGB", (SIZE, SIZE), (200, 80, 40))
    request = GenerationRequest(PROMPT, seed=2, num_inference_steps=2, guidance_scale=0.0, scheduler="euler",
                                init_image=start, strength=0.5, width=SIZE, height=SIZE, num_images=2, batch_size=2)
    first, second = generate(request, parts)
    assert first.image.size == second.image.size == (SIZE, SIZE)


def test_sd2_prompts_end_before_their_padding_as_in_diffusers(folders) -> None:
    """OpenCLIP pads with "!": the end token comes right after the text, then the padding (diffusers' and
    A1111's layout), so SD-Turbo's prompt embedding is diffusers' own."""
    import torch
    from diffusers import StableDiffusionPipeline

    from sdgen.engine.text import chunk_prompt, encode_prompt

    pipe = StableDiffusionPipeline.from_pretrained(str(folders["sd2"]), safety_checker=None,
                                                   requires_safety_checker=False)
    tokenizer = pipe.tokenizer
    [ids] = chunk_prompt(PROMPT, tokenizer).ids
    assert ids == tokenizer(PROMPT, padding="max_length", max_length=77).input_ids and ids[-1] == tokenizer.pad_token_id
    ours = encode_prompt(PROMPT, tokenizer, pipe.text_encoder, "cpu")
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    assert torch.equal(ours, theirs)


def test_a_tiny_autoencoder_folder_is_a_vae_for_another_model(folders, tiny_model_dir) -> None:
    """--vae SDXS-MODEL (its vae/ is an AutoencoderTiny) on the tiny SD 1.x: it decodes, as the model's own would."""
    parts = load_model(ModelSpec(model=str(tiny_model_dir), vae=str(folders["sdxs"]), device="cpu", dtype="float32"))
    assert type(parts.vae).__name__ == "AutoencoderTiny"
    request = GenerationRequest(PROMPT, seed=4, num_inference_steps=1, guidance_scale=0.0, scheduler="tcd",
                                width=SIZE, height=SIZE)
    assert generate(request, parts)[0].image.size == (SIZE, SIZE)
