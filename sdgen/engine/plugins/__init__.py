"""Step savers and guidance modifiers as plug-ins: one registry, one module each.

A plug-in declares the option keys it owns (rows of sdgen/config/options.py, read from the request or the model
spec), what it does when the model loads, how it wraps the noise predictor of a run, how many guided
steps it leaves and which module decodes the final latents. What it records follows from its options'
rows (their record columns in the option table, as for every option), and `--from` replays them through
the table.

    deepcache.py      --cache-interval: the shallow branch of the U-Net between whole passes
    cfg_end.py        --cfg-end: guidance for the first part of the steps only
    token_merging.py  --token-merging: tomesd's patch of the U-Net's attention
    decoder.py        --decoder: a tiny autoencoder decodes the final image

A new saver is its row in options.py, its field on the request or model spec, its module here, one line
in `PLUGINS` below, and its test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdgen.config import options
from sdgen.engine.denoise import NoisePredictor, StepEnd, StepEndHook, unet_predictor
from sdgen.engine.plugins import cfg_end, decoder, deepcache, token_merging
from sdgen.engine.plugins.base import Plugin, Run

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import ModelSpec

__all__ = ["PLUGINS", "Plugin", "Run", "register"]

# Registry order is wrapping order: the first wraps the U-Net call itself (DeepCache must sit right on it).
PLUGINS: dict[str, Plugin] = {
    plugin.name: plugin for plugin in (deepcache.PLUGIN, cfg_end.PLUGIN, decoder.PLUGIN, token_merging.PLUGIN)
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
