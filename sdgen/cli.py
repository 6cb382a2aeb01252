"""The command line: a thin Typer layer that parses flags, builds a request and calls the library.

`sdgen PROMPT ...` generates; subcommands sit beside it (`sdgen schedulers`). Heavy libraries (torch,
diffusers) are imported only inside commands that need them, so `sdgen --help` is instant.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sdgen import __version__, settings
from sdgen.errors import EXIT_INTERRUPTED, EXIT_USAGE, InvalidRequestError, SdgenError

log = logging.getLogger("sdgen")
GENERATE = "generate"
BUILTIN = settings.builtin_defaults()  # configs/defaults.toml: shown as each flag's default in --help


class DefaultToGenerate(TyperGroup):
    """Route `sdgen "a prompt" ...` to the generate command; `sdgen -- info` generates the prompt "info"."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [GENERATE, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage("sdgen", "PROMPT [OPTIONS]  |  sdgen COMMAND [ARGS]")


app = typer.Typer(
    cls=DefaultToGenerate,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Text-to-image with Stable Diffusion 1.x, from the terminal.\n\n"
        "\b\nExamples:\n"
        '  sdgen "a cute kitten" --steps 48\n'
        '  sdgen "a fox in the snow" -n 4 --seed 42 -o fox.png\n'
        '  sdgen "oil painting" --init-image photo.jpg --strength 0.6\n'
        "  sdgen schedulers"
    ),
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sdgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Text-to-image with Stable Diffusion 1.x."""


# Options shared by `generate` and `batch`, declared once. Defaults shown come from configs/defaults.toml.
Preset = Annotated[
    str | None,
    typer.Option("--preset", help="Named settings from configs/presets (fast, quality, draft) or your config file."),
]
Model = Annotated[str, typer.Option("--model", "-m", help="Hub id or local diffusers folder.")]
Steps = Annotated[int, typer.Option("--steps", help="Denoising steps (num_inference_steps).")]
Guidance = Annotated[float, typer.Option("--guidance-scale", "-g", help="Classifier-free guidance; <= 1 turns it off.")]
Negative = Annotated[str, typer.Option("--negative-prompt", "-N", help="What to steer away from.")]
Scheduler = Annotated[str, typer.Option("--scheduler", help="Sampler name; `sdgen schedulers` lists them.")]
Width = Annotated[int | None, typer.Option("--width", "-W", help="Multiple of 8. [default: 512, or the init image's]")]
Height = Annotated[
    int | None, typer.Option("--height", "-H", help="Multiple of 8. [default: 512, or the init image's]")
]
NumImages = Annotated[int, typer.Option("--num-images", "-n", help="How many images (per prompt).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per U-Net call (memory vs speed).")]
InitImage = Annotated[Path | None, typer.Option("--init-image", help="Start from this image (image-to-image).")]
Strength = Annotated[float, typer.Option("--strength", help="Image-to-image: 0 keeps the image, 1 ignores it.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, mps, cuda or cuda:N.")]
Dtype = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto (float16 on CUDA; bfloat16 on CPUs with AMX/AVX512-BF16; else float32), float32, float16, bfloat16.",
    ),
]
Revision = Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit of the model.")]
Offline = Annotated[bool, typer.Option("--offline", help="Use the Hugging Face cache only.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")]
Rng = Annotated[str, typer.Option("--rng", help="Where noise is drawn: cpu (same picture on every device) or device.")]
JsonLines = Annotated[bool, typer.Option("--json", help="Print one JSON object per image on stdout.")]
NoMetadata = Annotated[bool, typer.Option("--no-metadata", help="Write no parameters or sdgen chunk into the PNG.")]
AttentionSlicing = Annotated[
    bool,
    typer.Option(
        "--attention-slicing",
        help="Attention in slices (old setups; with PyTorch's fused attention it is slower and saves nothing).",
    ),
]
VaeSlicing = Annotated[bool, typer.Option("--vae-slicing", help="Decode a batch one image at a time.")]
VaeTiling = Annotated[
    bool, typer.Option("--vae-tiling", help="Decode in overlapping tiles: large images in little memory.")
]
Offload = Annotated[
    str, typer.Option("--offload", help="CUDA: none, model (one part on the GPU at a time) or sequential.")
]
Compile = Annotated[
    bool, typer.Option("--compile", help="torch.compile the U-Net: faster steps after a slow first call.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, notes or warnings on stderr.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More logs; tracebacks on errors.")]


@app.command(
    GENERATE,
    help=(
        "Generate images from a prompt (the default command: `sdgen PROMPT`).\n\n"
        "\b\nExamples:\n"
        '  sdgen "a cute kitten" --steps 48\n'
        '  sdgen "a fox" -n 4 --seed 42 -o foxes/\n'
        '  sdgen "a fox" -o - | display -\n'
        '  sdgen "a fox" --json | jq -r .path\n'
        "  sdgen --from outputs/00000-42-a-fox.png --steps 40"
    ),
)
def generate_command(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="What to draw (optional with --from).", show_default=False)
    ] = None,
    from_image: Annotated[
        Path | None,
        typer.Option("--from", help="Make an image again from its metadata; flags given beside it override."),
    ] = None,
    preset: Preset = None,
    model: Model = BUILTIN["model"],
    steps: Steps = BUILTIN["steps"],
    guidance_scale: Guidance = BUILTIN["guidance_scale"],
    negative_prompt: Negative = BUILTIN["negative_prompt"],
    seed: Annotated[
        int | None,
        typer.Option("--seed", "-s", help="Seed of image 1; image i uses seed+i. Random if unset."),
    ] = None,
    scheduler: Scheduler = BUILTIN["scheduler"],
    width: Width = None,
    height: Height = None,
    num_images: NumImages = BUILTIN["num_images"],
    batch_size: BatchSize = BUILTIN["batch_size"],
    init_image: InitImage = None,
    strength: Strength = BUILTIN["strength"],
    device: Device = BUILTIN["device"],
    dtype: Dtype = BUILTIN["dtype"],
    attention_slicing: AttentionSlicing = BUILTIN["attention_slicing"],
    vae_slicing: VaeSlicing = BUILTIN["vae_slicing"],
    vae_tiling: VaeTiling = BUILTIN["vae_tiling"],
    offload: Offload = BUILTIN["offload"],
    compile: Compile = BUILTIN["compile"],
    revision: Revision = None,
    offline: Offline = BUILTIN["offline"],
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="FILE.png, a folder ending in /, or - for stdout. [default: outputs/]"),
    ] = None,
    overwrite: Overwrite = False,
    name: Annotated[
        str, typer.Option("--name", help="File name template: {index} {seed} {slug} {steps} {scheduler}.")
    ] = BUILTIN["name"],
    rng: Rng = BUILTIN["rng"],
    json_lines: JsonLines = False,
    no_metadata: NoMetadata = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    _setup_logging(verbose, quiet)
    with _errors_to_exit_codes(verbose):
        effective = _effective_settings(ctx, from_image, preset)
        request, spec = _build_request(effective)
        chosen = settings.values(effective)
        targets = _plan_outputs(request, chosen.get("output"), overwrite, chosen["name"])

        from sdgen.devices import choose_placement
        from sdgen.speed import plan_speed

        placement = choose_placement(spec.device, spec.dtype, spec.rng)
        plan_speed(spec, placement)  # e.g. --offload on a CPU: refused before loading

        # 2. load once, generate, write each image as soon as its batch is done
        from sdgen.metadata import png_info
        from sdgen.models import load_model
        from sdgen.output import png_bytes, write_atomic
        from sdgen.pipeline import iter_generate
        from sdgen.progress import GenerationProgress

        with GenerationProgress(request.num_images, enabled=False if quiet else None) as progress:
            parts = load_model(spec, placement, on_part=progress.on_part)
            log.info(
                "Seed %d%s",
                request.seed,
                f" (images use {request.seed}..{request.seeds[-1]})" if request.num_images > 1 else "",
            )
            for result in iter_generate(request, parts, on_step=progress.on_step):
                data = png_bytes(result.image, png_info(result, parts) if chosen["metadata"] else None)
                target = targets[result.index]
                if target is None:
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
                    continue
                write_atomic(target, data, overwrite=overwrite)
                if json_lines:
                    typer.echo(json.dumps(result_record(result, parts, target), ensure_ascii=False))
                else:
                    typer.echo(str(target))


def _effective_settings(ctx: typer.Context, from_image: Path | None, preset: str | None) -> dict[str, settings.Setting]:
    """Flags typed > --from image > SDGEN_* env > user config > preset > built-in (sdgen.settings)."""
    given = {key for key in ctx.params if _given_by_user(ctx, key)}
    flags = {key: ctx.params[key] for key in given if key in settings.KEYS or key in ("prompt", "init_image")}
    if "no_metadata" in given:
        flags["metadata"] = not ctx.params["no_metadata"]
    image = None
    if from_image is not None:
        from sdgen.metadata import replay_values

        image = replay_values(from_image, given)
    return settings.resolve(flags=flags, image=image, preset=preset)


def _build_request(effective: dict[str, settings.Setting], **fill: Any) -> tuple[Any, Any]:
    """The validated request and model spec; a bad value from a config layer names that layer."""
    from sdgen.config import GenerationRequest, ModelSpec

    chosen = {**fill, **settings.values(effective)}
    try:
        return GenerationRequest.from_settings(chosen).validated(), ModelSpec.from_settings(chosen).validated()
    except InvalidRequestError as error:
        import re

        flag = re.search(r"--([a-z][a-z-]*)", str(error))
        setting = effective.get(flag.group(1).replace("-", "_")) if flag else None
        if setting is not None and setting.source not in ("flag", "built-in"):
            raise InvalidRequestError(f"{error} (set by {setting.source})") from None
        raise


@app.command(
    "batch",
    help=(
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
    ),
)
def batch_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Prompts file (.txt .jsonl .csv .tsv), or - for stdin.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="txt, jsonl, csv or tsv. [default: from the extension]")
    ] = None,
    preset: Preset = None,
    model: Model = BUILTIN["model"],
    steps: Steps = BUILTIN["steps"],
    guidance_scale: Guidance = BUILTIN["guidance_scale"],
    negative_prompt: Negative = BUILTIN["negative_prompt"],
    seed: Annotated[
        int | None,
        typer.Option("--seed", "-s", help="Base seed: a line without a seed gets sha256(base:line). [default: 0]"),
    ] = None,
    scheduler: Scheduler = BUILTIN["scheduler"],
    width: Width = None,
    height: Height = None,
    num_images: NumImages = BUILTIN["num_images"],
    batch_size: BatchSize = BUILTIN["batch_size"],
    init_image: InitImage = None,
    strength: Strength = BUILTIN["strength"],
    device: Device = BUILTIN["device"],
    dtype: Dtype = BUILTIN["dtype"],
    attention_slicing: AttentionSlicing = BUILTIN["attention_slicing"],
    vae_slicing: VaeSlicing = BUILTIN["vae_slicing"],
    vae_tiling: VaeTiling = BUILTIN["vae_tiling"],
    offload: Offload = BUILTIN["offload"],
    compile: Compile = BUILTIN["compile"],
    revision: Revision = None,
    offline: Offline = BUILTIN["offline"],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output folder. [default: outputs/]")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Regenerate and replace finished images.")] = False,
    name: Annotated[
        str, typer.Option("--name", help="File name template: {line} {index} {seed} {slug} {steps} {scheduler}.")
    ] = "{line:05d}-{seed}-{slug}",
    rng: Rng = BUILTIN["rng"],
    json_lines: Annotated[
        bool, typer.Option("--json", help="Print each image's manifest record on stdout (valid batch input).")
    ] = False,
    no_metadata: NoMetadata = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first bad line or failure.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the whole input and print the plan; load no weights.")
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    from sdgen.batchfile import detect_format
    from sdgen.output import DEFAULT_FOLDER, check_writable_folder
    from sdgen.runner import BatchOptions, exit_code, run_batch

    _setup_logging(verbose, quiet)
    with _errors_to_exit_codes(verbose):
        effective = _effective_settings(ctx, None, preset)
        _, spec = _build_request(effective, prompt="(run defaults)", seed=0)  # bad flags fail here, exit 2
        if not dry_run:
            from sdgen.devices import choose_placement
            from sdgen.speed import plan_speed

            plan_speed(spec, choose_placement(spec.device, spec.dtype, spec.rng))  # before reading any input
        chosen = settings.values(effective)
        folder = os.path.expanduser(chosen.get("output") or DEFAULT_FOLDER)
        if folder.lower().endswith(".png") or folder == "-":
            raise InvalidRequestError(f"Invalid --output {folder!r}: a batch writes to a folder; use -o DIR/.")
        check_writable_folder(Path(folder))
        options = BatchOptions(
            source=source,
            fmt=detect_format(source, fmt),
            folder=Path(folder),
            name_template=name,
            batch_size=chosen["batch_size"],
            overwrite=overwrite,
            json_lines=json_lines,
            metadata=chosen["metadata"],
            fail_fast=fail_fast,
            dry_run=dry_run,
            quiet=quiet,
        )
        summary = run_batch(options, chosen, spec, typer.echo)
    raise typer.Exit(exit_code(summary))


def _given_by_user(ctx: typer.Context, name: str) -> bool:
    """True for a flag typed on the command line or set by its environment variable, not a default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def result_record(result: Any, parts: Any, path: Path | None) -> dict[str, Any]:
    """The --json line for one image: where it went and everything needed to make it again."""
    request = result.request
    return {
        "path": str(path) if path is not None else None,
        "seed": result.seed,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
        "scheduler": request.scheduler,
        "width": request.width,
        "height": request.height,
        "init_image": str(request.init_image) if request.init_image is not None else None,
        "strength": request.strength if request.is_img2img else None,
        "model": parts.source.model,
        "revision": parts.source.revision,
        "dtype": parts.placement.dtype,
        "device": parts.placement.device,
        "rng": parts.placement.rng,
        "seconds": round(result.seconds, 3),
    }


