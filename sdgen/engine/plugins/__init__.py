"""Step savers and guidance modifiers as plug-ins: one registry, one module each.

A plug-in declares the option keys it owns (rows of sdgen/config/options.py, read from the request or the model
spec), what it does when the model loads, how it wraps the noise predictor of a run, how many guided
steps it leaves and which module decodes the final latents. What it records follows from its options'
rows (their record columns in the option table, as for every option), and `--from` replays them through
the table.

    deepcache.py      --cache-interval: the shallow branch of the U-Net between whole passes
    composable.py     AND in a prompt: every part in one U-Net call, combined as A1111 does (no option)
    controlnet.py     --control: ControlNets' residuals from control images, passed to the U-Net call
    t2i_adapter.py    --adapter: T2I-Adapters' features from control images, added inside the down blocks
    ip_adapter.py     --ip-adapter: pictures as a prompt, image embeddings through the adapter's attention
    cfg_end.py        --cfg-end: guidance for the first part of the steps only
    token_merging.py  --token-merging: tomesd's patch of the U-Net's attention
    decoder.py        --decoder: a tiny autoencoder decodes the final image
    freeu.py          --freeu: FreeU's scaled backbone and skip features, switched on for each run
    pag.py            --pag-scale: perturbed-attention guidance (one more U-Net pass a step)
    sag.py            --sag-scale: self-attention guidance (one more U-Net pass a step)
    guidance_rescale.py  --guidance-rescale: the guided prediction rescaled to the conditional one's spread

Guidance modifiers (docs/guidance.md) change each step's combined prediction through the loop's `guide`
(in registry order, each seeing the one before) and switch the model's behaviour on for a run only.

A new saver is its row in options.py, its field on the request or model spec, its module here, one line
in `PLUGINS` below, and its test.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from sdgen.config import options
from sdgen.engine.denoise import Guide, Guided, NoisePredictor, StepEnd, StepEndHook, unet_predictor
from sdgen.engine.plugins import (
    cfg_end,
    composable,
    controlnet,
    decoder,
    deepcache,
    freeu,
    guidance_rescale,
    ip_adapter,
    pag,
    sag,
    t2i_adapter,
    token_merging,
)
from sdgen.engine.plugins.base import Plugin, Run

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import GenerationRequest, ModelSpec

__all__ = ["PLUGINS", "Plugin", "Run", "register"]

# Registry order is wrapping order: the first wraps the U-Net call itself (DeepCache must sit right on it);
# ControlNet and T2I-Adapter sit between them (neither is on with DeepCache), so that AND's parts each get their
# own residuals; AND's parts are combined right above it, so that every later wrapper sees [unconditional,
# conditional] (IP-Adapter's image embeddings are made for that batch, and AND's parts get their rows of them).
# Guidance modifiers apply in this order too: PAG, SAG, then the rescale (diffusers rescales after PAG).
PLUGINS: dict[str, Plugin] = {
    plugin.name: plugin
    for plugin in (
        deepcache.PLUGIN, controlnet.PLUGIN, t2i_adapter.PLUGIN, composable.PLUGIN, ip_adapter.PLUGIN, cfg_end.PLUGIN,
        decoder.PLUGIN, token_merging.PLUGIN, freeu.PLUGIN, pag.PLUGIN, sag.PLUGIN, guidance_rescale.PLUGIN,
    )
}


def register(plugin: Plugin) -> Plugin:
    """Add a plug-in after the built-in ones (its options must be rows of the option table)."""
    if plugin.name in PLUGINS:
        raise ValueError(f"a plug-in named {plugin.name!r} is registered already")
    unknown = [key for key in plugin.options if key not in options.OPTIONS]
    if unknown:
        raise ValueError(
            f"plug-in {plugin.name!r} owns options that are not rows of sdgen/config/options.py: {unknown}"
        )
    PLUGINS[plugin.name] = plugin
    return plugin


def check_options(holder: Any, target: str) -> None:
    """Each plug-in's own check of the options that `holder` (the request, or the model spec: `target`) holds."""
    for plugin in PLUGINS.values():
        if plugin.check is not None and any(options.OPTIONS[key].target == target for key in plugin.options):
            plugin.check(holder)


