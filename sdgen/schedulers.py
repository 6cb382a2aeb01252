"""Scheduler names: the CLI's short name -> diffusers class and options -> A1111's name for metadata.

Every scheduler is built `Cls.from_config(model's scheduler config, **options)`, exactly as diffusers
documents for swapping schedulers: sdgen writes no sampler math of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import SchedulerMixin


@dataclass(frozen=True)
class SchedulerSpec:
    name: str  # sdgen's name, e.g. "dpm++2m-karras"
    class_name: str  # diffusers class, e.g. "DPMSolverMultistepScheduler"
    a1111_sampler: str  # A1111's "Sampler:" value, e.g. "DPM++ 2M"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def a1111_schedule_type(self) -> str | None:
        """A1111's "Schedule type:" value: set only where it differs from the sampler's default."""
        return "Karras" if self.options.get("use_karras_sigmas") else None


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

SCHEDULERS: dict[str, SchedulerSpec] = {
    spec.name: spec
    for spec in [
        SchedulerSpec("ddim", "DDIMScheduler", "DDIM"),
        SchedulerSpec("pndm", "PNDMScheduler", "PLMS"),
        SchedulerSpec("lms", "LMSDiscreteScheduler", "LMS"),
        SchedulerSpec("lms-karras", "LMSDiscreteScheduler", "LMS", _KARRAS),
        SchedulerSpec("euler", "EulerDiscreteScheduler", "Euler"),
        SchedulerSpec("euler-a", "EulerAncestralDiscreteScheduler", "Euler a"),
        SchedulerSpec("heun", "HeunDiscreteScheduler", "Heun"),
        SchedulerSpec("dpm2", "KDPM2DiscreteScheduler", "DPM2"),
        SchedulerSpec("dpm2-a", "KDPM2AncestralDiscreteScheduler", "DPM2 a"),
        SchedulerSpec("dpm++2m", "DPMSolverMultistepScheduler", "DPM++ 2M"),
        SchedulerSpec("dpm++2m-karras", "DPMSolverMultistepScheduler", "DPM++ 2M", _KARRAS),
        SchedulerSpec("dpm++2m-sde", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", _SDE),
        SchedulerSpec("dpm++2m-sde-karras", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", {**_SDE, **_KARRAS}),
        SchedulerSpec("unipc", "UniPCMultistepScheduler", "UniPC"),
        SchedulerSpec("ddpm", "DDPMScheduler", "DDPM"),
        SchedulerSpec("lcm", "LCMScheduler", "LCM"),
    ]
}

DEFAULT_SCHEDULER = "dpm++2m-karras"


def scheduler_spec(name: str) -> SchedulerSpec:
    """Look a name up (case-insensitive); an unknown name lists the valid ones."""
    spec = SCHEDULERS.get(name.strip().lower())
    if spec is None:
        raise InvalidRequestError(
            f"Unknown {NAME} {name!r}: choose one of {', '.join(SCHEDULERS)} (see `sdgen schedulers`).", "scheduler"
        )
    return spec


def pipeline_config_fixes(config: dict[str, Any]) -> dict[str, Any]:
    """Apply the two fixes diffusers' StableDiffusionPipeline makes to old SD1.x scheduler configs.

    Its constructor sets `steps_offset=1` and `clip_sample=False` when a config says otherwise; doing the
    same keeps sdgen's timesteps identical to the reference pipeline's.
    """
    fixed = dict(config)
    if fixed.get("steps_offset", 1) != 1:
        fixed["steps_offset"] = 1
    if fixed.get("clip_sample", False) is True:
        fixed["clip_sample"] = False
    return fixed


def make_scheduler(name: str, model_scheduler_config: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler (they hold per-run state) from the model's own config plus the name's options."""
    import diffusers

    spec = scheduler_spec(name)
    cls = getattr(diffusers, spec.class_name)
    scheduler = cls.from_config(model_scheduler_config, **spec.options)
    # The fixes are checked after from_config so they also cover the new class's own defaults
    # (DDIM's clip_sample=True), as the pipeline's constructor sees them.
    current = dict(scheduler.config)
    fixes = {key: value for key, value in pipeline_config_fixes(current).items() if current.get(key) != value}
    if fixes:
        scheduler = cls.from_config(model_scheduler_config, **spec.options, **fixes)
    return scheduler
