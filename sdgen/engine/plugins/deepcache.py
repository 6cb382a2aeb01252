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
    """A NoisePredictor for one denoising run: whole passes through `inner` on calls 0, N, 2N ..., the
    shallow branch on the calls between. Make a fresh one per run (it counts calls and keeps the features)."""

    def __init__(self, unet: UNet2DConditionModel, interval: int, inner: NoisePredictor | None = None) -> None:
        self.unet = getattr(unet, "_orig_mod", unet)
        compiled = self.unet is not unet
        if compiled:
            log.warning("Note: --cache-interval runs the U-Net uncompiled; --compile does not speed it up.")
        # Under torch.compile the module itself runs: a hook added to a compiled graph would recompile it
        self.inner = unet_predictor(self.unet) if compiled or inner is None else inner
        self.interval = interval
        self.calls = 0
        self.features: torch.Tensor | None = None  # what entered the last up-block resnet, minus the skip
        self.features_guided = False  # kept from a guided call: (2B, ...) [uncond, cond]
        self.last_up = self.unet.up_blocks[-1]
        self.skip_channels = self.unet.conv_in.out_channels  # the skip connection there is conv_in's output

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        stale = self.features is None or (cond.guided and not self.features_guided)
        full = self.calls % self.interval == 0 or stale
        self.calls += 1
        if full:
            return self._full(model_input, t, cond)
        return self._shallow(model_input, t, cond)

    def _full(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        def keep(module, args):  # forward pre-hook: args[0] = cat([deep features, skip]) on channels
            self.features = args[0][:, : -self.skip_channels]

        hook = self.last_up.resnets[-1].register_forward_pre_hook(keep)
        try:
            noise = self.inner(model_input, t, cond)
        finally:
            hook.remove()
        self.features_guided = cond.guided
        return noise

    def _shallow(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        import torch

        unet = self.unet
        features = self.features
        assert features is not None
        if self.features_guided and not cond.guided:  # guidance ended since: keep the conditional half
            features = features[features.shape[0] // 2 :]
        # the same steps as UNet2DConditionModel.forward (SD 1.x/2.x: no class or added time embeddings)
        sample = cond.unet_input(model_input)  # (N, 9, h, w) for a 9-channel inpainting U-Net
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), cond.timestep_cond)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        skip = unet.conv_in(sample)
        if cond.down_block_additional_residuals:  # ControlNet's first residual belongs to conv_in's output
            skip = skip + cond.down_block_additional_residuals[0]
        hidden = self.last_up.resnets[-1](torch.cat([features, skip], dim=1), emb)
        if getattr(self.last_up, "attentions", None):
            added = dict(cond.added_cond_kwargs or {})
            embeds = unet.process_encoder_hidden_states(cond.encoder_hidden_states(), added)  # IP-Adapter's
            attention = self.last_up.attentions[-1]
            kwargs = {"cross_attention_kwargs": cond.cross_attention_kwargs} if cond.cross_attention_kwargs else {}
            hidden = attention(hidden, encoder_hidden_states=embeds, return_dict=False, **kwargs)[0]
        if unet.conv_norm_out is not None:
            hidden = unet.conv_act(unet.conv_norm_out(hidden))
        return unet.conv_out(hidden)


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    interval = run.request.cache_interval
    return DeepCache(run.parts.unet, interval, inner=predictor) if interval > 1 else predictor


def _check(request: Any) -> None:
    check_int("cache_interval", request.cache_interval, 1, MAX_STEPS)


PLUGIN = Plugin("deepcache", options=("cache_interval",), wrap_predictor=_wrap, check=_check)
