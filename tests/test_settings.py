"""Settings layers: built-in < preset < user config < SDGEN_* env < --from image < flags, each with its source."""

from __future__ import annotations

import dataclasses

import pytest

from sdgen.config import options, settings
from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import InvalidRequestError


@pytest.fixture
def user_config(tmp_path):
    """Write a user config file and return the environment that points sdgen at it."""
    path = tmp_path / "config.toml"

    def write(text: str, **env: str) -> dict[str, str]:
        path.write_text(text)
        return {settings.ENV_CONFIG: str(path), **env}

    return write


def test_builtin_defaults_are_the_library_defaults() -> None:
    builtin = options.builtin_defaults()
    request = {f.name: f.default for f in dataclasses.fields(GenerationRequest)}
    spec = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    assert builtin["steps"] == request["num_inference_steps"]
    for key in ("guidance_scale", "negative_prompt", "scheduler", "num_images", "batch_size", "strength"):
        assert builtin[key] == request[key], key
    for key in ("model", "device", "dtype", "rng", "offline"):
        assert builtin[key] == spec[key], key
    assert set(builtin) <= set(options.setting_kinds())


def test_each_layer_overrides_the_one_below(user_config) -> None:
    env = user_config("steps = 30\nscheduler = 'euler'\n")

    def steps(**layers):
        resolved = settings.resolve(**layers)
        return resolved["steps"].value, resolved["steps"].source

    assert steps(environ={}) == (25, "built-in")
    assert steps(environ={}, preset="draft") == (8, "preset draft")
    assert steps(environ=env, preset="draft")[0] == 30
    assert steps(environ=env, preset="draft")[1].startswith("user config ")
    assert steps(environ={**env, "SDGEN_STEPS": "31"}, preset="draft") == (31, "env SDGEN_STEPS")
    assert steps(environ={**env, "SDGEN_STEPS": "31"}, image={"steps": 32}) == (32, "image")
    assert steps(environ={**env, "SDGEN_STEPS": "31"}, image={"steps": 32}, flags={"steps": 33}) == (33, "flag")
    # a layer only overrides the keys it sets
    assert settings.resolve(environ={**env, "SDGEN_STEPS": "31"})["scheduler"].value == "euler"


def test_where_the_preset_name_comes_from(user_config) -> None:
    env = user_config("preset = 'quality'\n")
    assert settings.resolve(environ=env)["steps"].source == "preset quality"
    assert settings.resolve(environ={**env, "SDGEN_PRESET": "draft"})["steps"].source == "preset draft"
    assert settings.resolve(environ={**env, "SDGEN_PRESET": "draft"}, preset="lcm")["steps"].source == "preset lcm"


def test_user_defined_preset(user_config) -> None:
    env = user_config("[presets.tiny]\nwidth = 64\nheight = 64\nguidance-scale = 3\n")
    resolved = settings.resolve(environ=env, preset="tiny")
    assert (resolved["width"].value, resolved["guidance_scale"].value) == (64, 3.0)
    assert "tiny" in settings.preset_names({"presets": {"tiny": {}}})


def test_environment_values_are_typed() -> None:
    environ = {"SDGEN_OFFLINE": "yes", "SDGEN_GUIDANCE_SCALE": "5", "SDGEN_NEGATIVE_PROMPT": " blurry"}
    resolved = settings.values(settings.resolve(environ=environ))
    assert resolved["offline"] is True and resolved["guidance_scale"] == 5.0
    assert resolved["negative_prompt"] == " blurry"  # text is taken as it is


@pytest.mark.parametrize(
    "text, env, message",
    [
        ("stpes = 3\n", {}, "Unknown setting 'stpes' in "),
        ("steps = '3'\n", {}, "Invalid steps = '3' in "),
        ("steps = true\n", {}, "Invalid steps = True in "),
        ("steps = \n", {}, "Invalid TOML in "),
        ("", {"SDGEN_STPES": "3"}, "Unknown environment variable SDGEN_STPES: known ones are SDGEN_CONFIG"),
        ("", {"SDGEN_STEPS": "many"}, "Invalid SDGEN_STEPS='many': must be a whole number."),
        ("", {"SDGEN_OFFLINE": "maybe"}, "Invalid SDGEN_OFFLINE='maybe': must be true or false."),
        ("", {"SDGEN_PRESET": "warp"}, "Unknown preset 'warp' (from SDGEN_PRESET): choose one of draft, fast"),
        ("preset = 'warp'\n", {}, "Unknown preset 'warp' (from 'preset' in "),
        ("[presets.mine]\nsize = 3\n", {"SDGEN_PRESET": "mine"}, "Unknown setting 'size' in [presets.mine]"),
    ],
)
def test_bad_settings_name_the_place_and_the_fix(user_config, text, env, message) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        settings.resolve(environ=user_config(text, **env))
    assert message in str(caught.value)


def test_shipped_presets_make_valid_requests_with_their_own_values(monkeypatch) -> None:
    from sdgen.config import fast_preset

    tomllib = settings.tomllib  # tomli on Python 3.10
    only_sd15 = {(fast_preset.DEFAULT_MODEL, fast_preset.UNET_FILES[0])}  # --preset fast: then its own file
    monkeypatch.setattr(fast_preset, "hub_cached", lambda: lambda repo, file: (repo, file) in only_sd15)

    for name in settings.preset_names():
        values = settings.values(settings.resolve(environ={}, preset=name, flags={"prompt": "a fox"}))
        request = check_request(GenerationRequest.from_settings(values))
        spec = ModelSpec.from_settings(values).checked()
        written = tomllib.loads((settings.configs_dir() / "presets" / f"{name}.toml").read_text())
        assert written, name
        for key, value in written.items():
            option = options.OPTIONS[key]
            target = request if option.target == "request" else spec
            expected = tuple(value) if option.kind is list else value  # list options are tuples there
            assert getattr(target, option.target_field) == expected, (name, key)


def test_user_config_path_follows_the_platform(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    assert settings.user_config_path({}) == tmp_path / "sdgen" / "config.toml"
    assert settings.user_config_path({settings.ENV_CONFIG: "~/my.toml"}).name == "my.toml"


def test_python_3_10_gets_a_toml_reader() -> None:
    """Python 3.10 has no tomllib: sdgen falls back to tomli, which must then be a dependency."""
    project = settings.tomllib.loads((settings.configs_dir().parent / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    assert "tomli>=1.1; python_version < '3.11'" in project["dependencies"]
