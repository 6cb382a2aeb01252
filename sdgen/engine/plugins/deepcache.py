"""DeepCache (Ma et al. 2023, `--cache-interval N`): fewer U-Net FLOPs per step, a slightly different picture.

The U-Net's deep features change slowly from step to step, so every N-th call runs the whole U-Net and
keeps the feature map that enters its last up-block resnet; the N-1 calls between run only the shallow
branch around it: the time embedding, conv_in, that resnet (fed the kept features and the fresh conv_in
output as its skip connection), its attention, and the output convolution. That is the paper's SD1.5
choice (branch 0, uniform interval), as the `deepcache` package's DeepCacheSDHelper does it with its
defaults. Tested against that package in tests/test_stepsavers.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sdgen.config.specs import MAX_STEPS, check_int
from sdgen.engine.denoise import Conditioning, NoisePredictor, unet_predictor
from sdgen.engine.plugins.base import Plugin, Run

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import UNet2DConditionModel

log = logging.getLogger("sdgen")


class DeepCache:
    """A NoisePredictor for one denoising run: whole passes on calls 0, N, 2N ..., the shallow branch on the calls
    between. Make a fresh one per run (it counts calls and keeps the features). `passes` runs the two: the torch
    U-Net's (TorchPasses, around `inner`), or the OpenVINO back end's converted pair (OpenVINOPasses)."""

    def __init__(
        self, unet: UNet2DConditionModel, interval: int, inner: NoisePredictor | None = None, passes: Any = None
    ) -> None:
        self.passes = passes if passes is not None else TorchPasses(unet, inner)
        self.interval = interval
        self.calls = 0
        self.features: torch.Tensor | None = None  # what entered the last up-block resnet, minus the skip
        self.features_guided = False  # kept from a guided call: (2B, ...) [uncond, cond]

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        stale = self.features is None or (cond.guided and not self.features_guided)
        full = self.calls % self.interval == 0 or stale
        self.calls += 1
        if full:
            noise, self.features = self.passes.full(model_input, t, cond)
            self.features_guided = cond.guided
            return noise
        features = self.features
        assert features is not None
        if self.features_guided and not cond.guided:  # guidance ended since: keep the conditional half
            features = features[features.shape[0] // 2 :]
        return self.passes.shallow(model_input, t, cond, features)


class TorchPasses:
    """DeepCache's two passes on the torch U-Net: the whole one through `inner`, keeping the features with a
    forward pre-hook, and the shallow branch."""

    def __init__(self, unet: UNet2DConditionModel, inner: NoisePredictor | None) -> None:
        self.unet = getattr(unet, "_orig_mod", unet)
        compiled = self.unet is not unet
        if compiled:
            log.warning("Note: --cache-interval runs the U-Net uncompiled; --compile does not speed it up.")
        # Under torch.compile the module itself runs: a hook added to a compiled graph would recompile it
        self.inner = unet_predictor(self.unet) if compiled or inner is None else inner

    def full(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> tuple[Any, Any]:
        kept: list[torch.Tensor] = []
        hook = keep_features(self.unet, kept)
        try:
            noise = self.inner(model_input, t, cond)
        finally:
            hook.remove()
        return noise, kept[-1]

    def shallow(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning, features: Any) -> Any:
        added = dict(cond.added_cond_kwargs or {})
        residuals = cond.down_block_additional_residuals
        return shallow_pass(
            self.unet, cond.unet_input(model_input), t, cond.encoder_hidden_states(), features,
            timestep_cond=cond.timestep_cond, first_residual=residuals[0] if residuals else None,
            added=added, cross_attention_kwargs=cond.cross_attention_kwargs,
        )


def keep_features(unet: UNet2DConditionModel, kept: list) -> Any:
    """A forward pre-hook on the last up-block resnet that appends the deep features entering it to `kept`."""
    skip_channels = unet.conv_in.out_channels  # the skip connection there is conv_in's output

    def keep(module, args):  # args[0] = cat([deep features, skip]) on channels
        kept.append(args[0][:, :-skip_channels])

    return unet.up_blocks[-1].resnets[-1].register_forward_pre_hook(keep)


def shallow_pass(
    unet: UNet2DConditionModel, sample: torch.Tensor, t: torch.Tensor, states: torch.Tensor, features: torch.Tensor,
    timestep_cond: Any = None, first_residual: Any = None, added: dict | None = None,
    cross_attention_kwargs: Any = None,
) -> torch.Tensor:
    """The shallow branch: the same steps as UNet2DConditionModel.forward (SD 1.x/2.x: no class or added time
    embeddings) for the time embedding, conv_in, the last up-block's last resnet and attention, and conv_out."""
    import torch

    last_up = unet.up_blocks[-1]
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), timestep_cond)
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    skip = unet.conv_in(sample)  # (N, 9, h, w) in for a 9-channel inpainting U-Net
    if first_residual is not None:  # ControlNet's first residual belongs to conv_in's output
        skip = skip + first_residual
    hidden = last_up.resnets[-1](torch.cat([features, skip], dim=1), emb)
    if getattr(last_up, "attentions", None):
        embeds = unet.process_encoder_hidden_states(states, dict(added or {}))  # IP-Adapter's
        kwargs = {"cross_attention_kwargs": cross_attention_kwargs} if cross_attention_kwargs else {}
        hidden = last_up.attentions[-1](hidden, encoder_hidden_states=embeds, return_dict=False, **kwargs)[0]
    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)


