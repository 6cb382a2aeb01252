"""The pictures of the process as commands: `noise` (forward noising), `schedule` (noise schedules) and
`grid` (X/Y grids of generation options). The denoising sequence and live previews are options of
`sdgen PROMPT` (--save-steps, --animation, --preview-file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sdgen import interrupts
from sdgen.cli.common import CliErrors, effective_settings, fresh, setup_logging, with_options
from sdgen.config.options import GRID, NOISE, SCHEDULE
from sdgen.engine.request import GenerationRequest, ModelSpec, OutputSpec, PicturesSpec

NOISE_HELP = (
    "Forward noising: IMAGE at evenly spaced timesteps from 0 to T, each noised in one jump with the model's "
    "own schedule, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise. In latent space (as the model "
    "does; the VAE encodes, noises, decodes for display) or in pixel space (for intuition).\n\n"
    "\b\nExamples:\n"
    "  sdgen noise cat.png -o cat-noise.png\n"
    "  sdgen noise cat.png --timesteps 0,100,500,999 --space pixel\n"
    "  sdgen noise cat.png --frames 12 --animation cat-noise.gif"
)
SCHEDULE_HELP = (
    "Noise schedules: alpha_bar (the signal's share) and 1 - alpha_bar (the noise's) against t for the linear, "
    "scaled-linear (Stable Diffusion's) and cosine schedules, and the timesteps a scheduler visits for a number "
    'of steps. The plot needs matplotlib: pip install "sdgen[plots]".\n\n'
    "\b\nExamples:\n"
    "  sdgen schedule -o schedule.png\n"
    "  sdgen schedule --scheduler ddim --scheduler dpm++2m-karras --steps 10 --steps 30\n"
    "  sdgen schedule --json | jq '.visits[0].timesteps'"
)
GRID_HELP = (
    "An X/Y grid: one image per combination of the values of --x and --y (any option of the picture: "
    "guidance-scale, steps, scheduler, seed, prompt, negative-prompt, strength, width, height, init-image), "
    "from one model load, with the same seed in every cell unless seed is an axis. Values are comma "
    'separated; quote one holding a comma: --x \'prompt="a fox, red","a cat"\'.\n\n'
    "\b\nExamples:\n"
    '  sdgen grid "a cute kitten" --x guidance-scale=1,3,7.5,12 --y steps=10,25,50 -o grid.png\n'
    '  sdgen grid "a fox" --x scheduler=euler-a,dpm++2m-karras,ddim --seed 42\n'
    '  sdgen grid "a fox" --x seed=1,2,3,4 --json | jq .seed'
)


def noise_command(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="The image to noise.", show_default=False)],
    timesteps: Annotated[
        str | None, typer.Option("--timesteps", help="Timesteps to show, e.g. 0,100,500,999.", show_default=False)
    ] = None,
    frames: Annotated[int, typer.Option("--frames", help="Evenly spaced timesteps from 0 to T.")] = 8,
    space: Annotated[str, typer.Option("--space", help="latent (as the model does) or pixel.")] = "latent",
    animation: Annotated[
        Path | None, typer.Option("--animation", help="Also write the frames as a .gif or .webp.", show_default=False)
    ] = None,
    **values: Any,
) -> None:
    from sdgen.explain.noising import NoiseRequest, run_noise

    setup_logging(values["verbose"], values["quiet"])
    with CliErrors(values["verbose"]) as errors, interrupts.handled():
        chosen = errors.knows(effective_settings(ctx, values))
        request = NoiseRequest(
            str(image),
            timesteps,
            frames,
            space,
            chosen.get("seed"),
            chosen.get("width"),
            chosen.get("height"),
            str(animation) if animation else None,
        )
        run_noise(request, ModelSpec.from_settings(chosen), OutputSpec.from_settings(chosen), typer.echo)


def schedule_command(
    ctx: typer.Context,
    scheduler: Annotated[
        list[str] | None, typer.Option(
            "--scheduler", metavar="<text>", help="Scheduler whose timesteps to mark; repeat to compare."
        )
    ] = None,
    steps: Annotated[
        list[int] | None, typer.Option("--steps", metavar="<int>", help="Step count; repeat to compare.")
    ] = None,
    **values: Any,
) -> None:
    from sdgen.config.options import default
    from sdgen.explain.schedules import ScheduleRequest, run_schedule

    setup_logging(values["verbose"], values["quiet"])
    with CliErrors(values["verbose"]) as errors:
        chosen = errors.knows(effective_settings(ctx, values))
        request = ScheduleRequest(
            tuple(scheduler or [chosen.get("scheduler", default("scheduler"))]),
            tuple(steps or [chosen.get("steps", default("steps"))]),
        )
        run_schedule(request, ModelSpec.from_settings(chosen), OutputSpec.from_settings(chosen), typer.echo)


def grid_command(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to draw.", show_default=False)],
    x: Annotated[str, typer.Option("--x", help="The columns: NAME=V1,V2,... e.g. guidance-scale=1,3,7.5,12.")],
    y: Annotated[
        str | None, typer.Option("--y", help="The rows: NAME=V1,V2,... e.g. steps=10,25,50.", show_default=False)
    ] = None,
    **values: Any,
) -> None:
    from sdgen.runs.grid import parse_axis, run_grid

    setup_logging(values["verbose"], values["quiet"])
    with CliErrors(values["verbose"]) as errors, interrupts.handled():
        chosen = errors.knows(effective_settings(ctx, {**values, "prompt": prompt}))
        axes = (parse_axis(x, "x"), parse_axis(y, "y") if y is not None else None)
        request = GenerationRequest.from_settings(chosen)
        output, pictures = OutputSpec.from_settings(chosen), PicturesSpec.from_settings(chosen)
        run_grid(request, axes, ModelSpec.from_settings(chosen), output, typer.echo, pictures, values["quiet"])


def register(app: typer.Typer) -> None:
    app.command(NOISE, help=NOISE_HELP)(with_options(NOISE)(fresh(noise_command)))
    app.command(SCHEDULE, help=SCHEDULE_HELP)(with_options(SCHEDULE)(fresh(schedule_command)))
    app.command(GRID, help=GRID_HELP)(with_options(GRID)(fresh(grid_command)))
