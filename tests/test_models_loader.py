"""Loading each part: classes, device and dtype, corrupt weights, the per-part callback."""

from __future__ import annotations

import pytest

from sdgen.engine.loader import load_model
from sdgen.engine.request import ModelSpec
from sdgen.errors import ModelLoadError

from .test_models_layout import copy_model


def test_loads_each_part_from_a_local_folder(tiny_parts, tiny_model_dir) -> None:
    import torch

    assert type(tiny_parts.unet).__name__ == "UNet2DConditionModel"
    assert type(tiny_parts.vae).__name__ == "AutoencoderKL"
    assert type(tiny_parts.text_encoder).__name__ == "CLIPTextModel"
    assert "CLIPTokenizer" in type(tiny_parts.tokenizer).__name__
    assert tiny_parts.unet.dtype == torch.float32 and tiny_parts.unet.device.type == "cpu"
    assert tiny_parts.scheduler_config["beta_schedule"] == "scaled_linear"
    assert tiny_parts.source.folder == tiny_model_dir.resolve()
    assert tiny_parts.vae_scale_factor == 2


def test_corrupt_weights_name_the_file(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(ModelLoadError) as caught:
        load_model(ModelSpec(model=str(model), device="cpu", dtype="float32"))
    assert str(weights) in str(caught.value)
    assert "corrupt or truncated" in str(caught.value)


def test_part_callback_reports_each_part_with_its_size(tiny_model_dir) -> None:
    seen = []
    load_model(
        ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32"), on_part=lambda p, n: seen.append((p, n))
    )
    assert [part for part, _ in seen] == ["tokenizer", "text_encoder", "unet", "vae"]
    sizes = dict(seen)
    assert sizes["unet"] == (tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