def _plan_outputs(request: Any, output: str | None, overwrite: bool, name: str) -> list[Path | None]:
    """Every image's destination, decided (and checked) before the model loads; None means stdout."""
    from sdgen.errors import OutputError
    from sdgen.output import DEFAULT_FOLDER, check_writable_folder, render_name

    count = request.num_images
    if output is not None and output != "-":
        output = os.path.expanduser(output)  # a config file's "~/Pictures/sdgen/" is not expanded by a shell
    if output == "-":
        if count != 1:
            raise OutputError(f"-o - writes one PNG to stdout, but --num-images is {count}; use -o DIR/ instead.")
        if sys.stdout.isatty():
            raise OutputError("Refusing to write PNG bytes to a terminal; pipe it (-o - | display -) or use -o FILE.")
        return [None]
    if output is None or output.endswith(("/", "\\")) or Path(output).is_dir():
        folder = Path(output or DEFAULT_FOLDER)
        check_writable_folder(folder)
        first = _next_index(folder)
        targets: list[Path | None] = [
            folder
            / render_name(
                name,
                index=first + i,
                seed=seed,
                prompt=request.prompt,
                steps=request.num_inference_steps,
                scheduler=request.scheduler,
            )
            for i, seed in enumerate(request.seeds)
        ]
    else:
        path = Path(output)
        if path.suffix.lower() != ".png":
            raise OutputError(f"Invalid --output {output!r}: sdgen writes PNG; use a name ending in .png.")
        check_writable_folder(path.parent)
        targets = [path] if count == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]
    for target in targets:
        if target is not None and target.exists() and not overwrite:
            raise OutputError(f"{str(target)!r} already exists; pass --overwrite to replace it or choose another name.")
    return targets


