"""Step savers: opt-in ways to spend fewer U-Net FLOPs per image, each equal to its published reference.

They change the picture slightly (docs/settings.md, "Step savers"); none is on unless asked for.

- DeepCache (Ma et al. 2023, `--cache-interval N`): the U-Net's deep features change slowly from step to
  step, so every N-th step runs the whole U-Net and keeps the feature map that enters its last up-block
  resnet; the N-1 steps between run only the shallow branch around it: the time embedding, conv_in, that
  resnet (fed the kept features and the fresh conv_in output as its skip connection), its attention, and
  the output convolution. That is the paper's SD1.5 choice (branch 0, uniform interval), as the
  `deepcache` package's DeepCacheSDHelper does it with its defaults.
- Guidance cut-off (`--cfg-end F`): classifier-free guidance doubles the batch; late steps refine detail
  that guidance barely moves, so after the first part of the steps only the conditional half runs
  (diffusers' SDCFGCutoffCallback, counted the same way).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sdgen.denoise import NoisePredictor

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import UNet2DConditionModel

log = logging.getLogger("sdgen")


def guided_steps(total: int, cfg_end: float) -> int:
    """How many of the first steps use guidance. SDCFGCutoffCallback drops it after step index
    int(total * F), so that step is still guided: int(total * F) + 1 steps, all of them when F is 1."""
    if cfg_end >= 1.0:
        return total
    return min(total, int(total * cfg_end) + 1)


class DeepCache:
    """A NoisePredictor for one denoising run: full U-Net passes on calls 0, N, 2N ..., the shallow branch
    on the calls between. Make a fresh one per run (it counts calls and keeps the features)."""

    def __init__(self, unet: UNet2DConditionModel, interval: int) -> None:
        # Under torch.compile the module itself runs: a hook added to a compiled graph would recompile it
        self.unet = getattr(unet, "_orig_mod", unet)
        if self.unet is not unet:
            log.warning("Note: --cache-interval runs the U-Net uncompiled; --compile does not speed it up.")
        self.interval = interval
        self.calls = 0
        self.features: torch.Tensor | None = None  # what entered the last up-block resnet, minus the skip
        self.last_up = self.unet.up_blocks[-1]
        self.skip_channels = self.unet.conv_in.out_channels  # the skip connection there is conv_in's output

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        full = self.calls % self.interval == 0 or self.features is None
        self.calls += 1
        if full:
            return self._full(latents, t, embeds)
        return self._shallow(latents, t, embeds)

    def _full(self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        def keep(module, args):  # forward pre-hook: args[0] = cat([deep features, skip]) on channels
            self.features = args[0][:, : -self.skip_channels]

        hook = self.last_up.resnets[-1].register_forward_pre_hook(keep)
        try:
            return self.unet(latents, t, encoder_hidden_states=embeds, return_dict=False)[0]
        finally:
            hook.remove()

    def _shallow(self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        import torch

        unet = self.unet
        features = self.features
        assert features is not None
        if features.shape[0] != latents.shape[0]:  # guidance ended since: keep the conditional half
            features = features[-latents.shape[0] :]
        # the same steps as UNet2DConditionModel.forward (SD 1.x/2.x: no class or added embeddings)
        emb = unet.time_embedding(unet.get_time_embed(sample=latents, timestep=t), None)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        hidden = torch.cat([features, unet.conv_in(latents)], dim=1)
        hidden = self.last_up.resnets[-1](hidden, emb)
        if getattr(self.last_up, "attentions", None):
            hidden = self.last_up.attentions[-1](hidden, encoder_hidden_states=embeds, return_dict=False)[0]
        if unet.conv_norm_out is not None:
            hidden = unet.conv_act(unet.conv_norm_out(hidden))
        return unet.conv_out(hidden)


def unet_predictor(unet: UNet2DConditionModel, cache_interval: int = 1) -> NoisePredictor:
    """The U-Net as a NoisePredictor: plain, or with DeepCache when cache_interval > 1."""
    if cache_interval > 1:
        return DeepCache(unet, cache_interval)

    def predict_noise(latent_model_input: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return unet(latent_model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]

    return predict_noise
