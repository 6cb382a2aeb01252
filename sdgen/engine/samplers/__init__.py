"""sdgen's own versions of A1111's k-diffusion samplers, for the (sampler, schedule type) pairs that no
diffusers scheduler runs: each is a step generator (euler.py, dpmpp.py, dpm_solver.py) over A1111's
schedule (sigmas.py), stepped by the loop through SamplerStepper (stepper.py)."""

from __future__ import annotations

from typing import Any

from sdgen.config.schedulers import AUTOMATIC, BY_NAME, make_scheduler
from sdgen.engine.samplers import dpm_solver, dpmpp, euler
from sdgen.engine.samplers.ddim_cfgpp import DDIMCFGPlusPlus
from sdgen.engine.samplers.stepper import SamplerFn, SamplerStepper

PORTS: dict[str, SamplerFn] = {
    "dpm++2m": dpmpp.dpmpp_2m,
    "dpm++sde": dpmpp.dpmpp_sde,
    "dpm++2m-sde": dpmpp.dpmpp_2m_sde,
    "dpm++2m-sde-heun": dpmpp.dpmpp_2m_sde_heun,
    "dpm++2s-a": dpmpp.dpmpp_2s_ancestral,
    "dpm++3m-sde": dpmpp.dpmpp_3m_sde,
    "euler-a": euler.euler_ancestral,
    "euler": euler.euler,
    "lms": euler.lms,
    "heun": euler.heun,
    "dpm2": euler.dpm_2,
    "dpm2-a": euler.dpm_2_ancestral,
    "dpm-fast": dpm_solver.dpm_fast,
    "restart": dpm_solver.restart,
}


def make_sampler(name: str, schedule: str, model_scheduler_config: dict[str, Any], tcd_eta: float | None = None) -> Any:
    """A fresh scheduler for a resolved (name, schedule) pair (config/schedulers.py's resolve()):
    diffusers' for "automatic", else sdgen's port of the k-diffusion sampler over that schedule. TCD's eta
    (`tcd_eta`) is an argument of each of its steps: the loop passes `step_options` to scheduler.step."""
    if name == "ddim-cfg++":
        return DDIMCFGPlusPlus(model_scheduler_config)
    if schedule == AUTOMATIC:
        scheduler = make_scheduler(name, model_scheduler_config)
        if name == "tcd" and tcd_eta is not None:
            scheduler.step_options = {"eta": tcd_eta}
        return scheduler
    return SamplerStepper(PORTS[name], schedule, model_scheduler_config, BY_NAME[name].discard_next_to_last_sigma)
