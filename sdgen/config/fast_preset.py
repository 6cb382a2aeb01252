"""`--preset fast`: the fastest usable recipe whose files are already in the Hugging Face cache.

The recipes, fastest first by the U-Net work of an image (steps x U-Net size x guidance), each one of the
shipped presets (configs/presets/NAME.toml):
  sdxs      IDKiro/sdxs-512-0.9: 1 step of a slimmer U-Net, its own tiny decoder
  sd-turbo  stabilityai/sd-turbo: 1 step of SD 2.1's U-Net, no guidance
  hyper     SD 1.5 with Hyper-SD's 1-step LoRA and TCD: 1 step, no guidance
  lcm       SD 1.5 with LCM-LoRA: 4 steps, no guidance
  fast.toml SD 1.5, 12 steps of DPM++ 2M Karras with guidance (the file `--preset fast` always had)
The machine (what `sdgen doctor` sees) decides the decoder: on a CPU, where the full VAE's decode (2.51 TFLOP
at 512x512 against 0.80 for a U-Net step, scripts/count_flops.py) outweighs a one-step image's U-Net, the tiny
autoencoder TAESD decodes when it is cached (not for SDXS, which decodes with its own). Nothing is downloaded:
with none of the recipes cached, one line names what to get.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sdgen.config.options import DEFAULT_MODEL
from sdgen.errors import InvalidRequestError

TAESD = "madebyollin/taesd"
UNET_FILES = ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors")


@dataclass(frozen=True)
class Recipe:
    preset: str  # configs/presets/<preset>.toml
    needs: tuple[tuple[str, tuple[str, ...]], ...]  # (Hub repo, files of which one must be cached)
    what: str
    own_decoder: bool = False  # decodes with a tiny autoencoder of its own (no TAESD on top)


RECIPES: tuple[Recipe, ...] = (
    Recipe("sdxs", (("IDKiro/sdxs-512-0.9", UNET_FILES),), "1 step of SDXS's slim U-Net", own_decoder=True),
    Recipe("sd-turbo", (("stabilityai/sd-turbo", UNET_FILES),), "1 step of SD-Turbo"),
    Recipe("hyper", ((DEFAULT_MODEL, UNET_FILES), ("ByteDance/Hyper-SD", ("Hyper-SD15-1step-lora.safetensors",))),
           "1 step of SD 1.5 with Hyper-SD's LoRA (TCD)"),
    Recipe("lcm", ((DEFAULT_MODEL, UNET_FILES),
                   ("latent-consistency/lcm-lora-sdv1-5", ("pytorch_lora_weights.safetensors",))),
           "4 steps of SD 1.5 with LCM-LoRA"),
    Recipe("fast", ((DEFAULT_MODEL, UNET_FILES),), "12 steps of SD 1.5 (DPM++ 2M Karras)"),
)
TAESD_FILES = ("diffusion_pytorch_model.safetensors",)


@dataclass(frozen=True)
class FastChoice:
    recipe: Recipe
    decoder: str | None  # TAESD on a CPU when cached
    reason: str  # one line: what was chosen and why


def hub_cached(cache_dir: str | None = None) -> Callable[[str, str], bool]:
    """Whether a file of a Hub repo (its main branch) is in the Hugging Face cache: no network."""
    from huggingface_hub import try_to_load_from_cache

    def cached(repo: str, file: str) -> bool:
        return isinstance(try_to_load_from_cache(repo, file, cache_dir=cache_dir), str)

    return cached


def machine_device(device: str) -> tuple[str, bool]:
    """The device a run with `device` (auto, cpu, cuda ...) would use, and whether the CPU has bfloat16 units."""
    from sdgen.hardware.devices import HardwareProbe, choose_device, cpu_flags

    bf16_units = bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    if device == "cpu":
        return "cpu", bf16_units
    return choose_device(device, HardwareProbe.detect()), bf16_units


def choose_fast(device: str, bf16_units: bool, cached: Callable[[str, str], bool]) -> FastChoice:
    """The first recipe whose files are all cached; `device` is the one a run would use (cpu, cuda:0, mps)."""
    for recipe in RECIPES:
        if all(any(cached(repo, file) for file in files) for repo, files in recipe.needs):
            on_cpu = device == "cpu"
            decoder = TAESD if on_cpu and not recipe.own_decoder and cached(TAESD, TAESD_FILES[0]) else None
            machine = f"{'CPU, ' + ('bfloat16 units' if bf16_units else 'float32 only') if on_cpu else device}"
            extra = f", {TAESD} decodes" if decoder else ""
            return FastChoice(recipe, decoder, f"{recipe.preset}: {recipe.what}{extra} ({machine}; in the cache)")
    first = RECIPES[0].needs[0][0]
    raise InvalidRequestError(
        f"Invalid preset 'fast': none of its recipes is in the Hugging Face cache; download the fastest with "
        f"`hf download {first}` (or stabilityai/sd-turbo, or {DEFAULT_MODEL}), then run it again."
    )
