"""Noise schedules: how much of the signal survives to timestep t (alpha_bar_t; the noise's share is
1 - alpha_bar_t) under the linear, scaled-linear and cosine schedules, and which timesteps (and sigmas) a
scheduler visits for a number of steps. The numbers come from diffusers' own schedulers; the plot needs
matplotlib (`pip install "sdgen[plots]"`)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.config.schedulers import scheduler_spec
from sdgen.engine.request import MAX_STEPS, ModelSpec, OutputSpec
from sdgen.errors import NAME, InvalidRequestError, UsageError

# The three schedules people compare. "linear" is DDPM's (Ho et al. 2020: betas 1e-4 to 0.02); "scaled-linear"
# is Stable Diffusion's (linear in sqrt(beta), with the model's own beta_start and beta_end); "cosine" is
# Nichol & Dhariwal's (2021), which destroys little early and more later.
SCHEDULES = {
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "scaled-linear": {"beta_schedule": "scaled_linear"},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
}


@dataclass(frozen=True)
class ScheduleRequest:
    schedulers: tuple[str, ...] = ("dpm++2m-karras",)
    steps: tuple[int, ...] = (25,)

    def checked(self) -> ScheduleRequest:
        for steps in self.steps:
            if not 1 <= steps <= MAX_STEPS:
                raise InvalidRequestError(f"Invalid {NAME} {steps}: must be from 1 to {MAX_STEPS}.", "steps")
        return ScheduleRequest(tuple(scheduler_spec(name).name for name in self.schedulers), self.steps)


def schedule_numbers(scheduler_config: dict[str, Any], request: ScheduleRequest) -> dict[str, Any]:
    """alpha_bar per schedule (from diffusers' DDPMScheduler) and each scheduler's visited timesteps and
    sigmas (from the scheduler itself, made as a generation makes it)."""
    from diffusers import DDPMScheduler

    from sdgen.config.schedulers import make_scheduler

    curves = {}
    for name, options in SCHEDULES.items():
        schedule = DDPMScheduler.from_config(scheduler_config, **options)
        curves[name] = [float(a) for a in schedule.alphas_cumprod]
    visits = []
    for scheduler_name in request.schedulers:
        for steps in request.steps:
            scheduler = make_scheduler(scheduler_name, scheduler_config)
            scheduler.set_timesteps(steps)
            sigmas = getattr(scheduler, "sigmas", None)
            visits.append(
                {
                    "scheduler": scheduler_name,
                    "steps": steps,
                    "timesteps": [float(t) for t in scheduler.timesteps],
                    "sigmas": [float(s) for s in sigmas] if sigmas is not None else None,
                }
            )
    model_schedule = str(scheduler_config.get("beta_schedule", "scaled_linear")).replace("_", "-")
    return {"model_schedule": model_schedule, "alphas_cumprod": curves, "visits": visits}


def plot(numbers: dict[str, Any], title: str) -> bytes:
    """Two panels: alpha_bar and 1 - alpha_bar against t for each schedule; below, the timesteps each
    scheduler visits, on the same t axis. PNG bytes."""
    plt = pyplot()
    figure, (curves, rug) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1 + 0.3 * len(numbers["visits"])]}
    )
    colours = ("tab:blue", "tab:orange", "tab:green")
    for (name, alphas), colour in zip(numbers["alphas_cumprod"].items(), colours, strict=True):
        model = " (this model)" if name == numbers["model_schedule"] else ""
        t = range(len(alphas))
        curves.plot(t, alphas, color=colour, label=f"{name}{model}: signal, alpha_bar")
        curves.plot(t, [1 - a for a in alphas], color=colour, linestyle="--", label=f"{name}: noise, 1 - alpha_bar")
    curves.set_ylabel("share of the variance")
    curves.set_title(title)
    curves.legend(fontsize="small", loc="center right")
    curves.grid(alpha=0.3)
    for row, visit in enumerate(numbers["visits"]):
        rug.scatter(visit["timesteps"], [row] * len(visit["timesteps"]), marker="|", s=120)
    rug.set_yticks(range(len(numbers["visits"])), [f"{v['scheduler']}, {v['steps']} steps" for v in numbers["visits"]])
    rug.set_ylim(-0.7, len(numbers["visits"]) - 0.3)
    rug.set_xlabel("timestep t (0: the clean image; the loop runs from high t to low)")
    rug.set_title("timesteps the scheduler visits", fontsize="medium")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(
            'Plotting needs matplotlib: pip install "sdgen[plots]" (or pass --json for the numbers).'
        ) from None
    return plt


def run_schedule(
    request: ScheduleRequest, spec: ModelSpec, output: OutputSpec, emit: Callable[[str], None]
) -> Path | None:
    """`sdgen schedule`: the numbers as JSON (--json), or the plot, written where -o says."""
    from sdgen.engine.loader import load_scheduler_config
    from sdgen.pictures.sheets import picture_png
    from sdgen.record.output import picture_target

    request, spec = request.checked(), spec.checked()
    if output.json:
        config, model = load_scheduler_config(spec)
        emit(json.dumps({"model": model, **schedule_numbers(config, request)}))
        return None
    pyplot()  # a missing extra is said before anything else happens
    target = picture_target(output, "{index:05d}-schedule", "schedule")
    config, model = load_scheduler_config(spec)
    numbers = schedule_numbers(config, request)
    png = plot(numbers, f"Noise schedules; {model} uses {numbers['model_schedule']}")
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        record = {
            "picture": "noise schedules",
            "model": model,
            "schedulers": request.schedulers,
            "steps": request.steps,
        }
        data = picture_png(image.convert("RGB"), None, record if output.metadata else None)
    path = target.write(data, overwrite=output.overwrite)
    if path is not None:
        emit(str(path))
    return path
