"""The diffusers folder layout: weight variants, what is downloaded, missing and pickled parts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sdgen.engine.checking import check_request
from sdgen.engine.loader import load_model
from sdgen.engine.request import ModelSpec
from sdgen.errors import ModelLoadError
from sdgen.models.layout import check_model_folder, download_patterns


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_fp16_variant_is_preferred_when_running_in_float16(tiny_model_dir) -> None:
    chosen = check_model_folder(tiny_model_dir, "tiny", "fp16")
    assert chosen["unet"].name == "diffusion_pytorch_model.fp16.safetensors"
    assert chosen["text_encoder"].name == "model.fp16.safetensors"
    assert check_model_folder(tiny_model_dir, "tiny", None)["unet"].name == "diffusion_pytorch_model.safetensors"


def test_fp16_variant_falls_back_to_full_weights(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    (model / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    chosen = check_model_folder(model, "m", "fp16")
    assert chosen["vae"].name == "diffusion_pytorch_model.safetensors"
    assert chosen["unet"].name == "diffusion_pytorch_model.fp16.safetensors"


def test_hub_download_asks_for_exactly_one_weights_file_per_part() -> None:
    files = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
    ]
    fp16 = download_patterns(files, "fp16", "m")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fp16
    assert "unet/diffusion_pytorch_model.safetensors" not in fp16
    assert "vae/diffusion_pytorch_model.safetensors" in fp16  # no fp16 VAE: full weights
    full = download_patterns(files, None, "m")
    assert "unet/diffusion_pytorch_model.safetensors" in full and not any(".bin" in p for p in full)


def test_pickle_only_weights_are_refused(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    for weights in (model / "unet").glob("*.safetensors"):
        weights.unlink()
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match=r"only pickled weights for unet \(unet/diffusion_pytorch_model.bin\)"):
        load_model(ModelSpec(model=str(model), device="cpu"))


def test_missing_part_names_the_file(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    shutil.rmtree(model / "vae")
    with pytest.raises(ModelLoadError, match=r"is incomplete: .*vae/config.json is missing"):
        load_model(ModelSpec(model=str(model), device="cpu"))


def test_native_size_comes_from_the_configs_on_disk(tmp_path, tiny_model_dir) -> None:
    import json

    from sdgen.engine.request import GenerationRequest
    from sdgen.models.layout import native_size

    for part, config in (("unet", {"sample_size": 96}), ("vae", {"block_out_channels": [128, 256, 512, 512]})):
        (tmp_path / "sd2-v" / part).mkdir(parents=True)
        (tmp_path / "sd2-v" / part / "config.json").write_text(json.dumps(config))
    assert native_size(str(tmp_path / "sd2-v")) == 768  # SD 2.x 768-v
    assert native_size(str(tiny_model_dir)) == 64
    assert native_size("someone/not-in-the-cache") is None
    spec = ModelSpec(model=str(tmp_path / "sd2-v")).checked()  # the checked model knows its size
    request = check_request(GenerationRequest("a fox"), spec)
    assert (request.width, request.height) == (768, 768)
    sized = check_request(GenerationRequest("a fox", width=512), spec)
    assert sized.width == 512 and sized.height == 768
