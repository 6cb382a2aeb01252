"""Every scheduler name builds its diffusers class from the model's own config, with its options."""

from __future__ import annotations

import json
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
    from sdgen.config.schedulers import a1111_samplers, from_a1111

    assert from_a1111("DPM++ 2M") == "dpm++2m-karras"  # A1111's Automatic for DPM++ 2M is Karras
    assert from_a1111("DPM++ 2M", "Uniform") == "dpm++2m"
    assert from_a1111("DPM++ 2M SDE Karras") == "dpm++2m-sde-karras"  # the name before A1111 1.9
    assert from_a1111("k_euler_a") == "euler-a" and from_a1111("euler-a") == "euler-a"
    assert from_a1111("LMS", "karras") == "lms-karras" and from_a1111("LMS") == "lms"
    assert set(a1111_samplers()["Euler"]) == {"uniform", "automatic"}
    with pytest.raises(InvalidRequestError, match="choose one of Uniform, Automatic"):
        from_a1111("Euler", "Karras")
