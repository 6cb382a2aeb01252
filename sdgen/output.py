"""Where images go: every image's destination planned before loading, file names from a template, atomic
writes that never overwrite unless asked."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from sdgen.errors import NAME, OutputError
from sdgen.request import GenerationRequest, OutputSpec

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

DEFAULT_FOLDER = "outputs"
SLUG_MAX = 60


def slugify(text: str, max_length: int = SLUG_MAX) -> str:
    """A short, safe ASCII form of a prompt for file names: [a-z0-9-] only, never empty, never dotted."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    return slug or "image"


def render_name(
    template: str, *, index: int, seed: int, prompt: str, steps: int, scheduler: str, line: int | None = None
) -> str:
    """Fill the --name template; the result is one file name (no folders), with .png added if missing.

    {line} (the input line number) exists only in batches.
    """
    key = "name" if line is None else "batch_name"  # the setting the template came from
    fields = dict(index=index, seed=seed, slug=slugify(prompt), steps=steps, scheduler=slugify(scheduler, 30))
    if line is not None:
        fields["line"] = line
    try:
        name = template.format(**fields)
    except (KeyError, IndexError, ValueError) as error:
        known = ", ".join("{" + key + "}" for key in fields)
        example = "{line:05d}-{seed}-{slug}" if line is not None else "{index:05d}-{seed}-{slug}"
        raise OutputError(
            f"Invalid {NAME} {template!r}: {error}; use fields {known}, e.g. '{example}'.", key
        ) from None
    if "/" in name or "\\" in name or name.startswith(".") or not name.strip():
        raise OutputError(f"Invalid {NAME} {template!r}: gives {name!r}; a name must be a plain file name.", key)
    return name if name.lower().endswith(".png") else name + ".png"


def check_writable_folder(folder: Path) -> None:
    """Fail before any weights load when images could not be saved."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"Cannot write to {str(folder)!r}: {str(probe)!r} is a file, not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write to {str(folder)!r}: no permission to write in {str(probe)!r}.")


def plan_outputs(request: GenerationRequest, output: OutputSpec) -> list[Path | None]:
    """Every image's destination, decided (and checked) before the model loads; None means stdout."""
    count = request.num_images
    target = output.output
    if target is not None and target != "-":
        target = os.path.expanduser(target)  # a config file's "~/Pictures/sdgen/" is not expanded by a shell
    if target == "-":
        if count != 1:
            raise OutputError(f"-o - writes one PNG to stdout, but --num-images is {count}; use -o DIR/ instead.")
        if sys.stdout.isatty():
            raise OutputError("Refusing to write PNG bytes to a terminal; pipe it (-o - | display -) or use -o FILE.")
        return [None]
    if target is None or target.endswith(("/", "\\")) or Path(target).is_dir():
        folder = Path(target or DEFAULT_FOLDER)
        check_writable_folder(folder)
        first = next_index(folder)
        targets: list[Path | None] = [
            folder
            / render_name(
                output.name,
                index=first + i,
                seed=seed,
                prompt=request.prompt,
                steps=request.num_inference_steps,
                scheduler=request.scheduler,
            )
            for i, seed in enumerate(request.seeds)
        ]
    else:
        path = Path(target)
        if path.suffix.lower() != ".png":
            raise OutputError(f"Invalid {NAME} {target!r}: sdgen writes PNG; use a name ending in .png.", "output")
        check_writable_folder(path.parent)
        targets = [path] if count == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]
    for planned in targets:
        if planned is not None and planned.exists() and not output.overwrite:
            raise OutputError(
                f"{str(planned)!r} already exists; pass --overwrite to replace it or choose another name."
            )
    return targets


def next_index(folder: Path) -> int:
    """Continue numbering after the highest `NNNNN-...png` already in the folder."""
    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := re.match(r"^(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


def png_bytes(image: Image.Image, pnginfo: PngInfo | None = None) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes, overwrite: bool = False) -> Path:
    """Write to a temporary name in the same folder, then move it into place in one step.

    An interrupted run leaves no half-written image. Without `overwrite`, an existing file is never
    replaced: the final step is a hard link, which fails if the name is taken.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise OutputError(f"{str(path)!r} already exists; pass --overwrite to replace it or choose another name.")
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes 0600; images get the usual permissions
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        if overwrite:
            os.replace(temp_name, path)
        else:
            try:
                os.link(temp_name, path)
            except FileExistsError:
                raise OutputError(
                    f"{str(path)!r} already exists; pass --overwrite to replace it or choose another name."
                ) from None
            except OSError:  # file systems without hard links: check, then rename
                if path.exists():
                    raise OutputError(f"{str(path)!r} already exists; pass --overwrite to replace it.") from None
                os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
