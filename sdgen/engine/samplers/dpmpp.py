"""DPM-Solver++ (Lu et al., 2022) as k-diffusion writes it, in step generators (see euler.py).

DPM-Solver++ steps in t = -log(sigma): with h = t_next - t, the exact solution of the ODE for a constant
denoised estimate is x_next = (sigma_next / sigma) x - expm1(-h) denoised. The multistep variants (2M, 3M)
correct the estimate with the previous steps' ones; the SDE variants add fresh noise every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdgen.engine.samplers.euler import Noise, Steps, ancestral_step, to_d

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def dpmpp_2s_ancestral(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0) -> Steps:
    """Single-step, second order: a half step in t, then the full step with the midpoint's estimate."""
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2, denoised_2 = yield (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * denoised, _sigma(s)
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def dpmpp_sde(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0, r: float = 0.5) -> Steps:
    """Single-step SDE solver: two ancestral sub-steps per step (2 calls), noise added after each."""
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        sigma_down, sigma_up = ancestral_step(_sigma(t), _sigma(s), eta)
        s_down = _t(sigma_down)
        x_2 = (_sigma(s_down) / _sigma(t)) * x - (t - s_down).expm1() * denoised
        x_2 = x_2 + noise(_sigma(t), _sigma(s)) * sigma_up
        x_2, denoised_2 = yield x_2, _sigma(s)
        sigma_down, sigma_up = ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_down = _t(sigma_down)
        mixed = (1 - 1 / (2 * r)) * denoised + 1 / (2 * r) * denoised_2
        x = (_sigma(t_down) / _sigma(t)) * x - (t - t_down).expm1() * mixed
        x = x + noise(_sigma(t), _sigma(t_next)) * sigma_up
    return x


def dpmpp_2m(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise) -> Steps:
    """Multistep, second order: the estimate extrapolated from this step's and the last one's (1 call)."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old_denoised is not None and sigmas[i + 1] != 0:
            r = (t - _t(sigmas[i - 1])) / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            estimate = denoised
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * estimate
        old_denoised = denoised
    return x


def dpmpp_2m_sde(
    x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0, solver_type: str = "midpoint"
) -> Steps:
    """2M with noise: the ODE step damped by exp(-eta h), the lost variance put back as fresh noise."""
    old_denoised = h_last = None
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised  # the last step lands on the estimate itself
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                slope = (denoised - old_denoised) * (h / h_last)
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * slope
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * slope
            if eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt()
            h_last = h
        old_denoised = denoised
    return x


def dpmpp_2m_sde_heun(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0) -> Steps:
    return (yield from dpmpp_2m_sde(x, sigmas, noise, eta, solver_type="heun"))


def dpmpp_3m_sde(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0) -> Steps:
    """Third-order multistep SDE: the estimate's first and second differences over the last three steps."""
    import torch

    denoised_1 = denoised_2 = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        h = _t(sigmas[i + 1]) - _t(sigmas[i])
        h_eta = h * (eta + 1)
        x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
        phi_2 = h_eta.neg().expm1() / h_eta + 1
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif h_1 is not None:
            x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
        if eta:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x
