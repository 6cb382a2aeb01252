"""The Typer app: `sdgen PROMPT` routes to generate; every other command registers itself here."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sdgen.cli import cache, control, generate, models, pictures, serve, tools, upscale
from sdgen.config.options import GENERATE
from sdgen.errors import EXIT_INTERRUPTED, EXIT_USAGE
from sdgen.hardware.ray_cluster import is_address
from sdgen.version import __version__

APP_HELP = (
    "Text-to-image with Stable Diffusion 1.x, from the terminal.\n\n"
    "\b\nExamples:\n"
    '  sdgen "a cute kitten" --steps 48\n'
    '  sdgen "a fox in the snow" -n 4 --seed 42 -o fox.png\n'
    '  sdgen "oil painting" --init-image photo.jpg --strength 0.6\n'
    '  sdgen "a cute kitten" --steps 48 --save-steps kitten-steps.png\n'
    '  sdgen "a (red:1.3) fox <lora:ink:0.7>" --lora-dir ~/loras --hires-scale 2\n'
    "  sdgen --model ~/models/finetune.safetensors \"a fox\"\n"
    "  sdgen \"a fox\" --preset turbo\n"
    "  sdgen serve                  # the AUTOMATIC1111 web API on 127.0.0.1:7860\n"
    "  sdgen schedulers"
)


class DefaultToGenerate(TyperGroup):
    """Route `sdgen "a prompt" ...` to the generate command; `sdgen -- info` generates the prompt "info"."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            near_miss(args[0], list(self.commands))
            args = [GENERATE, *args]
        return super().parse_args(ctx, with_flag_values(args))

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each command with the first sentence of its help, whole (Click cuts it at 45 characters)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, first_sentence(command.short_help or command.help or "")))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage("sdgen", "PROMPT [OPTIONS]  |  sdgen COMMAND [ARGS]")


def near_miss(word: str, commands: list[str]) -> None:
    """A one-word prompt that is a mistyped command (`sdgen scheduler`) is refused with the command it
    nearly is; `sdgen -- scheduler` draws the word."""
    import difflib

    if " " in word or word.startswith("-") or word != word.lower():
        return
    close = difflib.get_close_matches(word, commands, n=1, cutoff=0.75)
    if close:
        typer.echo(
            f"sdgen: error: {word!r} is not a command; did you mean `sdgen {close[0]}`? "
            f"(To draw the word, write `sdgen -- {word}`.)",
            err=True,
        )
        raise SystemExit(EXIT_USAGE)


def first_sentence(text: str, most: int = 100) -> str:
    """The help's first sentence; a long one up to its last clause that fits in `most` characters (never a
    word or a parenthesis cut in two)."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    sentence = paragraph if end < 0 else paragraph[: end + 1]
    if len(sentence) <= most:
        return sentence
    cuts = [
        at for at in range(1, most)
        if sentence[at:at + 2] in (": ", "; ", ", ", " (") and sentence[:at].count("(") == sentence[:at].count(")")
    ]
    return sentence[: cuts[-1]] + " ..." if cuts else sentence


# Options whose value may be left out, and what they then mean: `--tiling` alone is `--tiling both`
# (`--ray` alone: a local cluster; its value is a word that reads as an address, else the next argument)
FLAG_VALUES: dict[str, tuple[str, Any]] = {
    "--tiling": ("both", frozenset({"both", "xy", "x", "y", "none", "off"})),
    "--ray": ("local", is_address),
}


def with_flag_values(args: list[str]) -> list[str]:
    """The arguments with the value of each such option written out where it was left out (Click cannot)."""
    out: list[str] = []
    for position, arg in enumerate(args):
        if arg == "--":
            return out + args[position:]
        out.append(arg)
        if arg in FLAG_VALUES:
            value, choices = FLAG_VALUES[arg]
            following = args[position + 1] if position + 1 < len(args) else None
            accepted = following is not None and (
                choices(following) if callable(choices) else following.lower() in choices
            )
            if not accepted:
                out.append(value)
    return out


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
    """The Typer app, its options made from the table in sdgen/config/options.py as it is now."""
    app = typer.Typer(
        cls=DefaultToGenerate,
        add_completion=False,
        no_args_is_help=True,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
        help=APP_HELP,
    )
    app.callback()(_root)
    for commands in (generate, pictures, tools, models, cache, serve, control, upscale):
        commands.register(app)
    return app


app = build_app()


def main() -> None:
    """Console entry point."""
    try:
        app(prog_name="sdgen")
    except KeyboardInterrupt:
        sys.stderr.write("sdgen: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
