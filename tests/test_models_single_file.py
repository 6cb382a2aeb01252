"""Single-file checkpoints: the tiny model written in the LDM/A1111 layout key by key loads offline and
equals its folder; pickles are refused, and even when allowed never run code; `sdgen convert` equals the
safe load; other families are refused by name; the shipped SD 1.5 configs and CLIP tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.checking import check_request
from sdgen.engine.loader import load_model
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import InvalidRequestError
from sdgen.models.single_file import inspect_checkpoint
from sdgen.record.metadata import read_image_metadata
from sdgen.testing.ldm import model_to_ldm

from .test_pipeline import reference_pipeline

runner = CliRunner()
PROMPT, SIZE, STEPS, SEED = "a red fox in the snow", 64, 3, 11


class Payload:
    """What a malicious pickle does: call something when it is unpickled."""

    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent.parent / ".pickle-ran",))


@pytest.fixture(scope="module")
def checkpoints(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    tensors = model_to_ldm(tiny_model_dir)
    save_file(tensors, str(folder / "tiny.safetensors"))
    torch.save({"state_dict": tensors, "global_step": 1000, "epoch": 2}, folder / "tiny.ckpt")
    torch.save({"state_dict": tensors, "callback": Payload()}, folder / "evil.ckpt")
    sdxl = {"conditioner.embedders.1.model.ln_final.weight": torch.ones(2),
            "model.diffusion_model.input_blocks.0.0.weight": torch.ones(2, 4, 3, 3)}
    save_file(sdxl, str(folder / "sdxl.safetensors"))
    save_file({"double_blocks.0.img_attn.norm.key_norm.scale": torch.ones(2)}, str(folder / "flux.safetensors"))
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, str(folder / "lora.safetensors"))
    return folder


def image(model: str, **spec) -> np.ndarray:
    parts = load_model(ModelSpec(model=model, device="cpu", dtype="float32", **spec))
    request = GenerationRequest(PROMPT, seed=SEED, num_inference_steps=STEPS, width=SIZE, height=SIZE)
    return np.asarray(generate(request, parts)[0].image).astype(np.int16)


def test_the_ldm_file_equals_the_folder_and_diffusers(tiny_model_dir, checkpoints) -> None:
    ours = image(str(checkpoints / "tiny.safetensors"), model_config=str(tiny_model_dir))
    folder = image(str(tiny_model_dir))
    assert np.array_equal(ours, folder)
    parts = load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32"))
    pipe = reference_pipeline(parts, check_request(GenerationRequest("x")).scheduler)
    expected = pipe(PROMPT, num_inference_steps=STEPS, width=SIZE, height=SIZE,
                    generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    assert np.abs(ours - np.asarray(expected).astype(np.int16)).max() <= 1


def test_a_checkpoint_is_identified_from_its_header(checkpoints) -> None:
    found = inspect_checkpoint(str(checkpoints / "tiny.safetensors"))
    assert (found.family, found.in_channels, found.pickled, found.description) == ("sd1", 4, False, "SD 1.x")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sdxl.safetensors", "this is an SDXL checkpoint"),
        ("flux.safetensors", "this is a Flux checkpoint"),
        ("lora.safetensors", "not a Stable Diffusion checkpoint in the original layout"),
        ("tiny.ckpt", "a pickled checkpoint (.ckpt) can run code"),
    ],
)
def test_other_files_are_refused_by_name_before_loading(checkpoints, no_weights_load, tmp_path, name, message) -> None:
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inspect_checkpoint(str(checkpoints / name))
    result = runner.invoke(app, ["a fox", "--model", str(checkpoints / name), "-o", f"{tmp_path}/"])
    assert result.exit_code == 2 and "Invalid --model" in result.stderr


def test_a_pickle_that_runs_code_never_runs_even_when_allowed(checkpoints, tmp_path) -> None:
    marker = Path(__file__).parent.parent / ".pickle-ran"
    marker.unlink(missing_ok=True)
    evil = str(checkpoints / "evil.ckpt")
    with pytest.raises(InvalidRequestError, match="cannot be read safely"):
        inspect_checkpoint(evil, allow_pickle=True)
    result = runner.invoke(app, ["a fox", "--model", evil, "--allow-unsafe-pickle", "-o", f"{tmp_path}/"])
    assert result.exit_code == 2, result.output
    converted = runner.invoke(app, ["convert", evil, str(tmp_path / "evil.safetensors")])
    assert converted.exit_code == 2 and not (tmp_path / "evil.safetensors").exists()
    assert not marker.exists()


def test_an_allowed_pickle_and_its_conversion_equal_the_safetensors_file(tiny_model_dir, checkpoints, tmp_path) -> None:
    ckpt = str(checkpoints / "tiny.ckpt")
    assert np.array_equal(image(ckpt, model_config=str(tiny_model_dir), allow_unsafe_pickle=True),
                          image(str(checkpoints / "tiny.safetensors"), model_config=str(tiny_model_dir)))
    result = runner.invoke(app, ["convert", ckpt, str(tmp_path / "converted.safetensors")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "converted.safetensors")
    converted, original = load_file(tmp_path / "converted.safetensors"), load_file(checkpoints / "tiny.safetensors")
    assert converted.keys() == original.keys() and all(torch.equal(converted[k], original[k]) for k in original)
    again = runner.invoke(app, ["convert", ckpt, str(tmp_path / "converted.safetensors")])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_the_cli_runs_a_checkpoint_offline_and_records_its_name(tiny_model_dir, checkpoints, tmp_path) -> None:
    args = [PROMPT, "--model", str(checkpoints / "tiny.safetensors"), "--model-config", str(tiny_model_dir),
            "-W", "64", "-H", "64", "--steps", "2", "--seed", "3", "-o", str(tmp_path / "a.png")]
    result = runner.invoke(app, args, env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    parameters, record = read_image_metadata(tmp_path / "a.png")
    assert "Model: tiny," in parameters and record["model"] == str(checkpoints / "tiny.safetensors")
    assert record["model_config"] == str(tiny_model_dir)
    again = runner.invoke(app, ["--from", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png")])
    assert again.exit_code == 0, again.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_a_checkpoints_a1111_text_has_its_model_hash(tiny_model_dir, checkpoints, tmp_path) -> None:
    """Issue 24: `Model hash` is A1111's short sha256 of the file, written before `Model` as A1111 writes it."""
    import hashlib

    from sdgen.models import hashes

    hashes._sha256.cache_clear()
    model = checkpoints / "tiny.safetensors"
    args = [PROMPT, "--model", str(model), "--model-config", str(tiny_model_dir), "-W", "64", "-H", "64",
            "--steps", "1", "--seed", "3", "-o", str(tmp_path / "a.png")]
    result = runner.invoke(app, args, env={"HF_HUB_OFFLINE": "1", "SDGEN_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    parameters, _ = read_image_metadata(tmp_path / "a.png")
    short = hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    assert f"Model hash: {short}, Model: tiny," in parameters
    assert (tmp_path / "cache" / "hashes.json").is_file()  # the next run reads it instead of hashing
    hashes._sha256.cache_clear()


def test_the_shipped_configs_hold_sd15_and_the_clip_tokenizer() -> None:
    from transformers import CLIPTokenizer

    from sdgen.config.settings import configs_dir

    folder = configs_dir() / "sd15"
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "scheduler/scheduler_config.json"):
        assert (folder / name).is_file(), name
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert len(tokenizer) == 49408
    # the ids SD 1.5's own tokenizer gives: start, a, photo, of, a, cat, ',', end
    assert tokenizer("a photo of a cat,").input_ids == [49406, 320, 1125, 539, 320, 2368, 267, 49407]


def test_an_inpainting_checkpoint_loads_with_the_sd1_configs_and_inpaints(tiny_model_dir, tmp_path) -> None:
    """A 9-channel file read with a 4-channel model's configs: the input channels come from the file."""
    from sdgen.testing.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny-inpainting", in_channels=9)
    save_file(model_to_ldm(folder), str(tmp_path / "inpainting.safetensors"))
    found = inspect_checkpoint(str(tmp_path / "inpainting.safetensors"))
    assert (found.in_channels, found.description) == (9, "SD 1.x inpainting")
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(init)
    Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16)).save(mask)
    request = GenerationRequest(PROMPT, seed=SEED, num_inference_steps=STEPS, init_image=str(init), mask=str(mask),
                                strength=1.0)
    made = {}
    for name, spec in (("file", dict(model=str(tmp_path / "inpainting.safetensors"), model_config=str(tiny_model_dir))),
                       ("folder", dict(model=str(folder)))):
        parts = load_model(ModelSpec(device="cpu", dtype="float32", **spec))
        assert parts.unet.config.in_channels == 9
        made[name] = np.asarray(generate(request, parts)[0].image)
    assert np.array_equal(made["file"], made["folder"])


