"""The plug-in registry: a throwaway saver registered from a test runs, is recorded and is replayed; the
built-in savers declare the options they own."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import sdgen.cli.generate
from sdgen.cli.app import build_app
from sdgen.config import options
from sdgen.config.options import REQUEST, Option
from sdgen.engine import plugins
from sdgen.engine.denoise import NoisePredictor
from sdgen.engine.plugins import Plugin, Run
from sdgen.engine.request import GenerationRequest

from .test_pipeline import pixels


@dataclasses.dataclass(frozen=True)
class DampedRequest(GenerationRequest):
    """The throwaway saver's field on the request (the code that uses its row)."""

    damping: float = 0.0


class Damped:
    """The throwaway saver's predictor: the noise scaled down by (1 - damping), its calls counted."""

    calls: list[float] = []

    def __init__(self, inner: NoisePredictor, damping: float) -> None:
        self.inner, self.damping = inner, damping

    def __call__(self, model_input, t, cond):
        Damped.calls.append(self.damping)
        return self.inner(model_input, t, cond) * (1 - self.damping)


def damp(inner: NoisePredictor, run: Run) -> NoisePredictor:
    damping = run.request.damping  # type: ignore[attr-defined]
    return Damped(inner, damping) if damping else inner


@pytest.fixture
def throwaway_saver(monkeypatch):
    """One row in the option table, one field on the request, one plug-in registered."""
    row = Option(
        "damping", float, 0.0, "Scale the predicted noise down (a throwaway saver).", REQUEST, shapes_picture=True
    )
    monkeypatch.setattr(options, "OPTIONS", MappingProxyType({**options.OPTIONS, "damping": row}))
    monkeypatch.setattr(sdgen.cli.generate, "GenerationRequest", DampedRequest)
    monkeypatch.setattr(plugins, "PLUGINS", dict(plugins.PLUGINS))
    plugins.register(Plugin("damping", options=("damping",), wrap_predictor=damp))
    Damped.calls.clear()
    return build_app()


def test_a_throwaway_saver_runs_is_recorded_and_replayed(throwaway_saver, tiny_model_dir, tmp_path) -> None:
    runner = CliRunner()
    args = ["--model", str(tiny_model_dir), "-W", "64", "-H", "64", "--steps", "3", "--device", "cpu", "--seed", "5"]
    first = tmp_path / "damped.png"
    result = runner.invoke(throwaway_saver, ["a fox", *args, "--damping", "0.25", "-o", str(first)])
    assert result.exit_code == 0, result.output
    assert Damped.calls == [0.25] * 3, "it wraps the predictor of every step"
    record = json.loads(Image.open(first).text["sdgen"])
    assert record["damping"] == 0.25

    again = tmp_path / "again.png"
    result = runner.invoke(throwaway_saver, ["--from", str(first), "-o", str(again)])
    assert result.exit_code == 0, result.output
    assert Damped.calls == [0.25] * 6, "--from replays it"
    assert np.array_equal(pixels(Image.open(first)), pixels(Image.open(again)))

    plain = tmp_path / "plain.png"
    assert runner.invoke(throwaway_saver, ["a fox", *args, "-o", str(plain)]).exit_code == 0
    assert len(Damped.calls) == 6, "off by default"
    assert json.loads(Image.open(plain).text["sdgen"])["damping"] == 0.0
    assert not np.array_equal(pixels(Image.open(first)), pixels(Image.open(plain)))


def test_the_built_in_savers_own_their_rows() -> None:
    owned = {name: plugin.options for name, plugin in plugins.PLUGINS.items()}
    assert owned == {
        "deepcache": ("cache_interval",),
        "controlnet": ("control", "control_dir"),
        "t2i_adapter": ("adapter", "adapter_dir"),
        "ip_adapter": ("ip_adapter", "ip_image", "ip_scale", "ip_encoder"),
        "composable": (),  # AND in a prompt switches it on: no option of its own
        "cfg_end": ("cfg_end",),
        "decoder": ("decoder",),
        "token_merging": ("token_merging",),
        "freeu": ("freeu",),
        "pag": ("pag_scale",),
        "sag": ("sag_scale",),
        "guidance_rescale": ("guidance_rescale",),
    }
    assert all(key in options.OPTIONS for key in plugins.option_keys())


def test_a_plugin_must_own_rows_of_the_table_and_a_name_of_its_own(monkeypatch) -> None:
    monkeypatch.setattr(plugins, "PLUGINS", dict(plugins.PLUGINS))
    with pytest.raises(ValueError, match="not rows of sdgen/config/options.py: \\['sharpness'\\]"):
        plugins.register(Plugin("sharpen", options=("sharpness",)))
    with pytest.raises(ValueError, match="'deepcache' is registered already"):
        plugins.register(Plugin("deepcache", options=()))
