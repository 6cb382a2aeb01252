"""k-diffusion, the code A1111 runs, as the reference of sdgen's samplers and schedule types.

k-diffusion's package __init__ imports its training stack (torchvision, kornia, wandb, clean-fid, whose
dctorch pins numpy < 2): only `k_diffusion.sampling` and `k_diffusion.external` are loaded here, from the
installed package's own files, with a stand-in for the one helper they take from `k_diffusion.utils`
(append_dims). Install it with `pip install --no-deps k-diffusion==0.1.1.post1` beside the dev extra
(which brings torchsde and torchdiffeq, the samplers' own imports); the tests skip without it.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest


def _append_dims(x, target_dims):
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def load_kdiffusion() -> tuple[types.ModuleType, types.ModuleType]:
    """(k_diffusion.sampling, k_diffusion.external), or the test skips."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"], sys.modules["k_diffusion.external"]
    found = importlib.util.find_spec("k_diffusion")
    if found is None or not found.submodule_search_locations:
        pytest.skip("k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(found.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = package, utils
    from k_diffusion import external, sampling

    return sampling, external


class CompVisModel:
    """The tiny U-Net shaped as the LDM model A1111 hands k-diffusion's CompVisDenoiser."""

    def __init__(self, unet, alphas_cumprod) -> None:
        self.unet, self.alphas_cumprod = unet, alphas_cumprod

    def apply_model(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]


def cfg_denoiser(denoiser, cond, uncond, scale: float):
    """A1111's CFGDenoiser for one prompt: [cond, uncond] in one call, combined on the denoised latents."""
    import torch

    def model(x, sigma):
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([cond, uncond]))
        denoised_cond, denoised_uncond = out.chunk(2)
        return denoised_uncond + (denoised_cond - denoised_uncond) * scale

    return model