def test_an_sd2_file_gets_the_shipped_sd2_configs_and_its_native_size(tmp_path) -> None:
    from sdgen.models.layout import native_size
    from sdgen.models.single_file import config_folder

    header_only = {"model.diffusion_model.input_blocks.0.0.weight": torch.ones(320, 4, 3, 3),
                   "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": torch.ones(2, 2)}
    save_file(header_only, str(tmp_path / "sd21.safetensors"))
    found = inspect_checkpoint(str(tmp_path / "sd21.safetensors"))
    assert found.family == "sd2" and found.description == "SD 2.x"
    folder = config_folder(None, offline=True, family="sd2")
    assert folder.name == "sd2"
    assert native_size(str(tmp_path / "sd21.safetensors")) == 768  # SD 2.1 768-v, diffusers' assumption too
    assert native_size(str(tmp_path / "sd21.safetensors"), prediction_type="epsilon") == 512  # SD 2.x base


def test_the_shipped_sd2_configs_build_sd2s_architecture() -> None:
    import json

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    from sdgen.config.settings import configs_dir

    folder = configs_dir() / "sd2"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    assert unet.config.cross_attention_dim == 1024 and unet.config.use_linear_projection
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # SD 2.x's U-Net
    text = CLIPTextConfig(**json.loads((folder / "text_encoder" / "config.json").read_text()))
    assert (text.hidden_size, text.num_hidden_layers, text.hidden_act) == (1024, 23, "gelu")  # OpenCLIP-H, penultimate
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer").pad_token_id == 0  # OpenCLIP pads with "!"


def test_an_old_non_zip_pickle_converts_too(checkpoints, tmp_path) -> None:
    tensors = load_file(checkpoints / "tiny.safetensors")
    torch.save({"state_dict": tensors}, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    result = runner.invoke(app, ["convert", str(tmp_path / "old.ckpt"), str(tmp_path / "old.safetensors")])
    assert result.exit_code == 0, result.output
    assert load_file(tmp_path / "old.safetensors").keys() == tensors.keys()
