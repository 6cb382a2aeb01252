"""The table of options: one row makes a settings key, a flag of each command, its help and its mapping."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import pytest
from typer.testing import CliRunner

import sdgen.cli.generate
from sdgen import options
from sdgen.cli import build_app
from sdgen.options import BATCH, GENERATE, MODEL, OUTPUT, REQUEST, Option
from sdgen.request import GenerationRequest, ModelSpec, OutputSpec

runner = CliRunner()
TARGETS = {REQUEST: GenerationRequest, MODEL: ModelSpec, OUTPUT: OutputSpec}


@dataclasses.dataclass(frozen=True)
class SharperRequest(GenerationRequest):
    """The code that uses the throwaway option below: a field of the request."""

    sharpness: float = 0.5


def test_a_new_row_alone_reaches_help_config_env_the_config_file_and_the_request(monkeypatch, tmp_path) -> None:
    row = Option("sharpness", float, 0.5, "How sharp (a throwaway row).", REQUEST)
    monkeypatch.setattr(options, "OPTIONS", MappingProxyType({**options.OPTIONS, "sharpness": row}))
    app = build_app()

    shown = runner.invoke(app, ["generate", "--help"]).stdout
    assert "--sharpness <float>" in shown and "How sharp (a throwaway row)." in shown and "[default: 0.5]" in shown
    assert "--sharpness" in runner.invoke(app, ["batch", "--help"]).stdout

    config = tmp_path / "config.toml"
    config.write_text("sharpness = 0.75\n")
    env = {"SDGEN_CONFIG": str(config)}
    assert json.loads(runner.invoke(app, ["config", "--json"]).stdout)["sharpness"] == {
        "value": 0.5,
        "source": "built-in",
    }
    assert json.loads(runner.invoke(app, ["config", "--json"], env=env).stdout)["sharpness"]["value"] == 0.75
    listed = runner.invoke(app, ["config"], env={**env, "SDGEN_SHARPNESS": "0.9"}).stdout
    assert "sharpness        0.9" in listed and "env SDGEN_SHARPNESS" in listed
    bad = runner.invoke(app, ["config"], env={"SDGEN_SHARPNESS": "very"})
    assert bad.exit_code == 2 and "Invalid SDGEN_SHARPNESS='very': must be a number." in bad.stderr

    made = []
    monkeypatch.setattr(sdgen.cli.generate, "GenerationRequest", SharperRequest)
    monkeypatch.setattr(sdgen.cli.generate, "run_generate", lambda request, *rest, **kw: made.append(request))
    assert runner.invoke(app, ["a fox", "--sharpness", "0.25"]).exit_code == 0
    assert runner.invoke(app, ["a fox"], env=env).exit_code == 0
    assert runner.invoke(app, ["a fox"], env={**env, "SDGEN_SHARPNESS": "0.9"}).exit_code == 0
    assert [request.sharpness for request in made] == [0.25, 0.75, 0.9]


def test_a_row_whose_target_lacks_the_field_is_a_loud_mistake(monkeypatch) -> None:
    row = Option("sharpness", float, 0.5, "No field anywhere.", REQUEST)
    monkeypatch.setattr(options, "OPTIONS", MappingProxyType({**options.OPTIONS, "sharpness": row}))
    with pytest.raises(TypeError, match="option 'sharpness' feeds the request, but GenerationRequest has no field"):
        GenerationRequest.from_settings({"prompt": "a fox", "sharpness": 0.7})


@pytest.mark.parametrize("option", [o for o in options.OPTIONS.values() if o.target in TARGETS], ids=str)
def test_every_row_lands_in_a_field_with_the_same_default(option) -> None:
    fields = {field.name: field for field in dataclasses.fields(TARGETS[option.target])}
    assert option.target_field in fields
    if option.default is not None:
        assert fields[option.target_field].default == option.default


@pytest.mark.parametrize("command", [GENERATE, BATCH])
def test_help_lists_every_row_of_the_command(command) -> None:
    shown = runner.invoke(build_app(), [command, "--help"]).stdout
    for option in options.options_for(command):
        assert option.long_flag in shown, option.key


def test_describe_names_the_flag_and_where_a_value_came_from() -> None:
    from sdgen.errors import InvalidRequestError

    error = InvalidRequestError("Invalid {name} 0: must be at least 1.", "steps")
    assert str(error) == "Invalid steps 0: must be at least 1."
    assert options.describe(error) == "Invalid --steps 0: must be at least 1."
    sources = {"steps": "env SDGEN_STEPS"}
    assert options.describe(error, sources) == "Invalid --steps 0: must be at least 1. (set by env SDGEN_STEPS)"
    assert options.describe(InvalidRequestError("Invalid {name} x.", "batch_name")) == "Invalid --name x."
