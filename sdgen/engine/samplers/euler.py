"""k-diffusion's first samplers (Karras et al., 2022), written as step generators.

A sampler here is a generator: it yields (x, sigma), a point where it needs the model's estimate of the
clean latents, and is sent back (x, denoised) (x again, as a step-end hook may have changed it). It returns
the final latents. `noise(sigma, sigma_next)` draws fresh Gaussian noise (ancestral samplers).
Every step moves along the probability-flow ODE dx/dsigma = (x - denoised) / sigma.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

Steps = Generator["tuple[torch.Tensor, torch.Tensor]", "tuple[torch.Tensor, torch.Tensor]", "torch.Tensor"]
Noise = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE's derivative at (x, sigma): the noise the model sees in x."""
    return (x - denoised) / sigma


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0) -> tuple:
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add sigma_up of fresh noise,
    so the latents land at sigma_next."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


def euler(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise) -> Steps:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def euler_ancestral(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0) -> Steps:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def heun(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise) -> Steps:
    """Euler's step, then the derivative at its end averaged with the one at its start (2 calls a step)."""
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        d, dt = to_d(x, sigmas[i], denoised), sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_2, denoised_2 = yield x + d * dt, sigmas[i + 1]
        x = x + (d + to_d(x_2, sigmas[i + 1], denoised_2)) / 2 * dt
    return x


def _midpoint(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    return sigma.log().lerp(sigma_next.log(), 0.5).exp()


def dpm_2(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise) -> Steps:
    """DPM-Solver-2: the derivative at the (log-sigma) midpoint carries the whole step."""
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        d = to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        sigma_mid = _midpoint(sigmas[i], sigmas[i + 1])
        x_2, denoised_2 = yield x + d * (sigma_mid - sigmas[i]), sigma_mid
        x = x + to_d(x_2, sigma_mid, denoised_2) * (sigmas[i + 1] - sigmas[i])
    return x


def dpm_2_ancestral(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0) -> Steps:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
            continue
        sigma_mid = _midpoint(sigmas[i], sigma_down)
        x_2, denoised_2 = yield x + d * (sigma_mid - sigmas[i]), sigma_mid
        x = x + to_d(x_2, sigma_mid, denoised_2) * (sigma_down - sigmas[i])
        x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def lms_coefficient(order: int, sigmas: list[float], i: int, j: int) -> float:
    """The weight of the derivative j steps back: its Lagrange basis polynomial integrated over the step."""
    from scipy import integrate

    def basis(tau: float) -> float:
        product = 1.0
        for k in range(order):
            if k != j:
                product *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        return product

    return integrate.quad(basis, sigmas[i], sigmas[i + 1], epsrel=1e-4)[0]


def lms(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, order: int = 4) -> Steps:
    """Linear multistep: the last `order` derivatives, extrapolated over the step (1 call a step)."""
    levels = sigmas.detach().cpu().numpy()
    derivatives: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        derivatives = [*derivatives, to_d(x, sigmas[i], denoised)][-order:]
        current = min(i + 1, order)
        weights = [lms_coefficient(current, levels, i, j) for j in range(current)]
        x = x + sum(weight * d for weight, d in zip(weights, reversed(derivatives), strict=False))
    return x
