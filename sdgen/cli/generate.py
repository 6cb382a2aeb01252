"""`sdgen PROMPT` and `sdgen batch FILE`: parse, build the request, call the library function."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sdgen import interrupts
from sdgen.cli.common import CliErrors, effective_settings, fresh, setup_logging, with_options
from sdgen.config.options import BATCH, GENERATE
from sdgen.engine.request import GenerationRequest, ModelSpec, OutputSpec, PicturesSpec
from sdgen.runs.batch.input import detect_format
from sdgen.runs.batch.ray_run import RayOptions, run_batch_on_ray
from sdgen.runs.batch.run import BatchOptions, exit_code, run_batch
from sdgen.runs.generate import run_generate

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
    "  accelerate launch --num_processes 2 -m sdgen batch prompts.jsonl -o out/\n"
    "  sdgen batch prompts.txt --ray auto --gather -o out/   # on a Ray cluster"
)



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
        request, spec = GenerationRequest.from_settings(chosen), ModelSpec.from_settings(chosen)
        output, pictures = OutputSpec.from_settings(chosen), PicturesSpec.from_settings(chosen)
        run_generate(request, spec, output, typer.echo, quiet=values["quiet"], pictures=pictures)


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
            pictures=PicturesSpec.from_settings(chosen),
            fail_fast=values["fail_fast"],
            dry_run=values["dry_run"],
            quiet=values["quiet"],
            typed=frozenset(key for key, source in errors.sources.items() if source == "flag"),
        )
        spec = ModelSpec.from_settings(chosen)
        ray = RayOptions.from_values(values)
        if ray is None:
            summary = run_batch(batch, chosen, spec, typer.echo)
        else:
            summary = run_batch_on_ray(batch, chosen, spec, typer.echo, ray)
    raise typer.Exit(exit_code(summary))




def register(app: typer.Typer) -> None:
    app.command(GENERATE, help=GENERATE_HELP)(with_options(GENERATE)(fresh(generate_command)))
    app.command(BATCH, help=BATCH_HELP)(with_options(BATCH)(fresh(batch_command)))
