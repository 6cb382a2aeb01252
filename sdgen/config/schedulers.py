"""Scheduler names: the CLI's short name -> diffusers class and options -> A1111's name for metadata; and
A1111's samplers and schedule types, and how each maps to one of sdgen's.

Every diffusers scheduler is built `Cls.from_config(model's scheduler config, **options)`, exactly as
diffusers documents for swapping schedulers. A1111 1.10 offers k-diffusion's samplers (each run over a
schedule type: the noise levels it visits) and timestep samplers (DDIM, PLMS, UniPC, LCM) that take none.
sdgen runs an A1111 (sampler, schedule type) pair as:
- one of its diffusers schedulers where one is that pair: `dpm++2m-karras` is A1111's DPM++ 2M with
  Karras, `euler` its Euler (with diffusers' spacing of the model's config);
- else its own port of the k-diffusion sampler over A1111's schedule (sdgen/engine/samplers/): sdgen's
  sampler name with a schedule, e.g. `--scheduler dpm++sde --schedule karras`.
`resolve()` turns what a user, a batch line, an infotext or an A1111 client says into that pair.
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
        SchedulerSpec("tcd", "TCDScheduler", "TCD"),  # its eta (gamma): --tcd-eta, given to each step
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


# A1111's samplers and schedule types (A1111 1.10's sd_samplers_kdiffusion.py and sd_schedulers.py) --------
AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Schedule:
    key: str  # sdgen's spelling (--schedule), A1111's API name
    label: str  # A1111's "Schedule type:" text
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False  # A1111's flag: the schedule reads the model's own noise levels


SCHEDULE_TYPES: dict[str, Schedule] = {
    s.key: s
    for s in [
        Schedule(AUTOMATIC, "Automatic"),
        Schedule("uniform", "Uniform", need_inner_model=True),
        Schedule("karras", "Karras", default_rho=7.0),
        Schedule("exponential", "Exponential"),
        Schedule("polyexponential", "Polyexponential", default_rho=1.0),
        Schedule("sgm_uniform", "SGM Uniform", ("SGMUniform",), need_inner_model=True),
        Schedule("kl_optimal", "KL Optimal"),
        Schedule("align_your_steps", "Align Your Steps"),
        Schedule("simple", "Simple", need_inner_model=True),
        Schedule("normal", "Normal", need_inner_model=True),
        Schedule("ddim", "DDIM", need_inner_model=True),
        Schedule("beta", "Beta", need_inner_model=True),
    ]
}


@dataclass(frozen=True)
class A1111Sampler:
    label: str  # A1111's name ("Sampler:" text)
    name: str  # sdgen's --scheduler spelling
    aliases: tuple[str, ...]  # A1111's API aliases (k-diffusion's function names)
    reference: str  # the function sdgen's version is tested against
    default_schedule: str | None  # A1111's "Automatic"; None: a timestep sampler, no schedule type
    discard_next_to_last_sigma: bool = False  # A1111's option for DPM2 and DPM++ 3M SDE
    port: bool = True  # sdgen has its own version (sdgen/engine/samplers) to run over any schedule type


_K = "k_diffusion.sampling."
A1111_SAMPLERS: tuple[A1111Sampler, ...] = (
    A1111Sampler("DPM++ 2M", "dpm++2m", ("k_dpmpp_2m",), _K + "sample_dpmpp_2m", "karras"),
    A1111Sampler("DPM++ SDE", "dpm++sde", ("k_dpmpp_sde",), _K + "sample_dpmpp_sde", "karras"),
    A1111Sampler("DPM++ 2M SDE", "dpm++2m-sde", ("k_dpmpp_2m_sde",), _K + "sample_dpmpp_2m_sde", "exponential"),
    A1111Sampler(
        "DPM++ 2M SDE Heun",
        "dpm++2m-sde-heun",
        ("k_dpmpp_2m_sde_heun",),
        _K + "sample_dpmpp_2m_sde(solver_type='heun')",
        "exponential",
    ),
    A1111Sampler("DPM++ 2S a", "dpm++2s-a", ("k_dpmpp_2s_a",), _K + "sample_dpmpp_2s_ancestral", "karras"),
    A1111Sampler("DPM++ 3M SDE", "dpm++3m-sde", ("k_dpmpp_3m_sde",), _K + "sample_dpmpp_3m_sde", "exponential", True),
    A1111Sampler("Euler a", "euler-a", ("k_euler_a", "k_euler_ancestral"), _K + "sample_euler_ancestral", "uniform"),
    A1111Sampler("Euler", "euler", ("k_euler",), _K + "sample_euler", "uniform"),
    A1111Sampler("LMS", "lms", ("k_lms",), _K + "sample_lms", "uniform"),
    A1111Sampler("Heun", "heun", ("k_heun",), _K + "sample_heun", "uniform"),
    A1111Sampler("DPM2", "dpm2", ("k_dpm_2",), _K + "sample_dpm_2", "karras", True),
    A1111Sampler("DPM2 a", "dpm2-a", ("k_dpm_2_a",), _K + "sample_dpm_2_ancestral", "karras", True),
    A1111Sampler("DPM fast", "dpm-fast", ("k_dpm_fast",), _K + "sample_dpm_fast(eta=1)", "uniform"),
    A1111Sampler("DPM adaptive", "dpm-adaptive", ("k_dpm_ad",), _K + "sample_dpm_adaptive", None, port=False),
    A1111Sampler("Restart", "restart", ("restart",), "A1111 sd_samplers_extra.restart_sampler", "karras"),
    A1111Sampler("DDIM", "ddim", ("ddim",), "diffusers DDIMScheduler", None, port=False),
    A1111Sampler("DDIM CFG++", "ddim-cfg++", ("ddim_cfgpp",), "A1111 sd_samplers_timesteps_impl.ddim_cfgpp", None),
    A1111Sampler("PLMS", "pndm", ("plms",), "diffusers PNDMScheduler", None, port=False),
    A1111Sampler("UniPC", "unipc", ("unipc",), "diffusers UniPCMultistepScheduler", None, port=False),
    A1111Sampler("LCM", "lcm", ("k_lcm",), "diffusers LCMScheduler", None, port=False),
    A1111Sampler("DDPM", "ddpm", ("ddpm",), "diffusers DDPMScheduler", None, port=False),  # sdgen's, not A1111's
    A1111Sampler("TCD", "tcd", ("tcd",), "diffusers TCDScheduler", None, port=False),  # sdgen's, not A1111's
)
BY_NAME = {sampler.name: sampler for sampler in A1111_SAMPLERS}
BY_LABEL = {sampler.label: sampler for sampler in A1111_SAMPLERS}


def schedule_key(schedule: str | None) -> str:
    """sdgen's key of a schedule type given as a key, A1111 label or alias (any case)."""
    wanted = (schedule or AUTOMATIC).strip().lower()
    for key, entry in SCHEDULE_TYPES.items():
        if wanted in {key, entry.label.lower(), *(alias.lower() for alias in entry.aliases)}:
            return key
    labels = ", ".join(entry.label for entry in SCHEDULE_TYPES.values())
    raise InvalidRequestError(
        f"Unknown {NAME} {schedule!r}: choose one of {labels} (or their keys: {', '.join(SCHEDULE_TYPES)}).",
        "schedule",
    )


