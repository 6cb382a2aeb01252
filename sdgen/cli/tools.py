"""The small commands: schedulers, info, config, doctor, convert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sdgen.cli.common import CliErrors, setup_logging
from sdgen.config import options, settings
from sdgen.config.schedulers import SCHEDULERS
from sdgen.errors import EXIT_FAILURE, EXIT_USAGE, SdgenError
from sdgen.record.metadata import parse_a1111, read_image_metadata
from sdgen.runs import doctor


def schedulers_command() -> None:
    """sdgen's diffusers schedulers, then A1111's samplers (sdgen name, reference, Automatic's schedule) and
    schedule types."""
    from sdgen.config.schedulers import A1111_SAMPLERS, DEFAULT_SCHEDULER, SCHEDULE_TYPES

    for spec in SCHEDULERS.values():
        choices = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
        a1111 = spec.a1111_sampler + (f" ({spec.a1111_schedule_type})" if spec.a1111_schedule_type else "")
        default = "  (default)" if spec.name == DEFAULT_SCHEDULER else ""
        typer.echo(f"{spec.name:20} {spec.class_name}{'(' + choices + ')' if choices else ''}  [{a1111}]{default}")
    typer.echo("\nA1111 samplers (--scheduler NAME, any schedule type with --schedule):")
    for sampler in A1111_SAMPLERS:
        automatic = f"Automatic = {sampler.default_schedule}" if sampler.default_schedule else "no schedule type"
        runs = "" if sampler.port or sampler.name in SCHEDULERS else "  (not in sdgen yet)"
        typer.echo(f"  {sampler.label:18} {sampler.name:17} {sampler.reference}; {automatic}{runs}")
    typer.echo("\nSchedule types (--schedule KEY or A1111's label): " + ", ".join(
        f"{s.key} ({s.label})" for s in SCHEDULE_TYPES.values()))


def info_command(
    images: Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)],
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per image on stdout.")] = False,
) -> None:
    setup_logging(False)
    failed = False
    for path in images:
        try:
            parameters, record = read_image_metadata(path)
        except SdgenError as error:
            typer.echo(f"sdgen: error: {error}", err=True)
            failed = True
            continue
        if json_lines:
            parsed = parse_a1111(parameters) if parameters else None
            line = {"path": str(path), "parameters": parameters, "a1111": parsed, "sdgen": record}
            typer.echo(json.dumps(line, ensure_ascii=False))
            continue
        typer.echo(f"{path}:")
        if parameters is None and record is None:
            typer.echo("  (no generation parameters)")
        for line in (parameters or "").splitlines():
            typer.echo(f"  {line}")
        if record is not None:
            typer.echo("  sdgen:")
            for key, value in record.items():
                typer.echo(f"    {key}: {value}")
    if failed:
        raise typer.Exit(EXIT_USAGE)


def config_command(
    preset: Annotated[str | None, typer.Option("--preset", help=options.OPTIONS["preset"].help)] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object: key -> {value, source}.")] = False,
    path: Annotated[bool, typer.Option("--path", help="Print the user config file's path and exit.")] = False,
    edit: Annotated[
        bool, typer.Option("--edit", help="Open the user config file in $VISUAL or $EDITOR (made first, with "
                           "every key commented out, if it is not there yet).")
    ] = False,
) -> None:
    with CliErrors():
        config_path = settings.user_config_path()
        if path:
            typer.echo(str(config_path))
            return
        if edit:
            _edit(config_path)
            return
        effective = settings.resolve(preset=preset)
        if json_lines:
            record = {key: {"value": s.value, "source": s.source} for key, s in effective.items()}
            typer.echo(json.dumps(record, ensure_ascii=False))
            return
        exists = "" if config_path.is_file() else " (not created yet)"
        typer.echo(f"# user config: {config_path}{exists}")
        typer.echo(f"# presets: {', '.join(settings.preset_names())}")
        for key in options.setting_kinds():
            if key in effective:
                value, source = json.dumps(effective[key].value, ensure_ascii=False), effective[key].source
            else:
                value, source = f"({options.OPTIONS[key].empty or 'unset'})", "built-in"
            typer.echo(f"{key:16} {value:40} {source}")


def _edit(config_path: Path) -> None:
    import os
    import shlex
    import subprocess

    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(settings.config_template(), encoding="utf-8")
        typer.echo(f"sdgen: made {config_path}", err=True)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or ("notepad" if os.name == "nt" else "vi")
    try:
        code = subprocess.call([*shlex.split(editor), str(config_path)])
    except OSError as error:
        raise SdgenError(f"Cannot start the editor {editor!r} ({error.strerror}); set EDITOR, or edit "
                         f"{config_path} yourself.") from None
    if code:
        raise typer.Exit(code)


def doctor_command(
    device: Annotated[str, typer.Option("--device", help="Device to test: auto, cpu, mps, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="dtype to test: auto, float32, float16, bfloat16.")] = "auto",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Also check this model (folder, file or cached Hub id): "
                                 "found, loaded, one step run.")
    ] = None,
) -> None:
    setup_logging(False, quiet=True)
    with CliErrors():
        try:
            for line in doctor.report(device, dtype, model):
                typer.echo(line)
        except doctor.DoctorFailed:
            raise typer.Exit(EXIT_FAILURE) from None




def convert_command(
    source: Annotated[Path, typer.Argument(help="A pickled checkpoint: .ckpt, .pt, .pth or .bin.", show_default=False)],
    target: Annotated[Path, typer.Argument(help="The .safetensors file to write.", show_default=False)],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace TARGET if it exists.")] = False,
) -> None:
    setup_logging(False)
    with CliErrors() as errors:
        from sdgen.runs.convert import convert_to_safetensors

        errors.sources = {}
        count = convert_to_safetensors(str(source), str(target), overwrite)
        typer.echo(str(target))
        typer.echo(f"sdgen: {count} tensors written; use {target} as --model.", err=True)


HELP = {
    "schedulers": "List scheduler names, their diffusers classes and A1111 names.\n\n"
    '\b\nExamples:\n  sdgen schedulers\n  sdgen "a fox" --scheduler euler-a',
    "info": "Show how images were made: sdgen's record and A1111 parameters (PNG, JPEG, WebP).\n\n"
    "\b\nExamples:\n  sdgen info outputs/*.png\n  sdgen info photo.webp --json | jq .a1111.fields.Seed",
    "config": "Show the effective settings and where each came from.\n\n"
    "Precedence, lowest first: built-in < preset < user config file < SDGEN_* environment variables < "
    "--from IMAGE < flags.\n\n"
    '\b\nExamples:\n  sdgen config\n  sdgen config --preset fast --json\n  sdgen config --edit',
    "convert": "Convert a pickled checkpoint (.ckpt, .pt) to .safetensors, once, safely.\n\n"
    "A pickle can run code when loaded; convert reads it with torch.load(weights_only=True), which takes tensors "
    "and plain data only and refuses anything else, and writes the tensors (an A1111 checkpoint's state_dict) "
    "as .safetensors, which sdgen loads without --allow-unsafe-pickle.\n\n"
    "\b\nExamples:\n  sdgen convert model.ckpt model.safetensors\n  sdgen \"a fox\" --model model.safetensors",
    "doctor": "Check the setup: versions, devices, the model cache, and a tiny model run end to end.\n\n"
    "\b\nExamples:\n  sdgen doctor\n  sdgen doctor --device cuda --dtype float16\n"
    "  sdgen doctor --model ~/models/model.safetensors",
}


def register(app: typer.Typer) -> None:
    for name, func in (
        ("schedulers", schedulers_command),
        ("info", info_command),
        ("config", config_command),
        ("doctor", doctor_command),
        ("convert", convert_command),
    ):
        app.command(name, help=HELP[name])(func)
