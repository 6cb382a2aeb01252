"""`sdgen upscale IMAGE...`: enlarge pictures with an upscaler model (sdgen/runs/upscale.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sdgen import interrupts
from sdgen.cli.common import CliErrors, effective_settings, fresh, setup_logging, with_options
from sdgen.config.options import UPSCALE

UPSCALE_HELP = (
    "Enlarge pictures with an upscaler model: ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, OmniSR, SPAN and the other "
    "architectures spandrel reads from the weights alone (A1111's models/ESRGAN files). Tiled, so memory stays "
    'bounded by --tile; needs spandrel: pip install "sdgen[upscale]".\n\n'
    "\b\nExamples:\n"
    "  sdgen upscale fox.png --upscaler 4x-UltraSharp.safetensors\n"
    "  sdgen upscale out/*.png --upscaler-dir ~/models/ESRGAN --upscaler 4x-UltraSharp --scale 2 -o big/\n"
    '  sdgen "a fox" -o - | sdgen upscale - --upscaler 2x-model.safetensors -o - > fox-2x.png'
)


def upscale_command(
    ctx: typer.Context,
    images: Annotated[
        list[str], typer.Argument(help="Image files, or - for stdin.", show_default=False, metavar="IMAGE...")
    ],
    **values: Any,
) -> None:
    from sdgen.config.specs import OutputSpec, UpscaleSpec
    from sdgen.runs.upscale import run_upscale

    setup_logging(values["verbose"], values["quiet"])
    with CliErrors(values["verbose"]) as errors, interrupts.handled():
        chosen = errors.knows(effective_settings(ctx, values))
        run_upscale(
            images, UpscaleSpec.from_settings(chosen), chosen.get("upscaler_dir"), chosen.get("device", "auto"),
            chosen.get("dtype", "auto"), bool(values.get("allow_unsafe_pickle")), OutputSpec.from_settings(chosen),
            typer.echo, values["quiet"],
        )


def register(app: typer.Typer) -> None:
    app.command(UPSCALE, help=UPSCALE_HELP)(with_options(UPSCALE)(fresh(upscale_command)))