def option_keys() -> tuple[str, ...]:
    """Every option a plug-in owns (each a row of the option table, which records and replays it)."""
    return tuple(key for plugin in PLUGINS.values() for key in plugin.options)


# ---- load time -----------------------------------------------------------------------------------


def load_plugins(parts: StableDiffusionParts, spec: ModelSpec) -> None:
    """Each plug-in's load step; what it keeps goes to parts.plugins (its options reach the record through
    the table, from parts.spec)."""
    for plugin in PLUGINS.values():
        kept = plugin.load(parts, spec) if plugin.load is not None else None
        if kept is not None:
            parts.plugins[plugin.name] = kept


def final_decoder(parts: StableDiffusionParts) -> Any:
    """The module that decodes the final latents: a plug-in's (--decoder), else the VAE."""
    for name, kept in parts.plugins.items():
        plugin = PLUGINS.get(name)
        if plugin is not None and plugin.decoder is not None:
            return plugin.decoder(kept)
    return parts.vae


# ---- one run ---------------------------------------------------------------------------------------


def noise_predictor(run: Run) -> NoisePredictor:
    """The run's noise predictor: the U-Net call wrapped by each plug-in in registry order (fresh per run:
    DeepCache counts calls and keeps features)."""
    if getattr(run.parts, "openvino", None) is not None:  # --backend openvino: the converted U-Net
        from sdgen.engine.openvino_unet import unet_predictor as openvino_predictor

        predictor = openvino_predictor(run.parts.openvino)
    else:
        predictor = unet_predictor(run.parts.unet)
    for plugin in PLUGINS.values():
        if plugin.wrap_predictor is not None:
            predictor = plugin.wrap_predictor(predictor, run)
    return predictor


def guidance_end(run: Run) -> StepEndHook | None:
    """A step-end hook that turns guidance off after the fewest guided steps any plug-in leaves (None: all)."""
    total = len(run.timesteps)
    guided = min((plugin.guided_steps(run) for plugin in PLUGINS.values() if plugin.guided_steps), default=total)
    if guided >= total:
        return None

    def end_guidance(step: StepEnd) -> StepEnd | None:
        if step.index + 1 != guided:
            return None
        return StepEnd(step.index, step.total, step.timestep, step.latents, step.conditioning.conditional())

    return end_guidance


@contextmanager
def run_guidance(run: Run) -> Iterator[Guide | None]:
    """Each plug-in's `in_run` for one denoising run (the model switched back afterwards, also on errors),
    their guides chained in registry order; None when no plug-in changes the combined prediction."""
    with ExitStack() as stack:
        guides = [stack.enter_context(p.in_run(run)) for p in PLUGINS.values() if p.in_run is not None]
        present = [guide for guide in guides if guide is not None]
        if len(present) <= 1:
            yield present[0] if present else None
            return

        def chained(step: Guided) -> torch.Tensor:
            import dataclasses

            for guide in present:
                step = dataclasses.replace(step, noise=guide(step))
            return step.noise

        yield chained


# ---- checks and records -----------------------------------------------------------------------------


def a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """The A1111/Forge infotext fields of the plug-ins a request uses."""
    return [field for p in PLUGINS.values() if p.a1111_fields is not None for field in p.a1111_fields(request)]


def values_from_a1111(fields: Mapping[str, str]) -> dict[str, Any]:
    """The settings that A1111/Forge infotext fields of the plug-ins give (ValueError for unreadable ones)."""
    values: dict[str, Any] = {}
    for plugin in PLUGINS.values():
        if plugin.from_a1111 is not None:
            values |= plugin.from_a1111(fields)
    return values


def values_from_scripts(scripts: Mapping[str, Any]) -> dict[str, Any]:
    """The settings an A1111 client's `alwayson_scripts` ({title: {"args": [...]}}) gives the plug-ins; titles
    are matched in lower case by their start (Forge adds "(SD 1.x, SD 2.x, SDXL)" to some)."""
    values: dict[str, Any] = {}
    for title, script in scripts.items():
        args = script.get("args", []) if isinstance(script, Mapping) else []
        for plugin in PLUGINS.values():
            if plugin.from_script is not None and str(title).lower().startswith(plugin.scripts):
                values |= plugin.from_script(list(args) if isinstance(args, (list, tuple)) else [])
    return values