def _sampler(scheduler: str) -> tuple[A1111Sampler, str | None]:
    """The A1111 sampler a name means, and the schedule type the name itself says (Karras names)."""
    key = scheduler.strip().lower()
    if key in SCHEDULERS:
        spec = SCHEDULERS[key]
        return BY_LABEL[spec.a1111_sampler], spec.a1111_schedule_type and spec.a1111_schedule_type.lower()
    names: dict[str, A1111Sampler] = {}
    for sampler in A1111_SAMPLERS:
        for spelling in (sampler.name, sampler.label, *sampler.aliases):
            names.setdefault(spelling.lower(), sampler)
    if key in names:
        return names[key], None
    for suffix, schedule in ((" karras", "karras"), (" exponential", "exponential")):  # A1111 before 1.9
        if key.endswith(suffix) and key.removesuffix(suffix) in names:
            return names[key.removesuffix(suffix)], schedule
    raise InvalidRequestError(
        f"Unknown {NAME} {scheduler!r}: choose one of {', '.join(BY_NAME)}, A1111's names "
        f"({', '.join(BY_LABEL)}) or sdgen's diffusers names (see `sdgen schedulers`).",
        "scheduler",
    )


def resolve(scheduler: str, schedule: str | None = AUTOMATIC) -> tuple[str, str]:
    """(sdgen scheduler name, schedule key) for a sampler name (sdgen's, A1111's or an alias) and a schedule
    type. An sdgen diffusers name with "automatic" is that scheduler as it always was; an A1111 name with
    "automatic" gets A1111's default schedule for that sampler. The pair is "automatic" exactly when one
    of sdgen's diffusers schedulers runs it."""
    wanted = schedule_key(schedule)
    if scheduler.strip() in SCHEDULERS and wanted == AUTOMATIC:  # sdgen's own name, as listed: as it always was
        return scheduler.strip(), AUTOMATIC
    sampler, named = _sampler(scheduler)
    if named and wanted not in (AUTOMATIC, named):
        raise InvalidRequestError(
            f"Invalid {NAME} {scheduler!r} with schedule type {schedule!r}: the name says its schedule "
            f"({named}); use --scheduler {sampler.name} --schedule {wanted}.",
            "scheduler",
        )
    wanted = named or (sampler.default_schedule if wanted == AUTOMATIC else wanted) or AUTOMATIC
    if sampler.default_schedule is None:
        if wanted != AUTOMATIC:
            raise InvalidRequestError(
                f"Invalid {NAME} {schedule!r} for sampler {sampler.label!r}: it takes no schedule type "
                "(A1111's timestep samplers); leave it Automatic.",
                "schedule",
            )
        return _runnable(sampler), AUTOMATIC
    diffusers_name = _diffusers_name(sampler, wanted)
    if diffusers_name is not None:
        return diffusers_name, AUTOMATIC
    if not sampler.port:
        raise InvalidRequestError(
            f"Sampler {sampler.label!r} with schedule type {SCHEDULE_TYPES[wanted].label!r} is not in sdgen yet; "
            f"choose another (see `sdgen schedulers`).",
            "scheduler",
        )
    return sampler.name, wanted