def _next_index(folder: Path) -> int:
    """Continue numbering after the highest `NNNNN-...png` already in the folder."""
    import re

    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := re.match(r"^(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
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


class _errors_to_exit_codes:
    """Expected failures print one line on stderr and exit with their code; --verbose adds the traceback."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        if error is None or isinstance(error, typer.Exit):
            return False
        if isinstance(error, KeyboardInterrupt):
            typer.echo("sdgen: interrupted; finished images are kept.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED)
        if isinstance(error, SdgenError):
            if self.verbose:
                import traceback

                traceback.print_exception(kind, error, tb, file=sys.stderr)
            typer.echo(f"sdgen: error: {error}", err=True)
            raise typer.Exit(error.exit_code)
        return False


@app.command(
    "schedulers",
    help=(
        "List scheduler names, their diffusers classes and A1111 names.\n\n"
        '\b\nExamples:\n  sdgen schedulers\n  sdgen "a fox" --scheduler euler-a'
    ),
)
def schedulers_command() -> None:
    from sdgen.schedulers import SCHEDULERS

    for spec in SCHEDULERS.values():
        options = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
        a1111 = spec.a1111_sampler + (f" ({spec.a1111_schedule_type})" if spec.a1111_schedule_type else "")
        typer.echo(f"{spec.name:20} {spec.class_name}{'(' + options + ')' if options else ''}  [{a1111}]")


@app.command(
    "info",
    help=(
        "Show how images were made: sdgen's record and A1111 parameters (PNG, JPEG, WebP).\n\n"
        "\b\nExamples:\n  sdgen info outputs/*.png\n  sdgen info photo.webp --json | jq .a1111.fields.Seed"
    ),
)
def info_command(
    images: Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)],
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per image on stdout.")] = False,
) -> None:
    from sdgen.metadata import parse_a1111, read_image_metadata

    _setup_logging(False)
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
        if parameters is not None:
            for line in parameters.splitlines():
                typer.echo(f"  {line}")
        if record is not None:
            typer.echo("  sdgen:")
            for key, value in record.items():
                typer.echo(f"    {key}: {value}")
    if failed:
        raise typer.Exit(EXIT_USAGE)


@app.command(
    "config",
    help=(
        "Show the effective settings and where each came from.\n\n"
        "Precedence, lowest first: built-in (configs/defaults.toml) < preset < user config file < "
        "SDGEN_* environment variables < --from IMAGE < flags.\n\n"
        "\b\nExamples:\n"
        "  sdgen config\n"
        "  sdgen config --preset fast --json\n"
        '  $EDITOR "$(sdgen config --path)"'
    ),
)
def config_command(
    preset: Preset = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object: key -> {value, source}.")] = False,
    path: Annotated[bool, typer.Option("--path", help="Print the user config file's path and exit.")] = False,
) -> None:
    with _errors_to_exit_codes(False):
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
        for key in settings.KEYS:
            if key in effective:
                value, source = json.dumps(effective[key].value, ensure_ascii=False), effective[key].source
            else:
                value, source = f"({settings.EMPTY_MEANS.get(key, 'unset')})", "built-in"
            typer.echo(f"{key:16} {value:40} {source}")


@app.command(
    "doctor",
    help=(
        "Check the setup: versions, devices, the model cache, and a tiny model run end to end.\n\n"
        "\b\nExamples:\n  sdgen doctor\n  sdgen doctor --device cuda --dtype float16"
    ),
)
def doctor_command(
    device: Annotated[str, typer.Option("--device", help="Device to test: auto, cpu, mps, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="dtype to test: auto, float32, float16, bfloat16.")] = "auto",
) -> None:
    import platform
    import tempfile
    import time

    _setup_logging(False, quiet=True)
    with _errors_to_exit_codes(False):
        import diffusers
        import torch
        import transformers

        from sdgen.config import DEFAULT_MODEL, GenerationRequest, ModelSpec
        from sdgen.devices import HardwareProbe, choose_placement, cpu_flags
        from sdgen.models import hub_cache_dir, load_model
        from sdgen.pipeline import generate
        from sdgen.tiny import build_tiny_model

        probe = HardwareProbe.detect()
        typer.echo(f"sdgen         {__version__}")
        typer.echo(f"python        {platform.python_version()} ({sys.executable})")
        typer.echo(f"torch         {torch.__version__}")
        typer.echo(f"diffusers     {diffusers.__version__}")
        typer.echo(f"transformers  {transformers.__version__}")
        gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(probe.cuda_device_count)]
        typer.echo(f"CUDA          {', '.join(gpus) if gpus else 'none'}")
        typer.echo(f"MPS           {'available' if probe.mps_available else 'none'}")
        bf16_units = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"})
        typer.echo(f"CPU bfloat16  {'native (' + ', '.join(bf16_units) + ')' if bf16_units else 'emulated (slow)'}")
        placement = choose_placement(device, dtype, probe=probe)
        typer.echo(f"sdgen uses    {placement.device}, {placement.dtype} (VAE {placement.vae_dtype})")
        cache = hub_cache_dir(ModelSpec())
        cached = (cache / ("models--" + DEFAULT_MODEL.replace("/", "--")) / "snapshots").is_dir()
        typer.echo(f"HF cache      {cache}")
        typer.echo(f"default model {DEFAULT_MODEL}: {'in the cache' if cached else 'not downloaded yet'}")
        transformers.utils.logging.disable_progress_bar()  # its "Writing model shards" bar is noise here
        with tempfile.TemporaryDirectory(prefix="sdgen-doctor-") as folder:
            build_tiny_model(folder)
            parts = load_model(ModelSpec(model=folder), placement)
            started = time.perf_counter()
            request = GenerationRequest("doctor", seed=0, num_inference_steps=4, width=64, height=64)
            [result] = generate(request, parts)
            seconds = time.perf_counter() - started
        ok = result.image.size == (64, 64)
        verdict = "ok" if ok else "FAILED"
        typer.echo(f"tiny model    {verdict}: 4 steps at 64x64 on {placement.device} in {seconds:.2f} s")
        if not ok:
            raise typer.Exit(1)


def main() -> None:
    """Console entry point."""
    try:
        app(prog_name="sdgen")
    except KeyboardInterrupt:
        sys.stderr.write("sdgen: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["app", "main"]
