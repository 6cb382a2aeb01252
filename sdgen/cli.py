"""The command line: a thin Typer layer that parses, builds a request and calls one library function.

`sdgen PROMPT ...` generates (sdgen.run.run_generate); `sdgen batch FILE` runs a prompts file
(sdgen.batch.run.run_batch); `schedulers`, `info`, `config` and `doctor` sit beside them. The options of
`generate` and `batch` are made from the table in sdgen/options.py. Heavy libraries (torch, diffusers)
are imported only inside the library functions that need them, so `sdgen --help` is instant.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sdgen import __version__, doctor, interrupts, options, settings
from sdgen.batch.input import detect_format
from sdgen.batch.run import BatchOptions, exit_code, run_batch
from sdgen.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, SdgenError, UsageError
from sdgen.interrupts import Interrupted
from sdgen.metadata import parse_a1111, read_image_metadata, replay_values
from sdgen.options import BATCH, GENERATE, RUN, Option
from sdgen.request import GenerationRequest, ModelSpec, OutputSpec
from sdgen.run import run_generate
from sdgen.schedulers import SCHEDULERS

log = logging.getLogger("sdgen")

APP_HELP = (
    "Text-to-image with Stable Diffusion 1.x, from the terminal.\n\n"
    "\b\nExamples:\n"
    '  sdgen "a cute kitten" --steps 48\n'
    '  sdgen "a fox in the snow" -n 4 --seed 42 -o fox.png\n'
    '  sdgen "oil painting" --init-image photo.jpg --strength 0.6\n'
    "  sdgen schedulers"
)
GENERATE_HELP = (
    "Generate images from a prompt (the default command: `sdgen PROMPT`).\n\n"
    "\b\nExamples:\n"
    '  sdgen "a cute kitten" --steps 48\n'
    '  sdgen "a fox" -n 4 --seed 42 -o foxes/\n'
    '  sdgen "a fox" -o - | display -\n'
    '  sdgen "a fox" --json | jq -r .path\n'
    "  sdgen --from outputs/00000-42-a-fox.png --steps 40"
)
BATCH_HELP = (
    "Generate from a prompts file or stdin: one model load, stable names and seeds, a manifest, resume.\n\n"
    "FILE is plain text (one prompt per line; blank lines and # comments skipped), JSON Lines "
    '({"prompt": "a fox", "seed": 7, "steps": 30, ...}), CSV or TSV with a header row of the same names; '
    "the extension or --format tells which. Flags set the defaults each line may override. A line without a "
    "seed gets one derived from --seed (the base seed, default 0) and its line number. Images go to "
    "DIR/{line:05d}-{seed}-{slug}.png and DIR/manifest.jsonl gets one record per image; running the same "
    "command again skips finished images. Several processes: accelerate launch ... -m sdgen batch FILE.\n\n"
    "\b\nExamples:\n"
    "  sdgen batch prompts.txt -o out/\n"
    "  sdgen batch prompts.jsonl --steps 30 --batch-size 4 --json\n"
    "  producer | sdgen batch - --json | consumer\n"
    "  sdgen batch prompts.csv --dry-run\n"
    "  accelerate launch --num_processes 2 -m sdgen batch prompts.jsonl -o out/"
)


class DefaultToGenerate(TyperGroup):
    """Route `sdgen "a prompt" ...` to the generate command; `sdgen -- info` generates the prompt "info"."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [GENERATE, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage("sdgen", "PROMPT [OPTIONS]  |  sdgen COMMAND [ARGS]")


# --- options from the table ----------------------------------------------------------------------------


def typer_parameter(option: Option, command: str) -> inspect.Parameter:
    """One row of sdgen/options.py as a Typer option of `command`; the default shown is the built-in value.

    A setting that a config file can switch on can be switched off again: `--vae-tiling/--no-vae-tiling`.
    """
    kind: Any = Path if option.path else option.kind
    flag = option.long_flag
    if option.kind is bool and option.layered:
        flag = f"{flag}/--no-{flag[2:]}"
    names = [flag, *([option.short] if option.short else [])]
    info = typer.Option(*names, help=option.help_text(command), show_default=option.kind is not bool)
    annotation = Annotated[kind | None if option.default is None else kind, info]
    return inspect.Parameter(option.key, inspect.Parameter.KEYWORD_ONLY, default=option.default, annotation=annotation)


