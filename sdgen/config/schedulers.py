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

# A1111's API names: sampler -> its aliases (k-diffusion's function names), and the schedule types sdgen has.
A1111_ALIASES = {
    "DPM++ 2M": ("k_dpmpp_2m",), "DPM++ 2M SDE": ("k_dpmpp_2m_sde",), "Euler a": ("k_euler_a", "k_euler_ancestral"),
    "Euler": ("k_euler",), "LMS": ("k_lms",), "Heun": ("k_heun",), "DPM2": ("k_dpm_2",), "DPM2 a": ("k_dpm_2_a",),
    "DDIM": ("ddim",), "PLMS": ("plms",), "UniPC": ("unipc",), "DDPM": ("ddpm",), "LCM": ("k_lcm",),
}
A1111_SCHEDULES = {"automatic": "Automatic", "uniform": "Uniform", "karras": "Karras"}
# A1111's "Automatic" schedule of these samplers is Karras (DPM++ 2M SDE's is exponential, which sdgen lacks;
# Karras is the nearest it has).
_A1111_KARRAS_BY_DEFAULT = ("DPM++ 2M", "DPM++ 2M SDE")


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


def a1111_samplers() -> dict[str, dict[str, str]]:
    """A1111 sampler name -> {schedule: sdgen name} for every sampler sdgen has, "automatic" included."""
    table: dict[str, dict[str, str]] = {}
    for name, spec in SCHEDULERS.items():
        schedules = table.setdefault(spec.a1111_sampler, {})
        schedules["karras" if spec.a1111_schedule_type else "uniform"] = name
    for sampler, schedules in table.items():
        default = "karras" if sampler in _A1111_KARRAS_BY_DEFAULT and "karras" in schedules else "uniform"
        schedules["automatic"] = schedules[default]
    return table


def from_a1111(sampler: str, schedule: str | None = None) -> str:
    """sdgen's scheduler for A1111's sampler name (or alias, or old "DPM++ 2M Karras" name, or sdgen's own
    name) and schedule type (None: automatic); InvalidRequestError naming the choices otherwise."""
    key, wanted = sampler.strip().lower(), (schedule or "automatic").strip().lower()
    if key in SCHEDULERS and wanted == "automatic":
        return key
    table = a1111_samplers()
    names = {name.lower(): name for name in table}
    names |= {alias: name for name, aliases in A1111_ALIASES.items() for alias in aliases if name in table}
    if key.endswith(" karras") and key.removesuffix(" karras") in names:  # A1111 before 1.9
        key, wanted = key.removesuffix(" karras"), "karras"
    if key not in names:
        raise InvalidRequestError(
            f"Unknown {NAME} {sampler!r}: choose one of {', '.join(table)} (or sdgen's names, `sdgen schedulers`).",
            "scheduler",
        )
    wanted = {label.lower(): name for name, label in A1111_SCHEDULES.items()}.get(wanted, wanted)
    schedules = table[names[key]]
    if wanted not in schedules:
        raise InvalidRequestError(
            f"Unknown {NAME} {schedule!r} for sampler {names[key]!r}: choose one of "
            f"{', '.join(A1111_SCHEDULES[k] for k in schedules)}.",
            "scheduler",
        )
    return schedules[wanted]
