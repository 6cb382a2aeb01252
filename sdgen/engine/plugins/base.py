"""What a plug-in declares (sdgen/engine/plugins/__init__.py keeps the registry), and what several share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Guide, NoisePredictor, unet_predictor

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
    # --- guidance modifiers ---
    # around each denoising run: switch the model's behaviour on and off again (FreeU, attention processors);
    # what it yields (a Guide, or None) changes each step's combined prediction
    in_run: Callable[[Run], AbstractContextManager[Guide | None]] | None = None
    # A1111's or Forge's infotext fields for a request, and the settings read back from such fields
    a1111_fields: Callable[[GenerationRequest], list[tuple[str, object]]] | None = None
    from_a1111: Callable[[Mapping[str, str]], dict[str, Any]] | None = None
    # the A1111/Forge scripts (alwayson_scripts titles, lower case, a prefix) whose args give its settings
    scripts: tuple[str, ...] = ()
    from_script: Callable[[Sequence[Any]], dict[str, Any]] | None = None


log = logging.getLogger("sdgen")


def plain_unet(unet: Any) -> Any:
    """The U-Net module itself, under torch.compile's wrapper."""
    return getattr(unet, "_orig_mod", unet)


def weights_device(unet: Any) -> Any:
    """Where a ControlNet's or an adapter's weights go: the U-Net's device, or the CPU where the U-Net is an empty
    module on torch's meta device (--backend openvino with a warm cache: its weights never load)."""
    return "cpu" if unet.device.type == "meta" else unet.device


def kept_model(parts: Any, kind: str, source: str, load: Callable[[Any], Any]) -> Any:
    """The model at `source`, loaded once per loaded SD model (kept in parts.plugins[kind]): `load(unet)` gets the
    plain U-Net, whose device, dtype and config a ControlNet or an adapter follows."""
    kept: dict[str, Any] = parts.plugins.setdefault(kind, {})
    if source not in kept:
        kept[source] = load(plain_unet(parts.unet))
    return kept[source]


def uncompiled(predictor: NoisePredictor, run: Run, flag: str) -> NoisePredictor:
    """The U-Net called uncompiled for a plug-in that changes the module during the run (a compiled graph
    would not see the change): with --compile, a note and the plain module; else `predictor` as it is."""
    unet = plain_unet(run.parts.unet)
    if unet is run.parts.unet:
        return predictor
    log.warning("Note: %s runs the U-Net uncompiled; --compile does not speed it up.", flag)
    return unet_predictor(unet)
