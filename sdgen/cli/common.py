"""What every command shares: options made from the table, the layered settings, one-line errors, logging."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sdgen.config import options, settings
from sdgen.config.options import RUN, Option
from sdgen.errors import EXIT_INTERRUPTED, SdgenError, UsageError
from sdgen.interrupts import Interrupted
from sdgen.record.replay import replay_values

log = logging.getLogger("sdgen")


def typer_parameter(option: Option, command: str) -> inspect.Parameter:
    """One row of sdgen/config/options.py as a Typer option of `command`; the default shown is the built-in value.

    A setting that a config file can switch on can be switched off again: `--vae-tiling/--no-vae-tiling`.
    """
    kind: Any = Path if option.path else list[str] if option.kind is list else option.kind
    flag = option.long_flag
    if option.kind is bool and option.layered:
        flag = f"{flag}/--no-{flag[2:]}"
    names = [flag, *([option.short] if option.short else [])]
    extra = {"metavar": "<text>"} if option.kind is list else {}  # not Typer's <list[str]>
    help_text = option.help_text(command)
    shown = option.kind is not bool and "[default:" not in help_text  # a help that says its default: once
    info = typer.Option(*names, help=help_text, show_default=shown, **extra)
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
    """Flags typed > --from image > SDGEN_* env > user config > preset > built-in (sdgen.config.settings)."""
    given = {key for key in ctx.params if key in values and _given_by_user(ctx, key)}  # not a command's own
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


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is at each line, so a rich live display (which swaps it for a proxy while
    it draws) prints sdgen's notes above itself instead of glued to its last line."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    """sdgen's notes and warnings go to stderr; the libraries' own chatter is turned down."""
    handler = _StderrHandler()
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
        # diffusers passes this to huggingface_hub for every Hub id it reads a config of
        warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated")


def fresh(func: Callable[..., None]) -> Callable[..., None]:
    """A wrapper of its own for each app, so building a second app leaves the first one's signature alone."""

    def command(*args: Any, **kwargs: Any) -> None:
        func(*args, **kwargs)

    command.__signature__ = inspect.signature(func, eval_str=True)  # type: ignore[attr-defined]
    command.__name__ = func.__name__
    return command


