"""`sdgen models list|download|rm|info|make-tiny`: the models on this machine, and fetching or removing them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sdgen.cli.common import CliErrors, setup_logging
from sdgen.config import settings
from sdgen.models.caches import size_text

models_app = typer.Typer(
    help="The models on this machine: the Hugging Face cache and your folder of single files.\n\n"
    "\b\nExamples:\n  sdgen models list\n  sdgen models download stable-diffusion-v1-5/stable-diffusion-v1-5 "
    "--variant fp16\n  sdgen models make-tiny tiny/\n"
    "  sdgen models info ~/models/dreamshaper_8.safetensors\n  sdgen models rm someone/old-model",
    no_args_is_help=True,
)

ModelsDir = Annotated[
    str | None,
    typer.Option("--models-dir", help="Folder of single-file checkpoints. [default: models_dir of your config]"),
]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per model on stdout.")]


def _models_dir(given: str | None) -> str | None:
    """--models-dir, else the settings' models_dir (config file, SDGEN_MODELS_DIR)."""
    if given is not None:
        return given
    effective = settings.values(settings.resolve())
    return effective.get("models_dir")


def _cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@models_app.command("list", help="Models in the Hugging Face cache and in --models-dir: name, kind, size.")
def list_command(models_dir: ModelsDir = None, json_lines: Json = False) -> None:
    setup_logging(False)
    with CliErrors():
        from sdgen.models.catalog import list_models

        entries = list_models(_cache_dir(), _models_dir(models_dir))
        if json_lines:
            for entry in entries:
                typer.echo(json.dumps(entry.record()))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None)
        for column in ("name", "kind", "size", "where", "variants", "revisions"):
            table.add_column(column, overflow="fold")
        for entry in entries:
            table.add_row(entry.name, entry.kind, size_text(entry.size), entry.where, ",".join(entry.variants),
                          " ".join(entry.revisions))
        wide = None if sys.stdout.isatty() else 200  # piped: whole names, not folded at 80 columns
        empty = "No models yet: `sdgen models download ID`, or set --models-dir."
        Console(width=wide).print(table if entries else empty)


@models_app.command("download", help="Download a Hub model into the Hugging Face cache, with a progress bar. "
                    "A gated model needs a token: HF_TOKEN, or `hf auth login`.")
def download_command(
    model: Annotated[str, typer.Argument(help="Hub id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5.")],
    variant: Annotated[str | None, typer.Option(help="Weights variant, e.g. fp16 (half the download).")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
) -> None:
    setup_logging(False)
    with CliErrors():
        import warnings

        from tqdm import TqdmExperimentalWarning
        from tqdm.rich import tqdm as rich_tqdm

        from sdgen.engine.request import ModelSpec
        from sdgen.models.hub import resolve_model_folder

        warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
        source = resolve_model_folder(ModelSpec(model=model, revision=revision), variant, progress=rich_tqdm)
        typer.echo(str(source.folder))


@models_app.command("rm", help="Remove a Hub model (every revision) from the Hugging Face cache.")
def rm_command(
    model: Annotated[str, typer.Argument(help="Hub id as `sdgen models list` shows it.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    setup_logging(False)
    with CliErrors():
        from sdgen.errors import InvalidRequestError
        from sdgen.models.catalog import remove_cached

        if not yes and not typer.confirm(f"Remove {model} from {_cache_dir()}?", default=False, err=True):
            raise InvalidRequestError(f"Kept {model}; pass --yes to remove it without asking.")
        freed = remove_cached(_cache_dir(), model)
        typer.echo(f"Removed {model}: {size_text(freed)} freed.", err=True)


@models_app.command("info", help="What a checkpoint file, model folder or cached Hub model is, and what sdgen "
                    "would load: family, in-channels, prediction type, size.")
def info_command(
    model: Annotated[str, typer.Argument(help="A .safetensors file, a model folder or a Hub id in the cache.")],
    model_config: Annotated[str | None, typer.Option(help="Architecture of a single file (folder or Hub id).")] = None,
    json_lines: Json = False,
) -> None:
    setup_logging(False)
    with CliErrors():
        from sdgen.models.catalog import model_info

        info = model_info(model, model_config)
        if json_lines:
            typer.echo(json.dumps(info))
            return
        for key, value in info.items():
            typer.echo(f"{key:16} {value}")


@models_app.command("make-tiny", help="Write a tiny random model (about 8 MB) to DIR, to try every command in "
                    "seconds before downloading a real one. Its weights are random: it makes noise, not pictures.\n\n"
                    "\b\nExamples:\n  sdgen models make-tiny tiny/\n  sdgen \"a fox\" --model tiny/ --steps 2")
def make_tiny_command(
    folder: Annotated[Path, typer.Argument(help="The folder to create (it must not exist or be empty).")],
) -> None:
    setup_logging(False)
    with CliErrors():
        from sdgen.errors import InvalidRequestError

        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InvalidRequestError(f"Cannot make the tiny model in '{folder}': it exists and is not an empty "
                                      "folder; name a new one.")
        import transformers

        from sdgen.testing.tiny_model import build_tiny_model

        transformers.utils.logging.disable_progress_bar()  # its "Writing model shards" bar is noise here
        build_tiny_model(folder)
        typer.echo(str(folder))
        typer.echo(f"sdgen: a tiny random model is in {folder}: it makes noise, not pictures, in seconds; try "
                   f"`sdgen \"a fox\" --model {folder}` (64x64 by default).", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