def resolve_infotext(sampler: str, schedule: str | None) -> tuple[str, str]:
    """resolve() for an infotext's "Sampler:" and "Schedule type:"; with no schedule type (A1111 before 1.9)
    a k-diffusion sampler ran its plain (uniform) schedule, unless its name says Karras."""
    if schedule is None:
        entry, named = _sampler(sampler)
        schedule = AUTOMATIC if named or entry.default_schedule is None else "uniform"
    return resolve(sampler, schedule)


# sdgen's diffusers schedulers that make A1111's picture of their (sampler, schedule type) pair: equal to
# k-diffusion's sampler within 1/255 (tests/test_samplers.py). DPM2 (A1111 drops its next-to-last sigma),
# DPM++ 2M and 2M SDE with Uniform (diffusers spaces their timesteps its own way) are not.
SAME_AS_A1111 = ("euler", "euler-a", "heun", "lms", "lms-karras", "dpm++2m-karras", "dpm++2m-sde-karras")


def _diffusers_name(sampler: A1111Sampler, schedule: str) -> str | None:
    """sdgen's diffusers scheduler for A1111's (sampler, schedule type), where one makes the same picture."""
    for name in SAME_AS_A1111:
        spec = SCHEDULERS[name]
        if spec.a1111_sampler == sampler.label and (spec.a1111_schedule_type or "uniform").lower() == schedule:
            return name
    return None


def _runnable(sampler: A1111Sampler) -> str:
    if sampler.name in SCHEDULERS or sampler.port:
        return sampler.name
    raise InvalidRequestError(
        f"Sampler {sampler.label!r} is not in sdgen yet; choose another (see `sdgen schedulers`).", "scheduler"
    )


def a1111_names(scheduler: str, schedule: str) -> tuple[str, str]:
    """A1111's (Sampler, Schedule type) texts of a resolved pair: always both."""
    sampler, named = _sampler(scheduler)
    if schedule != AUTOMATIC:
        return sampler.label, SCHEDULE_TYPES[schedule].label
    if sampler.default_schedule is None:
        return sampler.label, SCHEDULE_TYPES[AUTOMATIC].label
    return sampler.label, SCHEDULE_TYPES[named or "uniform"].label


def runner(scheduler: str, schedule: str) -> tuple[str, dict]:
    """What the record names as the code that ran a resolved pair: a diffusers class and its options, or
    sdgen's port and its schedule."""
    if scheduler in SCHEDULERS and schedule == AUTOMATIC:
        spec = SCHEDULERS[scheduler]
        return spec.class_name, spec.options
    sampler = BY_NAME[scheduler]
    options = {"schedule": schedule, "discard_next_to_last_sigma": sampler.discard_next_to_last_sigma}
    return f"sdgen.engine.samplers:{scheduler}", options


def from_a1111(sampler: str, schedule: str | None = None) -> str:
    """sdgen's scheduler name for an A1111 sampler name and schedule type (see resolve(), which also gives
    the schedule)."""
    return resolve(sampler, schedule)[0]
