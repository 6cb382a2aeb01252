"""A1111's schedule types: the noise levels (sigmas) a k-diffusion sampler visits, high to low, then 0.

A latent at noise level sigma is x = x0 + sigma * noise (k-diffusion's "VE" view of the model). A1111 wraps
the U-Net as k-diffusion's CompVisDenoiser: the model's 1000 training levels are
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), and a level between two of them maps to a fractional
timestep by interpolating log sigma. Each function here follows A1111 1.10's sd_schedulers.py (and
k-diffusion's get_sigmas_*), from sigma_min = sigma_0 ~ 0.029 to sigma_max = sigma_999 ~ 14.6 for SD 1.x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

# NVIDIA's Align Your Steps levels for SD 1.5 (10 steps), log-linearly stretched to other step counts
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
BETA_ALPHA = BETA_BETA = 0.6  # A1111's beta_dist_alpha / beta_dist_beta defaults


class ModelSigmas:
    """The model's own noise levels and the timestep <-> sigma maps of k-diffusion's DiscreteSchedule."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()  # (1000,), ascending
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fractional timestep of each sigma (log-sigma interpolation, clamped to the table)."""
        import torch

        log_sigma = sigma.float().log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(self.sigmas) - 2)
        high = low + 1
        low_log, high_log = self.log_sigmas[low], self.log_sigmas[high]
        w = ((low_log - log_sigma) / (low_log - high_log)).clamp(0, 1)
        return torch.lerp(low.float(), high.float(), w).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return (torch_lerp(self.log_sigmas[low], self.log_sigmas[high], w)).exp()


def torch_lerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (1 - w) * a + w * b


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.cat([sigmas, sigmas.new_zeros([1])])


def uniform(n: int, model: ModelSigmas) -> torch.Tensor:
    import torch

    return _append_zero(model.t_to_sigma(torch.linspace(len(model.sigmas) - 1, 0, n)))


def karras(n: int, model: ModelSigmas, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): evenly spaced in sigma^(1/rho)."""
    import torch

    ramp = torch.linspace(0, 1, n)
    low, high = model.sigma_min ** (1 / rho), model.sigma_max ** (1 / rho)
    return _append_zero((high + ramp * (low - high)) ** rho)


def exponential(n: int, model: ModelSigmas) -> torch.Tensor:
    """Evenly spaced in log sigma."""
    import torch

    return _append_zero(torch.linspace(math.log(model.sigma_max), math.log(model.sigma_min), n).exp())


def polyexponential(n: int, model: ModelSigmas, rho: float = 1.0) -> torch.Tensor:
    """Log sigma along a polynomial ramp of degree rho (rho 1: exponential)."""
    import torch

    ramp = torch.linspace(1, 0, n) ** rho
    log_min, log_max = math.log(model.sigma_min), math.log(model.sigma_max)
    return _append_zero(torch.exp(ramp * (log_max - log_min) + log_min))


def sgm_uniform(n: int, model: ModelSigmas) -> torch.Tensor:
    """Stability's SGM spacing: n + 1 evenly spaced timesteps, the last one dropped."""
    return _normal(n, model, sgm=True)


def normal(n: int, model: ModelSigmas) -> torch.Tensor:
    """n evenly spaced timesteps from sigma_max's to sigma_min's (ComfyUI's "normal")."""
    return _normal(n, model, sgm=False)


def _normal(n: int, model: ModelSigmas, sgm: bool) -> torch.Tensor:
    import torch

    start = model.sigma_to_t(torch.tensor(model.sigma_max))
    end = model.sigma_to_t(torch.tensor(model.sigma_min))
    timesteps = (
        torch.linspace(float(start), float(end), n + 1)[:-1] if sgm else torch.linspace(float(start), float(end), n)
    )
    return _append_zero(torch.stack([model.t_to_sigma(t) for t in timesteps]))


def kl_optimal(n: int, model: ModelSigmas) -> torch.Tensor:
    """Evenly spaced in arctan(sigma) (Kim et al., 2024); as A1111, the last level is sigma_min, not 0."""
    import torch

    alpha_min, alpha_max = torch.arctan(torch.tensor(model.sigma_min)), torch.arctan(torch.tensor(model.sigma_max))
    step = torch.arange(n + 1) / n
    return torch.tan(step * alpha_min + (1.0 - step) * alpha_max)


def align_your_steps(n: int, model: ModelSigmas) -> torch.Tensor:
    """NVIDIA's 10 optimised SD 1.5 levels, interpolated log-linearly to n levels."""
    import numpy as np
    import torch

    levels = np.array(AYS_SD15)
    if n != len(levels):
        xs, ys = np.linspace(0, 1, len(levels)), np.log(levels[::-1])
        levels = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()
    return _append_zero(torch.tensor(levels, dtype=torch.float32))


def simple(n: int, model: ModelSigmas) -> torch.Tensor:
    """Every (1000 / n)-th of the model's levels from the top (ComfyUI's "simple")."""
    import torch

    stride = len(model.sigmas) / n
    return _append_zero(torch.tensor([float(model.sigmas[-(1 + int(x * stride))]) for x in range(n)]))


def ddim(n: int, model: ModelSigmas) -> torch.Tensor:
    """DDIM's timesteps 1, 1 + k, 1 + 2k, ... as sigmas, high to low."""
    import torch

    stride = max(len(model.sigmas) // n, 1)
    levels = [float(model.sigmas[x]) for x in range(1, len(model.sigmas), stride)]
    return _append_zero(torch.tensor(levels[::-1]))


def beta(n: int, model: ModelSigmas) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(0.6, 0.6) distribution (Lee et al., 2024), linear in sigma."""
    import numpy as np
    import torch
    from scipy import stats

    quantiles = [stats.beta.ppf(x, BETA_ALPHA, BETA_BETA) for x in 1 - np.linspace(0, 1, n)]
    sigma_min, sigma_max = model.sigma_min, model.sigma_max
    return _append_zero(torch.tensor([sigma_min + x * (sigma_max - sigma_min) for x in quantiles], dtype=torch.float32))


SCHEDULES: dict[str, Callable[[int, ModelSigmas], torch.Tensor]] = {
    "uniform": uniform,
    "karras": karras,
    "exponential": exponential,
    "polyexponential": polyexponential,
    "sgm_uniform": sgm_uniform,
    "kl_optimal": kl_optimal,
    "align_your_steps": align_your_steps,
    "simple": simple,
    "normal": normal,
    "ddim": ddim,
    "beta": beta,
}


def schedule_sigmas(schedule: str, steps: int, model: ModelSigmas, discard_next_to_last: bool = False) -> torch.Tensor:
    """The sigmas of `steps` steps; DPM2 and 3M SDE drop the next-to-last level (A1111's
    discard_next_to_last_sigma: one more step is planned, so they still take `steps` steps)."""
    import torch

    if not discard_next_to_last:
        return SCHEDULES[schedule](steps, model)
    sigmas = SCHEDULES[schedule](steps + 1, model)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def karras_between(n: int, sigma_min: float, sigma_max: float, like: torch.Tensor) -> torch.Tensor:
    """Karras levels between two given levels (Restart's restarts), on `like`'s device and dtype."""
    import torch

    ramp = torch.linspace(0, 1, n)
    low, high = sigma_min ** (1 / 7), sigma_max ** (1 / 7)
    return _append_zero((high + ramp * (low - high)) ** 7).to(like.device, like.dtype)
