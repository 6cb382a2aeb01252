"""Every scheduler name builds its diffusers class from the model's own config, with its options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sdgen.config.options import describe
from sdgen.config.schedulers import SCHEDULERS, make_scheduler, pipeline_config_fixes, scheduler_spec
from sdgen.errors import InvalidRequestError
from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG

CONFIG = {"_class_name": "PNDMScheduler", **SD15_SCHEDULER_CONFIG}

EXPECTED = {
    "ddim": ("DDIMScheduler", "DDIM", None),
    "pndm": ("PNDMScheduler", "PLMS", None),
    "lms": ("LMSDiscreteScheduler", "LMS", None),
    "lms-karras": ("LMSDiscreteScheduler", "LMS", "Karras"),
    "euler": ("EulerDiscreteScheduler", "Euler", None),
    "euler-a": ("EulerAncestralDiscreteScheduler", "Euler a", None),
    "heun": ("HeunDiscreteScheduler", "Heun", None),
    "dpm2": ("KDPM2DiscreteScheduler", "DPM2", None),
    "dpm2-a": ("KDPM2AncestralDiscreteScheduler", "DPM2 a", None),
    "dpm++2m": ("DPMSolverMultistepScheduler", "DPM++ 2M", None),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler", "DPM++ 2M", "Karras"),
    "dpm++2m-sde": ("DPMSolverMultistepScheduler", "DPM++ 2M SDE", None),
    "dpm++2m-sde-karras": ("DPMSolverMultistepScheduler", "DPM++ 2M SDE", "Karras"),
    "unipc": ("UniPCMultistepScheduler", "UniPC", None),
    "ddpm": ("DDPMScheduler", "DDPM", None),
    "lcm": ("LCMScheduler", "LCM", None),
    "tcd": ("TCDScheduler", "TCD", None),
}


def test_the_list_is_complete() -> None:
    assert list(SCHEDULERS) == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_name_builds_its_class_from_the_model_config(name: str) -> None:
    class_name, a1111, schedule_type = EXPECTED[name]
    scheduler = make_scheduler(name, CONFIG)
    assert type(scheduler).__name__ == class_name
    # the model's own schedule is kept ...
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == 0.00085 and scheduler.config.beta_end == 0.012
    # ... and the name's options are applied
    spec = scheduler_spec(name)
    for key, value in spec.options.items():
        assert scheduler.config[key] == value
    assert spec.a1111_sampler == a1111
    assert spec.a1111_schedule_type == schedule_type


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        scheduler_spec("k_euler")
    message = describe(caught.value)
    assert message.startswith("Unknown --scheduler 'k_euler': choose one of ddim, pndm, lms,")
    assert all(name in message for name in SCHEDULERS)


def test_names_are_case_insensitive() -> None:
    assert scheduler_spec("DPM++2M-Karras").name == "dpm++2m-karras"


def test_pipeline_config_fixes_match_diffusers_constructor() -> None:
    old = {**CONFIG, "steps_offset": 0, "clip_sample": True}
    assert pipeline_config_fixes(old) == {**CONFIG, "steps_offset": 1, "clip_sample": False}
    ddim = make_scheduler("ddim", {k: v for k, v in CONFIG.items() if k != "clip_sample"})
    assert ddim.config.clip_sample is False, "DDIM's own default (True) must be fixed like the pipeline does"


def test_tiny_model_uses_the_published_sd15_scheduler_config() -> None:
    published = json.loads((Path(__file__).parent.parent / "configs/sd15/scheduler/scheduler_config.json").read_text())
    assert {k: v for k, v in published.items() if not k.startswith("_")} == SD15_SCHEDULER_CONFIG


def test_a1111_names_and_schedule_types() -> None:
    from sdgen.config.schedulers import from_a1111, resolve

    assert from_a1111("DPM++ 2M") == "dpm++2m-karras"  # A1111's Automatic for DPM++ 2M is Karras
    assert from_a1111("DPM++ 2M", "Uniform") == "dpm++2m"
    assert from_a1111("DPM++ 2M SDE Karras") == "dpm++2m-sde-karras"  # the name before A1111 1.9
    assert from_a1111("k_euler_a") == "euler-a" and from_a1111("euler-a") == "euler-a"
    assert from_a1111("LMS", "karras") == "lms-karras" and from_a1111("LMS") == "lms"
    # Euler with Karras: no diffusers scheduler is that pair, so sdgen's port of k-diffusion's runs it
    assert resolve("Euler", "Karras") == ("euler", "karras")


# Every A1111 1.10 sampler and what its "Automatic" is (A1111's sd_samplers_kdiffusion.py)
A1111_AUTOMATIC = {
    "DPM++ 2M": ("dpm++2m-karras", "automatic"), "DPM++ SDE": ("dpm++sde", "karras"),
    "DPM++ 2M SDE": ("dpm++2m-sde", "exponential"), "DPM++ 2M SDE Heun": ("dpm++2m-sde-heun", "exponential"),
    "DPM++ 2S a": ("dpm++2s-a", "karras"), "DPM++ 3M SDE": ("dpm++3m-sde", "exponential"),
    "Euler a": ("euler-a", "automatic"), "Euler": ("euler", "automatic"), "LMS": ("lms", "automatic"),
    "Heun": ("heun", "automatic"), "DPM2": ("dpm2", "karras"), "DPM2 a": ("dpm2-a", "karras"),
    "DDIM": ("ddim", "automatic"), "PLMS": ("pndm", "automatic"), "UniPC": ("unipc", "automatic"),
    "LCM": ("lcm", "automatic"), "DDIM CFG++": ("ddim-cfg++", "automatic"), "DPM fast": ("dpm-fast", "uniform"),
    "Restart": ("restart", "karras"),
}


@pytest.mark.parametrize("label", list(A1111_AUTOMATIC))
def test_every_a1111_sampler_resolves_to_a1111s_default_schedule(label: str) -> None:
    from sdgen.config.schedulers import BY_LABEL, a1111_names, resolve

    assert resolve(label) == A1111_AUTOMATIC[label]
    assert resolve(label.upper(), "Automatic") == A1111_AUTOMATIC[label]  # any case
    for alias in BY_LABEL[label].aliases:
        assert resolve(alias) == A1111_AUTOMATIC[label]
    sampler, schedule = a1111_names(*resolve(label))
    assert sampler == label and schedule  # the infotext always names both
    assert resolve(sampler, schedule) == A1111_AUTOMATIC[label], "the infotext's names replay the same run"


def test_every_schedule_type_is_accepted_by_key_label_and_alias() -> None:
    from sdgen.config.schedulers import SCHEDULE_TYPES, a1111_names, resolve, schedule_key

    assert len(SCHEDULE_TYPES) == 12  # Automatic and A1111 1.10's 11
    for key, entry in SCHEDULE_TYPES.items():
        assert schedule_key(key) == schedule_key(entry.label) == schedule_key(entry.label.upper()) == key
        if key != "automatic":
            pair = resolve("DPM++ SDE", entry.label)
            assert pair == ("dpm++sde", key) and a1111_names(*pair) == ("DPM++ SDE", entry.label)
    assert schedule_key("SGMUniform") == "sgm_uniform"


def test_samplers_not_in_sdgen_yet_are_refused_by_name() -> None:
    from sdgen.config.schedulers import resolve

    for label in ("DPM adaptive",):
        with pytest.raises(InvalidRequestError, match=re.escape(f"Sampler '{label}' is not in sdgen yet")):
            resolve(label)


def test_sdgen_names_keep_their_diffusers_scheduler() -> None:
    from sdgen.config.schedulers import resolve

    for name in SCHEDULERS:
        assert resolve(name) == (name, "automatic")
        assert resolve(name, "Automatic") == (name, "automatic")
    assert resolve("dpm++2m", "karras") == ("dpm++2m-karras", "automatic")  # the diffusers scheduler of that pair
    assert resolve("dpm++2m-karras", "Karras") == ("dpm++2m-karras", "automatic")
    assert resolve("dpm++2m", "exponential") == ("dpm++2m", "exponential")


@pytest.mark.parametrize(
    ("scheduler", "schedule", "message"),
    [
        ("dpm++2m-karras", "exponential", "the name says its schedule (karras); use --scheduler dpm++2m --schedule"),
        ("DDIM", "Karras", "Invalid --schedule 'Karras' for sampler 'DDIM': it takes no schedule type"),
        ("Euler", "wavy", "Unknown --schedule 'wavy': choose one of Automatic, Uniform, Karras,"),
        ("k_dpm_4", None, "Unknown --scheduler 'k_dpm_4': choose one of dpm++2m, dpm++sde,"),
    ],
)
def test_bad_pairs_name_the_value_and_the_fix(scheduler: str, schedule: str | None, message: str) -> None:
    from sdgen.config.schedulers import resolve

    with pytest.raises(InvalidRequestError) as caught:
        resolve(scheduler, schedule)
    assert message in describe(caught.value)
