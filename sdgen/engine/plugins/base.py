"""What a plug-in declares (sdgen/engine/plugins/__init__.py keeps the registry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import NoisePredictor

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import SchedulerMixin

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import GenerationRequest, ModelSpec


@dataclass(frozen=True)
class Run:
    """What a plug-in sees of one denoising run (the first pass, or the hires pass)."""

    request: GenerationRequest
    parts: StableDiffusionParts
    scheduler: SchedulerMixin
    timesteps: torch.Tensor


@dataclass(frozen=True)
class Plugin:
    """One saver or guidance modifier; every hook is optional."""

    name: str
    options: tuple[str, ...]  # its keys in sdgen/config/options.py
    # at load time, before torch.compile: what to keep in parts.plugins[name]; None: not switched on
    load: Callable[[StableDiffusionParts, ModelSpec], Any] | None = None
    # per run: the predictor it puts around the one given (the U-Net call, or what wraps it already)
    wrap_predictor: Callable[[NoisePredictor, Run], NoisePredictor] | None = None
    guided_steps: Callable[[Run], int] | None = None  # how many first steps keep classifier-free guidance
    decoder: Callable[[Any], Any] | None = None  # from what `load` kept: the module that decodes the final latents
    # before any weights load: InvalidRequestError naming a bad value of its options, given what holds them
    # (the request, or the model spec for model options)
    check: Callable[[Any], None] | None = None
