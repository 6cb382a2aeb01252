"""Noise schedules: the numbers are the schedulers' own; the plot needs the plots extra."""

from __future__ import annotations

import json
import sys

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.config.schedulers import make_scheduler
from sdgen.explain.schedules import ScheduleRequest, schedule_numbers
from sdgen.record.metadata import read_image_metadata
from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG

runner = CliRunner()


def test_the_numbers_are_the_schedulers_own() -> None:
    from diffusers import DDPMScheduler

    request = ScheduleRequest(("ddim", "euler-a", "dpm++2m-karras"), (10, 30)).checked()
    numbers = schedule_numbers(SD15_SCHEDULER_CONFIG, request)
    model = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)  # SD's scaled-linear schedule
    assert np.allclose(numbers["alphas_cumprod"]["scaled-linear"], model.alphas_cumprod.numpy())
    linear = DDPMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    assert np.allclose(numbers["alphas_cumprod"]["linear"], linear.alphas_cumprod.numpy())
    cosine = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    assert np.allclose(numbers["alphas_cumprod"]["cosine"], cosine.alphas_cumprod.numpy())
    assert numbers["model_schedule"] == "scaled-linear"
    assert [(v["scheduler"], v["steps"]) for v in numbers["visits"]] == [
        (name, steps) for name in ("ddim", "euler-a", "dpm++2m-karras") for steps in (10, 30)
    ]
    for visit in numbers["visits"]:
        scheduler = make_scheduler(visit["scheduler"], SD15_SCHEDULER_CONFIG)
        scheduler.set_timesteps(visit["steps"])
        assert visit["timesteps"] == [float(t) for t in scheduler.timesteps]
    assert numbers["visits"][0]["sigmas"] is None  # DDIM has none; Euler and DPM++ with Karras sigmas do
    assert len(numbers["visits"][5]["sigmas"]) == 31


def test_json_needs_no_plotting_library_and_no_download(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["schedule", "--json", "--scheduler", "ddim", "--steps", "4"])
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # its schedule ships with sdgen
    assert numbers["visits"] == [
        {"scheduler": "ddim", "steps": 4, "timesteps": [751.0, 501.0, 251.0, 1.0], "sigmas": None}
    ]


def test_the_plot_is_a_png_that_says_what_it_shows(tmp_path) -> None:
    out = tmp_path / "schedule.png"
    result = runner.invoke(
        app, ["schedule", "--scheduler", "ddim", "--scheduler", "euler", "--steps", "8", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (900, 650)
    _, record = read_image_metadata(out)
    assert record == {
        "picture": "noise schedules",
        "model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "schedulers": ["ddim", "euler"],
        "steps": [8],
    }


def test_a_missing_plotting_extra_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = runner.invoke(app, ["schedule", "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 2
    assert result.stderr == (
        'sdgen: error: Plotting needs matplotlib: pip install "sdgen[plots]" (or pass --json for the numbers).\n'
    )
    assert not (tmp_path / "s.png").exists()


def test_a_models_own_schedule_is_read_from_the_model(tiny_model_dir) -> None:
    result = runner.invoke(
        app, ["schedule", "--json", "-m", str(tiny_model_dir), "--steps", "2", "--scheduler", "ddim"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == str(tiny_model_dir)
