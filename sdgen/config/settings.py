"""Settings: where each default comes from.

Layers, lowest first; a later layer overrides an earlier one:

    built-in   the defaults in sdgen/config/options.py, the table of every option
    preset     configs/presets/NAME.toml, or [presets.NAME] in the user config (--preset / SDGEN_PRESET)
    user       the user config file (`sdgen config --path`; SDGEN_CONFIG names another)
    env        SDGEN_<KEY> environment variables, e.g. SDGEN_STEPS=30
    image      --from IMAGE: the values an image was made with
    flag       what was typed on the command line

Keys are the CLI option names with `_` for `-` (steps, guidance_scale, negative_prompt ...): the rows of
sdgen/config/options.py that are `layered`. Only tomllib and the standard library are used here, so
`sdgen --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.config import options
from sdgen.errors import InvalidRequestError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "SDGEN_"
ENV_CONFIG = "SDGEN_CONFIG"  # path of the user config file, overriding the platform's config folder
ENV_PRESET = "SDGEN_PRESET"
ENV_API_AUTH = "SDGEN_API_AUTH"  # sdgen serve's --api-auth: passwords stay out of the process list
ENV_CACHE_DIR = "SDGEN_CACHE_DIR"  # sdgen's cache folder (compiled graphs, model hashes): hardware/speed.py

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Setting:
    """One effective value and the layer it came from (e.g. 'preset fast', 'env SDGEN_STEPS')."""

    value: Any
    source: str


def configs_dir() -> Path:
    """configs/: inside the installed package (wheel) or at the top of a source checkout (editable)."""
    package = Path(__file__).resolve().parent.parent  # sdgen/, above sdgen/config/
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "presets").is_dir():
            return candidate
    raise FileNotFoundError(f"sdgen's configs/presets folder is missing next to {package}; reinstall sdgen.")


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user config file: $SDGEN_CONFIG, else config.toml in the platform's config folder."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG]).expanduser()
    from typer import get_app_dir  # click's: ~/.config/sdgen, ~/Library/Application Support/sdgen, %APPDATA%\sdgen

    return Path(get_app_dir("sdgen")) / "config.toml"


def config_template() -> str:
    """A new user config file: every key it may set, commented out, at its built-in value."""
    import json

    lines = [
        "# sdgen's user config (TOML). Uncomment a line to change that default; flags, SDGEN_* variables and",
        "# --from still win over it (`sdgen config` shows each value and where it came from).",
        "# Presets of your own: a [presets.NAME] table of the same keys, used with --preset NAME.",
        "",
    ]
    for key, option in options.OPTIONS.items():
        if option.layered:
            value = json.dumps(option.default, ensure_ascii=False) if option.default is not None else '""'
            lines.append(f"# {key} = {value}")
    return "\n".join(lines) + "\n"


def preset_names(user: Mapping[str, Any] | None = None) -> list[str]:
    shipped = [path.stem for path in (configs_dir() / "presets").glob("*.toml")]
    return sorted(set(shipped) | set((user or {}).get("presets", {})))


def resolve(
    flags: Mapping[str, Any] | None = None,
    image: Mapping[str, Any] | None = None,
    preset: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Setting]:
    """Merge every layer into the effective settings, each with its source.

    `flags` holds only the options the user typed; `preset` is --preset (else SDGEN_PRESET, else the
    user config's `preset = "..."`). Raises InvalidRequestError naming the file or variable at fault.
    """
    environ = os.environ if environ is None else environ
    user_path = user_config_path(environ)
    user = _read_layer(user_path, f"user config {user_path}", allow_presets=True) if user_path.is_file() else {}
    env = _env_layer(environ)

    preset_source = "--preset"
    if preset is None and environ.get(ENV_PRESET):
        preset, preset_source = environ[ENV_PRESET], ENV_PRESET
    elif preset is None and user.get("preset"):
        preset, preset_source = user["preset"], f"'preset' in {user_path}"

    layers: list[tuple[str, Mapping[str, Any]]] = [("built-in", options.builtin_defaults())]
    if preset:
        device = str((flags or {}).get("device") or env.get("device") or user.get("device") or "auto")
        layers.append((f"preset {preset}", _preset_layer(preset, user, preset_source, device)))
    layers += [
        (f"user config {user_path}", {k: v for k, v in user.items() if k not in ("preset", "presets")}),
        *((f"env {ENV_PREFIX}{key.upper()}", {key: value}) for key, value in env.items()),
        ("image", image or {}),
        ("flag", flags or {}),
    ]
    effective: dict[str, Setting] = {}
    for source, values in layers:
        for key, value in values.items():
            if value is not None:
                effective[key] = Setting(value, source)
    return effective


def values(settings: Mapping[str, Setting]) -> dict[str, Any]:
    return {key: setting.value for key, setting in settings.items()}


def _preset_layer(name: str, user: Mapping[str, Any], given_by: str, device: str = "auto") -> dict[str, Any]:
    if name in user.get("presets", {}):
        return _checked(user["presets"][name], f"[presets.{name}] in the user config")
    if name == "fast":  # the fastest recipe already in the cache, for this machine (sdgen/config/fast_preset.py)
        from sdgen.config.fast_preset import choose_fast, hub_cached, machine_device

        choice = choose_fast(*machine_device(device), hub_cached())
        layer = _read_layer(configs_dir() / "presets" / f"{choice.recipe.preset}.toml", f"preset {name}")
        return layer | ({"decoder": choice.decoder} if choice.decoder else {})
    path = configs_dir() / "presets" / f"{name}.toml"
    if not path.is_file():
        raise InvalidRequestError(
            f"Unknown preset {name!r} (from {given_by}): choose one of {', '.join(preset_names(user))}, "
            "or define [presets." + name + "] in your config file."
        )
    return _read_layer(path, f"preset {name}")


def _read_layer(path: Path, what: str, allow_presets: bool = False) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise InvalidRequestError(f"Invalid TOML in {path}: {error}; fix or remove the file.") from None
    except OSError as error:
        raise InvalidRequestError(f"Cannot read {what} ({path}): {error.strerror or error}.") from None
    extra: dict[str, Any] = {}
    if allow_presets:
        if "preset" in data:
            extra["preset"] = data.pop("preset")
            if not isinstance(extra["preset"], str):
                raise InvalidRequestError(f"Invalid 'preset' in {path}: must be a preset name in quotes.")
        presets = data.pop("presets", {})
        if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
            raise InvalidRequestError(f"Invalid [presets] in {path}: use tables like [presets.mine] with keys.")
        extra["presets"] = presets
    return {**_checked(data, str(path)), **extra}


def _checked(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Reject unknown keys (a typo must not be ignored silently) and values of the wrong type."""
    kinds = options.setting_kinds()
    checked: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key not in kinds:
            raise InvalidRequestError(
                f"Unknown setting {raw_key!r} in {where}: known settings are {', '.join(sorted(kinds))}."
            )
        try:
            checked[key] = as_kind(value, kinds[key])
        except TypeError:
            raise InvalidRequestError(
                f"Invalid {key} = {value!r} in {where}: must be {kind_name(kinds[key])}."
            ) from None
    return checked


def as_kind(value: Any, kind: type) -> Any:
    """A TOML or JSON value as a key's type: a whole number is also a number; any other mismatch (a bool
    for a number included) raises TypeError."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list:  # a repeatable option: one text, or a list of texts
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return list(value)
        raise TypeError(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(value)
    return value


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """SDGEN_<KEY> variables, converted to each key's type; unknown SDGEN_ names are errors."""
    kinds = options.setting_kinds()
    layer: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name in (ENV_CONFIG, ENV_PRESET, ENV_API_AUTH, ENV_CACHE_DIR):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in kinds:
            raise InvalidRequestError(
                f"Unknown environment variable {name}: known ones are {ENV_CONFIG}, {ENV_PRESET}, {ENV_API_AUTH}, "
                f"{ENV_CACHE_DIR} and "
                f"{', '.join(ENV_PREFIX + k.upper() for k in sorted(kinds))}; unset it."
            )
        layer[key] = parse_text(text, kinds[key], name)
    return layer


def parse_text(text: str, kind: type, name: str) -> Any:
    try:
        if kind is bool:
            if text.strip().lower() in _TRUE | _FALSE:
                return text.strip().lower() in _TRUE
            raise ValueError
        if kind is list:  # SDGEN_LORA="a.safetensors:0.5,b.safetensors"; a CSV cell the same
            return [item.strip() for item in text.split(",") if item.strip()]
        return kind(text.strip()) if kind is not str else text
    except ValueError:
        raise InvalidRequestError(f"Invalid {name}={text!r}: must be {kind_name(kind)}.") from None


def kind_name(kind: type) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    return names.get(kind, "text or a list of texts")
