"""DPM-Solver (Lu et al., 2022) with a fixed number of model calls: k-diffusion's DPM fast, and Restart
(Xu et al., 2023) as A1111 runs it, in step generators (see euler.py).

DPM fast ignores the schedule's inner levels: it splits [sigma_max, sigma_min] evenly in t = -log(sigma)
into steps of order 3 (3 calls each) with a lower-order tail, so the calls add up to the step count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sdgen.engine.samplers.euler import Noise, Steps, ancestral_step, to_d

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def _solver_step(x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, order: int, eps: torch.Tensor) -> Steps:
    """One DPM-Solver-1, -2 or -3 step from (x, t), whose noise `eps` is known; yields the inner calls."""
    h = t_next - t
    if order == 1:
        return x - _sigma(t_next) * h.expm1() * eps
    r1 = 1 / 2 if order == 2 else 1 / 3
    s1 = t + r1 * h
    u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
    u1, denoised = yield u1, _sigma(s1)
    eps_r1 = (u1 - denoised) / _sigma(s1)
    if order == 2:
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
    r2 = 2 / 3
    s2 = t + r2 * h
    u2 = x - _sigma(s2) * (r2 * h).expm1() * eps
    u2 = u2 - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
    u2, denoised = yield u2, _sigma(s2)
    eps_r2 = (u2 - denoised) / _sigma(s2)
    return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)


def dpm_fast(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise, eta: float = 1.0) -> Steps:
    """k-diffusion's sample_dpm_fast over the schedule's end levels, with A1111's eta (1: ancestral)."""
    import torch

    calls = len(sigmas) - 1
    t_start, t_end = _t(sigmas[0]), _t(sigmas[sigmas > 0].min())
    m = math.floor(calls / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=sigmas.device, dtype=sigmas.dtype)
    orders = [3] * (m - 2) + [2, 1] if calls % 3 == 0 else [3] * (m - 1) + [calls % 3]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_down, sigma_up = t_next, 0.0
        if eta:
            sigma_down, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
            t_down = torch.minimum(t_end, _t(sigma_down))
            sigma_up = (_sigma(t_next) ** 2 - _sigma(t_down) ** 2) ** 0.5
        x, denoised = yield x, _sigma(t)
        x = yield from _solver_step(x, t, t_down, order, (x - denoised) / _sigma(t))
        x = x + sigma_up * noise(_sigma(t), _sigma(t_next))
    return x


def restart(x: torch.Tensor, sigmas: torch.Tensor, noise: Noise) -> Steps:
    """A1111's Restart: Heun steps; from 20 steps on, some of them go back up from sigma ~0.1 to ~2 (fresh
    noise brings the latents there) and down again, once (20+ steps) or twice (36+)."""
    from sdgen.engine.samplers.sigmas import karras_between

    steps = len(sigmas) - 1
    restarts: dict[float, tuple[int, int, float]] = {}
    if steps >= 20:
        restart_steps, times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras_between(steps - restart_steps * times, float(sigmas[-2]), float(sigmas[0]), sigmas)
        restarts = {0.1: (restart_steps + 1, times, 2.0)}
    at = {int((sigmas - key).abs().argmin()): value for key, value in restarts.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at:
            restart_steps, times, restart_max = at[i + 1]
            top = int((sigmas - restart_max).abs().argmin())
            if top < i + 1:
                levels = karras_between(restart_steps, float(sigmas[i + 1]), float(sigmas[top]), sigmas)[:-1]
                pairs += list(zip(levels[:-1], levels[1:], strict=True)) * times
    last = None
    for sigma, sigma_next in pairs:
        if last is not None and last < sigma:  # back up: noise to the higher level
            x = x + noise(last, sigma) * (sigma**2 - last**2) ** 0.5
        x, denoised = yield x, sigma
        d = to_d(x, sigma, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma)
        else:
            x_2, denoised_2 = yield x + d * (sigma_next - sigma), sigma_next
            x = x + (d + to_d(x_2, sigma_next, denoised_2)) / 2 * (sigma_next - sigma)
        last = sigma_next
    return x
