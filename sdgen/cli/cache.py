"""`sdgen cache list|prune`: sdgen's own cache folder (converted OpenVINO models, torch.compile's graphs)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from sdgen.cli.common import CliErrors, setup_logging
from sdgen.models.caches import entries_text, size_text, summary

cache_app = typer.Typer(
    help="sdgen's own cache folder ($SDGEN_CACHE_DIR, else ~/.cache/sdgen): the converted models of --backend "
    "openvino and the compiled graphs of --compile, which the next run reads instead of making them again. "
    "Any entry can be removed; a run that needs it makes it again.\n\n"
    "\b\nExamples:\n  sdgen cache list\n  sdgen cache prune --dry-run\n  sdgen cache prune --unused-days 30 --yes\n"
    "  sdgen cache prune --max-size 20 --yes",
    no_args_is_help=True,
)

Json = Annotated[bool, typer.Option("--json", help="One JSON object per entry on stdout.")]


def _ago(seconds: float) -> str:
    for unit, length in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return "just now"


@cache_app.command("list", help="Every entry: kind, part, model, weights' form, input shapes (a converted model's "
                   "entry per size and batch it ran at), version, size, last use; stale entries (another OpenVINO "
                   "or torch version, never read again) are marked.")
def list_command(json_lines: Json = False) -> None:
    setup_logging(False)
    with CliErrors():
        from sdgen.hardware.speed import sdgen_cache_root
        from sdgen.models.caches import list_caches

        root = sdgen_cache_root()
        entries = list_caches(root)
        if json_lines:
            for entry in entries:
                typer.echo(json.dumps(entry.record()))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None)
        for column in ("kind", "part", "model", "form", "shapes", "version", "size", "last used", "state"):
            table.add_column(column, overflow="fold")
        now = time.time()
        for entry in entries:
            state = "stale" if entry.stale else ("unfinished" if entry.kind == "unfinished" else "")
            table.add_row(entry.kind, entry.part, entry.model, entry.form, entry.shapes, entry.version,
                          size_text(entry.size), _ago(now - entry.last_used), state)
        console = Console(width=None if sys.stdout.isatty() else 200)  # piped: whole paths, not folded
        console.print(table if entries else f"The cache is empty ({root}).")
        if entries:
            console.print(f"{summary(entries)} in {root}")


@cache_app.command("prune", help="Remove entries: by default the stale ones (made for another OpenVINO or torch "
                   "version) and unfinished ones (a crashed conversion's leftovers); with the options also those "
                   "unused for N days, or the least recently used until the rest fit.")
def prune_command(
    unused_days: Annotated[float | None, typer.Option(
        "--unused-days", help="Also remove entries not used for more than this many days.")] = None,
    max_size: Annotated[float | None, typer.Option(
        "--max-size", help="Then remove the least recently used entries until the rest take at most this many GB.",
    )] = None,
    everything: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    setup_logging(False)
    with CliErrors():
        from sdgen.errors import InvalidRequestError, WriteError
        from sdgen.hardware.speed import sdgen_cache_root
        from sdgen.models.caches import choose_pruned, list_caches, remove

        root = sdgen_cache_root()
        pruned = choose_pruned(list_caches(root), unused_days, max_size, everything)
        freed = sum(entry.size for entry in pruned)
        for entry in pruned:
            typer.echo(f"{size_text(entry.size):>9}  {entry.path}")
        if not pruned:
            typer.echo(f"Nothing to remove in {root}.", err=True)
            return
        if dry_run:
            typer.echo(f"Would remove {entries_text(len(pruned))}: {size_text(freed)}.", err=True)
            return
        if not yes and not typer.confirm(f"Remove {entries_text(len(pruned))} ({size_text(freed)})?", default=False,
                                         err=True):
            raise InvalidRequestError("Kept them; pass --yes to remove them without asking.")
        removed, failed = remove(pruned, root)
        freed = sum(entry.size for entry in removed)
        typer.echo(f"Removed {entries_text(len(removed))}: {size_text(freed)} freed.", err=True)
        if failed:
            more = f" ({len(failed) - 1} more could not be removed either)" if len(failed) > 1 else ""
            raise WriteError(f"{failed[0]}{more}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
