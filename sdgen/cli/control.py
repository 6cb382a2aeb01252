"""`sdgen control detect IMAGE --preprocessor NAME`: the control map a preprocessor makes, written alone, so it
can be looked at and edited before `--control MODEL=map.png` uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdgen.cli.common import CliErrors, setup_logging

control_app = typer.Typer(
    help="ControlNet's control maps.\n\n\b\nExamples:\n  sdgen control detect photo.jpg --preprocessor canny "
    "-o edges.png\n  sdgen control detect photo.jpg -p canny --low 50 --high 150 --res 512\n"
    "  sdgen control detect dancer.jpg -p openpose -o pose.png",
    no_args_is_help=True,
)


@control_app.command(
    "detect", help="Write the control map a preprocessor makes of IMAGE (A1111's ControlNet module names: canny, "
    "threshold, scribble_xdog, lineart_standard, tile_resample, shuffle, inpaint, invert; openpose, depth, hed, "
    "pidinet, lineart, lineart_anime, mlsd, normal_bae through controlnet_aux). docs/controlnet.md lists them.",
)
def detect_command(
    image: Annotated[str, typer.Argument(help="The image to make the map of.", show_default=False)],
    preprocessor: Annotated[str, typer.Option("--preprocessor", "-p", help="The preprocessor's name.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the map. [default: IMAGE-NAME.png here]")
    ] = None,
    res: Annotated[int, typer.Option("--res", help="The map's short side (-1: the preprocessor's default).")] = -1,
    low: Annotated[float, typer.Option("--low", "--threshold-a", help="Threshold A (-1: its default).")] = -1,
    high: Annotated[float, typer.Option("--high", "--threshold-b", help="Threshold B (-1: its default).")] = -1,
    pixel_perfect: Annotated[
        bool, typer.Option("--pixel-perfect", help="The resolution from --width x --height, as A1111 computes it.")
    ] = False,
    width: Annotated[int, typer.Option("--width", help="The picture's width, for --pixel-perfect.")] = 512,
    height: Annotated[int, typer.Option("--height", help="The picture's height, for --pixel-perfect.")] = 512,
    resize: Annotated[str, typer.Option("--resize", help="crop, resize or fill, for --pixel-perfect.")] = "crop",
    mask: Annotated[str | None, typer.Option("--mask", help="The mask, for inpaint.", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="The seed of shuffle's random flow.")] = 0,
) -> None:
    setup_logging(False)
    with CliErrors():
        from sdgen.engine.plugins.control_maps import detect_control_map, map_settings

        settings = map_settings(preprocessor, res, low, high, pixel_perfect, resize)
        made = detect_control_map(image, settings, size=(width, height), seed=seed, mask=mask)
        target = output or Path(f"{Path(image).stem}-{settings.module}.png")
        try:
            made.save(target)
        except (OSError, ValueError) as error:
            from sdgen.errors import OutputError

            raise OutputError(f"Invalid --output {str(target)!r}: {error}.") from None
        typer.echo(str(target))


def register(app: typer.Typer) -> None:
    app.add_typer(control_app, name="control")
