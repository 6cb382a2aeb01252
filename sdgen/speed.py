"""Speed and memory: what to do to the loaded parts for the device they run on.

The decisions (plan_speed) are plain data, unit-tested without a GPU; apply_speed carries them out with
the libraries' own switches (diffusers' attention slicing, VAE slicing and tiling, accelerate's offload,
torch.compile, channels_last). Measured with scripts/bench.py; see the README's performance section.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.config import ModelSpec
    from sdgen.devices import Placement
    from sdgen.models import StableDiffusionParts

log = logging.getLogger("sdgen")

OFFLOAD_CHOICES = ("none", "model", "sequential")


@dataclass(frozen=True)
class SpeedPlan:
    """What apply_speed does; every field is a decision tests can check."""

    channels_last: bool  # NHWC convolutions: faster oneDNN (CPU) and cuDNN (CUDA) kernels for the U-Net and VAE
    attention_slicing: bool  # attention in slices: less peak memory, a little slower
    vae_slicing: bool  # decode a batch one image at a time
    vae_tiling: bool  # decode in overlapping tiles, blended: big images in little memory, no seams
    offload: str  # none, model (one part on the GPU at a time), sequential (one layer at a time)
    compile: bool  # torch.compile the U-Net: faster steps after a slow first call
    move_to_device: bool  # False when offload hooks move the weights instead


def plan_speed(spec: ModelSpec, placement: Placement) -> SpeedPlan:
    """Decide from the options asked for and where the run happens; refuse what cannot work there."""
    kind = placement.device.partition(":")[0]
    offload = (spec.offload or "none").lower()
    if offload not in OFFLOAD_CHOICES:
        raise InvalidRequestError(f"Invalid --offload {spec.offload!r}: use one of {', '.join(OFFLOAD_CHOICES)}.")
    if offload != "none" and kind != "cuda":
        raise InvalidRequestError(
            f"Invalid --offload {offload} on {placement.device}: offloading keeps weights in CPU memory and "
            "moves them to a CUDA GPU when needed; on the CPU they are there already. Drop --offload."
        )
    return SpeedPlan(
        # bench.py on an AMX CPU: channels_last makes the bfloat16 U-Net step 1.09x and the VAE decode 1.7x
        # faster, but gains nothing in float32 (1.00x) while its copies raise peak RSS; diffusers advises
        # it on CUDA. MPS has no fast path worth the copies.
        channels_last=kind == "cuda" or (kind == "cpu" and placement.dtype == "bfloat16"),
        attention_slicing=spec.attention_slicing,
        vae_slicing=spec.vae_slicing,
        vae_tiling=spec.vae_tiling,
        offload=offload,
        compile=spec.compile,
        move_to_device=offload == "none",
    )


def place_module(module: Any, device: str | None, dtype: Any, channels_last: bool = False) -> None:
    """Device, dtype and layout in one pass over the weights (one copy, not three), then inference mode."""
    import diffusers.utils.logging
    import torch

    options: dict[str, Any] = {"dtype": dtype}
    if device is not None:
        options["device"] = device
    if channels_last:
        options["memory_format"] = torch.channels_last
    # diffusers warns on any .to(dtype) about keeping modules in float32, even when its list of them is empty
    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    try:
        module.to(**options)
    finally:
        diffusers.utils.logging.set_verbosity(level)
    module.eval()
    module.requires_grad_(False)


def apply_speed(parts: StableDiffusionParts, plan: SpeedPlan) -> None:
    """What comes after the weights are in place (place_module did device, dtype and layout)."""
    import torch

    device = parts.placement.device
    if plan.attention_slicing:
        parts.unet.set_attention_slice("auto")  # half the heads at a time, as diffusers' pipeline does
    if plan.vae_slicing:
        parts.vae.enable_slicing()
    if plan.vae_tiling:
        parts.vae.enable_tiling()
    if plan.offload == "model":
        from accelerate import cpu_offload_with_hook

        hook = None
        for module in (parts.text_encoder, parts.unet, parts.vae):  # the order they run in
            _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
    elif plan.offload == "sequential":
        from accelerate import cpu_offload

        for module in (parts.text_encoder, parts.unet, parts.vae):
            cpu_offload(module, execution_device=torch.device(device))
    if plan.compile:
        log.info("Compiling the U-Net with torch.compile: the first step takes a minute or more.")
        parts.unet = torch.compile(parts.unet, **compile_options(device))


def compile_options(device: str) -> dict[str, Any]:
    """CPU: inductor's freezing folds the (never trained) weights into the graph and prepacks them for
    oneDNN: bench.py measured the bfloat16 256x256 step 1.76x faster with it, 1.13x without. CUDA:
    diffusers' advice, mode="reduce-overhead" (CUDA graphs)."""
    if device.partition(":")[0] == "cuda":
        return {"mode": "reduce-overhead"}
    import torch._inductor.config

    torch._inductor.config.freezing = True
    return {}
