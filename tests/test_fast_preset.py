"""--preset fast (sdgen/config/fast_preset.py) over fake caches, and the one-step presets pinned to their docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdgen.config import fast_preset, settings
from sdgen.config.fast_preset import DEFAULT_MODEL, TAESD, choose_fast
from sdgen.errors import InvalidRequestError

SDXS = ("IDKiro/sdxs-512-0.9", "unet/diffusion_pytorch_model.safetensors")
TURBO = ("stabilityai/sd-turbo", "unet/diffusion_pytorch_model.fp16.safetensors")
SD15 = (DEFAULT_MODEL, "unet/diffusion_pytorch_model.safetensors")
HYPER = ("ByteDance/Hyper-SD", "Hyper-SD15-1step-lora.safetensors")
LCM = ("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors")
TINY_DECODER = (TAESD, "diffusion_pytorch_model.safetensors")


def cache(*files: tuple[str, str]):
    return lambda repo, file: (repo, file) in files


@pytest.mark.parametrize(("files", "chosen"), [
    ((SDXS, TURBO, SD15, HYPER, LCM), "sdxs"),
    ((TURBO, SD15, HYPER), "sd-turbo"),
    ((SD15, HYPER, LCM), "hyper"),
    ((HYPER, LCM), None),  # the LoRAs without the model they go on
    ((SD15, LCM), "lcm"),
    ((SD15,), "fast"),
])
def test_the_fastest_cached_recipe_is_chosen(files, chosen) -> None:
    if chosen is None:
        with pytest.raises(InvalidRequestError, match=r"^Invalid preset 'fast': none of its recipes .* `hf download "
                                                      r"IDKiro/sdxs-512-0.9`"):
            choose_fast("cuda:0", False, cache(*files))
        return
    assert choose_fast("cuda:0", False, cache(*files)).recipe.preset == chosen


def test_on_a_cpu_taesd_decodes_when_cached_except_for_sdxs() -> None:
    cpu = choose_fast("cpu", True, cache(TURBO, TINY_DECODER))
    assert cpu.decoder == TAESD and "CPU, bfloat16 units" in cpu.reason and TAESD in cpu.reason
    assert choose_fast("cuda:0", True, cache(TURBO, TINY_DECODER)).decoder is None
    assert choose_fast("cpu", False, cache(TURBO)).decoder is None
    assert choose_fast("cpu", False, cache(SDXS, TINY_DECODER)).decoder is None  # its own tiny decoder


def test_the_settings_layer_is_the_chosen_presets_file(monkeypatch, tmp_path: Path) -> None:
    from .conftest import put_in_hub_cache

    folder = tmp_path / "turbo"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"not read")
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    put_in_hub_cache(folder, TURBO[0], "e" * 40)
    original = fast_preset.hub_cached
    monkeypatch.setattr(fast_preset, "hub_cached", lambda: original(str(hub)))
    monkeypatch.setattr(fast_preset, "machine_device", lambda device: ("cuda:0", False))
    resolved = settings.resolve(environ={}, preset="fast")
    chosen = {key: value.value for key, value in resolved.items() if value.source == "preset fast"}
    assert chosen == preset("sd-turbo")
    monkeypatch.setattr(fast_preset, "hub_cached", lambda: original(str(tmp_path / "empty")))
    with pytest.raises(InvalidRequestError, match="none of its recipes is in the Hugging Face cache"):
        settings.resolve(environ={}, preset="fast")


def preset(name: str) -> dict:
    resolved = settings.resolve(environ={}, preset=name)
    return {key: value.value for key, value in resolved.items() if value.source == f"preset {name}"}


def test_one_step_presets_are_what_their_model_cards_say() -> None:
    # ByteDance/Hyper-SD's card, SD 1.5 1-step unified LoRA: TCDScheduler, 1 step, guidance 0, eta 1.0
    assert preset("hyper") == {
        "lora": ["ByteDance/Hyper-SD/Hyper-SD15-1step-lora.safetensors"], "scheduler": "tcd", "tcd_eta": 1.0,
        "steps": 1, "guidance_scale": 0.0,
    }
    # stabilityai/sd-turbo's card: 512x512, num_inference_steps=1, guidance_scale=0.0, its own (Euler) scheduler
    assert preset("sd-turbo") == {
        "model": "stabilityai/sd-turbo", "scheduler": "euler", "steps": 1, "guidance_scale": 0.0, "width": 512,
        "height": 512,
    }
    # IDKiro/sdxs-512-0.9's card: 512x512, num_inference_steps=1, guidance_scale=0, its vae/ (a tiny decoder)
    assert preset("sdxs") == {
        "model": "IDKiro/sdxs-512-0.9", "scheduler": "tcd", "steps": 1, "guidance_scale": 0.0, "width": 512,
        "height": 512,
    }
    assert [recipe.preset for recipe in fast_preset.RECIPES] == ["sdxs", "sd-turbo", "hyper", "lcm", "fast"]