# ---- on the OpenVINO back end: the two passes as two converted U-Nets ------------------------------------


class OpenVINOPasses:
    """DeepCache's whole pass (the noise, and the kept features as a second output: the pre-hook is traced with
    the pass) and its shallow pass (the features as an input) as two converted U-Nets (docs/openvino.md)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.unet = runtime.parts.unet

    def _conversion(self, name: str, forward: Any, inputs: tuple[Any, ...]) -> Any:
        from sdgen.models.openvino import size_factor, traced_part

        runtime = self.runtime
        key = {**runtime.identity(), "loras": runtime.loras(), "in_channels": self.unet.config.in_channels}
        return traced_part(name, forward, inputs, key, size_factor(self.unet.config))

    def _inputs(self, model_input: torch.Tensor, t: Any, cond: Conditioning) -> tuple[torch.Tensor, ...]:
        from sdgen.engine.openvino_parts import ov_timestep
        from sdgen.errors import GenerationError

        extra = sorted(name for name in cond.unet_kwargs() if name != "encoder_hidden_states")
        if extra:
            raise GenerationError(f"--backend openvino: DeepCache's converted passes take no {', '.join(extra)}.")
        return cond.unet_input(model_input), ov_timestep(t), cond.encoder_hidden_states()

    def full(self, model_input: torch.Tensor, t: Any, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        from sdgen.engine.openvino_parts import run_part

        inputs = self._inputs(model_input, t, cond)
        unet = self.unet
        conversion = self._conversion("unet-deepcache", lambda: _full_forward(unet), inputs)
        noise, features = run_part(self.runtime.model(conversion, inputs), *inputs)
        return noise.to(model_input.dtype), features

    def shallow(self, model_input: torch.Tensor, t: Any, cond: Conditioning, features: torch.Tensor) -> torch.Tensor:
        from sdgen.engine.openvino_parts import run_part

        inputs = (*self._inputs(model_input, t, cond), features)
        unet = self.unet
        conversion = self._conversion("unet-shallow", lambda: _shallow_forward(unet), inputs)
        return run_part(self.runtime.model(conversion, inputs), *inputs)[0].to(model_input.dtype)


def _full_forward(unet: Any) -> Any:
    from sdgen.engine.openvino_parts import traceable

    def forward(unet: Any, sample: Any, timestep: Any, encoder_hidden_states: Any) -> Any:
        kept: list[Any] = []
        hook = keep_features(unet, kept)  # traced with the pass: its slice becomes the second output
        try:
            noise = unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        finally:
            hook.remove()
        return noise, kept[-1]

    return traceable(unet, forward)


def _shallow_forward(unet: Any) -> Any:
    from sdgen.engine.openvino_parts import traceable

    return traceable(unet, shallow_pass)  # (unet, sample, timestep, states, features)


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    interval = run.request.cache_interval
    if interval <= 1:
        return predictor
    runtime = getattr(run.parts, "openvino", None)
    if runtime is not None:  # --backend openvino: the two passes as two converted models
        return DeepCache(run.parts.unet, interval, passes=OpenVINOPasses(runtime))
    return DeepCache(run.parts.unet, interval, inner=predictor)


def _check(request: Any) -> None:
    check_int("cache_interval", request.cache_interval, 1, MAX_STEPS)


PLUGIN = Plugin("deepcache", options=("cache_interval",), wrap_predictor=_wrap, check=_check)