def with_options(command: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give `func(ctx, <its arguments>, **options)` a Typer option for each table row `command` takes."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        generated = [typer_parameter(option, command) for option in options.options_for(command)]
        func.__signature__ = signature.replace(parameters=[*own, *generated])  # type: ignore[attr-defined]
        return func

    return decorate


def effective_settings(ctx: typer.Context, values: dict[str, Any]) -> dict[str, settings.Setting]:
    """Flags typed > --from image > SDGEN_* env > user config > preset > built-in (sdgen.settings)."""
    given = {key for key in ctx.params if _given_by_user(ctx, key)}
    table = options.OPTIONS
    flags = {key: values[key] for key in given if key == "prompt" or (key in table and table[key].target != RUN)}
    from_image = values.get("from_image")
    image = replay_values(from_image, given) if from_image is not None else None
    return settings.resolve(flags=flags, image=image, preset=values.get("preset"))


def _given_by_user(ctx: typer.Context, name: str) -> bool:
    """True for a flag typed on the command line or set by its environment variable, not a default.
    (Typer vendors its own click, so the source is compared by name.)"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


# --- errors, logging -----------------------------------------------------------------------------------


class CliErrors:
    """Expected failures print one line on stderr and exit with their code; --verbose adds the traceback.
    Usage errors name the flag and, once the settings are known, where a bad value came from."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.sources: dict[str, str] = {}

    def knows(self, effective: dict[str, settings.Setting]) -> dict[str, Any]:
        """Remember where each value came from; return the values."""
        self.sources = {key: setting.source for key, setting in effective.items()}
        return settings.values(effective)

    def __enter__(self) -> CliErrors:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        if error is None or isinstance(error, typer.Exit):
            return False
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or SIGTERM/SIGHUP (sdgen.interrupts)
            by = error.by if isinstance(error, Interrupted) else ""
            typer.echo(f"sdgen: interrupted{by}; finished images are kept.", err=True)
            raise typer.Exit(getattr(error, "exit_code", EXIT_INTERRUPTED))
        if isinstance(error, SdgenError):
            if self.verbose:
                import traceback

                traceback.print_exception(kind, error, tb, file=sys.stderr)
            message = options.describe(error, self.sources) if isinstance(error, UsageError) else str(error)
            typer.echo(f"sdgen: error: {message}", err=True)
            raise typer.Exit(error.exit_code)
        return False


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    """sdgen's notes and warnings go to stderr; the libraries' own chatter is turned down."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO)
    log.propagate = False
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="diffusers")


# --- the commands --------------------------------------------------------------------------------------


def generate_command(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="What to draw (optional with --from).", show_default=False)
    ] = None,
    **values: Any,
) -> None:
    setup_logging(values["verbose"], values["quiet"])
    with CliErrors(values["verbose"]) as errors, interrupts.handled():
        chosen = errors.knows(effective_settings(ctx, {**values, "prompt": prompt}))
        request = GenerationRequest.from_settings(chosen).validated()
        spec = ModelSpec.from_settings(chosen).validated()
        run_generate(request, spec, OutputSpec.from_settings(chosen), typer.echo, quiet=values["quiet"])


def batch_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Prompts file (.txt .jsonl .csv .tsv), or - for stdin.")],
    **values: Any,
) -> None:
    setup_logging(values["verbose"], values["quiet"])
    with CliErrors(values["verbose"]) as errors, interrupts.handled():
        chosen = errors.knows(effective_settings(ctx, values))
        batch = BatchOptions(
            source=source,
            fmt=detect_format(source, values["format"]),
            output=OutputSpec.from_settings(chosen),
            fail_fast=values["fail_fast"],
            dry_run=values["dry_run"],
            quiet=values["quiet"],
        )
        summary = run_batch(batch, chosen, ModelSpec.from_settings(chosen), typer.echo)
    raise typer.Exit(exit_code(summary))


def schedulers_command() -> None:
    for spec in SCHEDULERS.values():
        choices = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
        a1111 = spec.a1111_sampler + (f" ({spec.a1111_schedule_type})" if spec.a1111_schedule_type else "")
        typer.echo(f"{spec.name:20} {spec.class_name}{'(' + choices + ')' if choices else ''}  [{a1111}]")


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
) -> None:
    with CliErrors():
        config_path = settings.user_config_path()
        if path:
            typer.echo(str(config_path))
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


def doctor_command(
    device: Annotated[str, typer.Option("--device", help="Device to test: auto, cpu, mps, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="dtype to test: auto, float32, float16, bfloat16.")] = "auto",
) -> None:
    setup_logging(False, quiet=True)
    with CliErrors():
        try:
            for line in doctor.report(device, dtype):
                typer.echo(line)
        except doctor.DoctorFailed:
            raise typer.Exit(EXIT_FAILURE) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sdgen {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Text-to-image with Stable Diffusion 1.x."""


def build_app() -> typer.Typer:
    """The Typer app, its generate and batch options made from the table as it is now."""
    app = typer.Typer(
        cls=DefaultToGenerate,
        add_completion=False,
        no_args_is_help=True,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
        help=APP_HELP,
    )
    app.callback()(_root)
    app.command(GENERATE, help=GENERATE_HELP)(with_options(GENERATE)(_fresh(generate_command)))
    app.command(BATCH, help=BATCH_HELP)(with_options(BATCH)(_fresh(batch_command)))
    examples = {
        "schedulers": "List scheduler names, their diffusers classes and A1111 names.\n\n"
        '\b\nExamples:\n  sdgen schedulers\n  sdgen "a fox" --scheduler euler-a',
        "info": "Show how images were made: sdgen's record and A1111 parameters (PNG, JPEG, WebP).\n\n"
        "\b\nExamples:\n  sdgen info outputs/*.png\n  sdgen info photo.webp --json | jq .a1111.fields.Seed",
        "config": "Show the effective settings and where each came from.\n\n"
        "Precedence, lowest first: built-in < preset < user config file < SDGEN_* environment variables < "
        "--from IMAGE < flags.\n\n"
        '\b\nExamples:\n  sdgen config\n  sdgen config --preset fast --json\n  $EDITOR "$(sdgen config --path)"',
        "doctor": "Check the setup: versions, devices, the model cache, and a tiny model run end to end.\n\n"
        "\b\nExamples:\n  sdgen doctor\n  sdgen doctor --device cuda --dtype float16",
    }
    for name, func in (
        ("schedulers", schedulers_command),
        ("info", info_command),
        ("config", config_command),
        ("doctor", doctor_command),
    ):
        app.command(name, help=examples[name])(func)
    return app


def _fresh(func: Callable[..., None]) -> Callable[..., None]:
    """A wrapper of its own for each app, so building a second app leaves the first one's signature alone."""

    def command(*args: Any, **kwargs: Any) -> None:
        func(*args, **kwargs)

    command.__signature__ = inspect.signature(func, eval_str=True)  # type: ignore[attr-defined]
    command.__name__ = func.__name__
    return command


app = build_app()


def main() -> None:
    """Console entry point."""
    try:
        app(prog_name="sdgen")
    except KeyboardInterrupt:
        sys.stderr.write("sdgen: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["app", "build_app", "main"]
