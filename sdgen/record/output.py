"""Where images go: every image's destination planned (and the folder proven writable) before loading,
file names from a template, numbered names claimed when written, atomic writes that never overwrite
unless asked."""

from __future__ import annotations

import errno
import os
import re
import string
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.engine.request import CheckedRequest, OutputSpec
from sdgen.errors import NAME, OutputError, WriteError, os_reason
from sdgen.interrupts import finishing

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

DEFAULT_FOLDER = "outputs"
SLUG_MAX = 60
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what -o FILE may end in: A1111's samples formats


def slugify(text: str, max_length: int = SLUG_MAX) -> str:
    """A short, safe ASCII form of a prompt for file names: [a-z0-9-] only, never empty, never dotted."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    return slug or "image"


NAME_FIELDS = ("index", "seed", "slug", "steps", "scheduler")  # a batch's --name also knows {line}
NAME_MAX = 255  # a file name's bytes where the file system does not say (ext4, APFS, NTFS: 255)
_WIDTH = re.compile(r"\d+")


def check_name_template(template: str, batch: bool = False) -> None:
    """Refuse a --name template that could do more than fill the documented fields with a format spec:
    attribute or index access ({seed.__class__}, {seed[0]}), conversions (!r), nested fields, control
    characters and newlines, or a width no file name holds. OutputError naming the setting."""
    key = "batch_name" if batch else "name"
    known = (*NAME_FIELDS, "line") if batch else NAME_FIELDS
    example = "{line:05d}-{seed}-{slug}" if batch else "{index:05d}-{seed}-{slug}"

    def refuse(problem: str) -> OutputError:
        fields = " ".join("{" + name + "}" for name in known)
        return OutputError(f"Invalid {NAME} {template!r}: {problem}; use fields {fields}, e.g. '{example}'.", key)

    if not isinstance(template, str) or not template.strip():
        raise refuse("an empty name")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in template):
        raise refuse("control characters and newlines cannot be in a file name")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise refuse(str(error)) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in known:
            what = "attribute or index access" if "." in name or "[" in name else "an unknown field"
            raise refuse(f"{{{name}}} is {what}" if name else "a field needs a name")
        if conversion:
            raise refuse(f"{{{name}!{conversion}}}: conversions are not allowed")
        if "{" in spec or "}" in spec:
            raise refuse(f"{{{name}:{spec}}}: nested fields are not allowed")
        if any(int(number) > NAME_MAX for number in _WIDTH.findall(spec or "")):
            raise refuse(f"{{{name}:{spec}}} is wider than a file name ({NAME_MAX} bytes)")


def render_name(
    template: str, *, index: int, seed: int, prompt: str, steps: int, scheduler: str, line: int | None = None
) -> str:
    """Fill the --name template; the result is one file name (no folders), with .png added if missing.

    {line} (the input line number) exists only in batches. The name's length is checked where it is
    planned against its folder (check_file_name).
    """
    key = "name" if line is None else "batch_name"  # the setting the template came from
    check_name_template(template, batch=line is not None)
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
    if "/" in name or "\\" in name or name.startswith(".") or not name.strip() or not name.isprintable():
        raise OutputError(f"Invalid {NAME} {template!r}: gives {name!r}; a name must be a plain file name.", key)
    return name if name.lower().endswith(".png") else name + ".png"


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that the file system holding `folder` (or its nearest existing
    parent) allows."""
    existing = next((p for p in (folder, *folder.parents) if p.is_dir()), Path("."))
    try:
        return int(os.pathconf(existing, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        return NAME_MAX


def check_file_name(path: Path, what: str, key: str) -> None:
    """Refuse a file name longer than its file system allows, before loading (else ENAMETOOLONG at the write).
    `what` is the value the message names: the template or the -o path."""
    size = len(os.fsencode(path.name))
    limit = name_max(path.parent)
    if size > limit:
        raise OutputError(
            f"Invalid {NAME} {what!r}: gives a file name of {size} bytes, more than the {limit} the file system "
            f"allows in {str(path.parent)!r}; use a shorter name.",
            key,
        )


def check_writable_folder(folder: Path, create: bool = True) -> None:
    """Create the folder and write a probe file in it, before any weights load. (os.access says yes to
    root on a read-only file system: only a real write tells.) Without `create` (a dry run), nothing is
    made: the nearest existing folder must be a folder that permissions let us write."""
    if not create:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"Cannot write to {str(folder)!r}: {str(existing)!r} is not a writable folder.")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".sdgen-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"Cannot write to {str(folder)!r}: a file is in the way, not a folder.") from None
    except OSError as error:
        raise OutputError(f"Cannot write to {str(folder)!r}: {os_reason(error)}; choose another -o folder.") from None


@dataclass(frozen=True)
class Target:
    """Where one image goes: stdout (no path, no folder), a fixed file, or the next free number in a
    folder, claimed when the image is written so that runs sharing a folder never take the same name."""

    path: Path | None = None
    folder: Path | None = None
    template: str = ""  # the --name template of a numbered target
    fields: Mapping[str, Any] = field(default_factory=dict)  # its fields other than {index}

    def write(self, data: bytes, overwrite: bool = False) -> Path | None:
        """Write the PNG bytes; returns the file written, or None for stdout."""
        if self.folder is not None:
            return write_numbered(self.folder, self.template, self.fields, data)
        if self.path is not None:
            return write_atomic(self.path, data, overwrite)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return None


def plan_outputs(request: CheckedRequest, output: OutputSpec) -> list[Target]:
    """Every image's destination, decided (and checked) before the model loads."""
    count = request.num_images
    target = output.output
    if target is not None and target != "-":
        target = os.path.expanduser(target)  # a config file's "~/Pictures/sdgen/" is not expanded by a shell
    if target == "-":
        if count != 1:
            raise OutputError(f"-o - writes one PNG to stdout, but --num-images is {count}; use -o DIR/ instead.")
        return [_stdout_target()]
    if target is None or target.endswith(("/", "\\")) or _is_folder(target):
        folder = Path(target or DEFAULT_FOLDER)
        check_writable_folder(folder)
        return _folder_targets(request, folder, output)
    path = Path(target)
    if path.suffix.lower() not in IMAGE_SUFFIXES:  # A1111's formats, the parameters in EXIF for jpg and webp
        raise OutputError(f"Invalid {NAME} {target!r}: sdgen writes PNG, JPEG or WebP; use a name ending in .png, "
                          ".jpg or .webp.", "output")
    check_writable_folder(path.parent)
    paths = [path] if count == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]
    return [_fixed(p, output.overwrite) for p in paths]


def picture_target(output: OutputSpec, template: str, about: str) -> Target:
    """Where one picture of the process (a strip, a grid, a plot) goes: -o FILE.png, -o - for stdout, or
    the next number of `template` ({index} and {slug}, the slug made from `about`) in -o DIR/ or outputs/."""
    target = output.output
    if target == "-":
        return _stdout_target()
    if target is None or target.endswith(("/", "\\")) or _is_folder(os.path.expanduser(target)):
        folder = Path(os.path.expanduser(target or DEFAULT_FOLDER))
        check_writable_folder(folder)
        fields = {"seed": 0, "prompt": about, "steps": 0, "scheduler": ""}
        return Target(folder=folder, template=template, fields=fields)
    path = Path(os.path.expanduser(target))
    if path.suffix.lower() != ".png":
        raise OutputError(f"Invalid {NAME} {target!r}: sdgen writes PNG; use a name ending in .png.", "output")
    return fixed_target(path, output.overwrite)


def _is_folder(target: str) -> bool:
    """-o names a folder that exists; a name the system cannot even look up is a file name, refused later."""
    try:
        return Path(target).is_dir()
    except OSError:
        return False


def fixed_target(path: Path, overwrite: bool) -> Target:
    """A named file: refused now if it exists (without --overwrite) or its folder cannot be written."""
    check_writable_folder(path.parent)
    return _fixed(path, overwrite)


def _stdout_target() -> Target:
    if sys.stdout.isatty():
        raise OutputError("Refusing to write PNG bytes to a terminal; pipe it (-o - | display -) or use -o FILE.")
    return Target()


def _folder_targets(request: CheckedRequest, folder: Path, output: OutputSpec) -> list[Target]:
    fields = [  # each image's prompt with its wildcards expanded
        {"seed": job.seed, "prompt": job.prompt, "steps": request.num_inference_steps, "scheduler": request.scheduler}
        for job in request.jobs
    ]
    if "index" in template_fields(output.name):  # the numbers it will take if the folder stays as it is
        first = next_index(folder, index_pattern(output.name))
        for i, f in enumerate(fields):  # a bad template or a name too long fails here, before loading
            check_file_name(folder / render_name(output.name, index=first + i, **f), output.name, "name")
        return [Target(folder=folder, template=output.name, fields=f) for f in fields]
    paths = [folder / render_name(output.name, index=i, **f) for i, f in enumerate(fields)]
    for path in paths:
        check_file_name(path, output.name, "name")
    if len(set(paths)) < len(paths):
        raise OutputError(
            f"Invalid {NAME} {output.name!r}: gives every image the same file name; put {{index}} or {{seed}} in it.",
            "name",
        )
    return [_fixed(p, output.overwrite) for p in paths]


def _fixed(path: Path, overwrite: bool) -> Target:
    """A named file, checked now: its name's length, a link to nothing (never written through), and an
    existing file (without --overwrite)."""
    check_file_name(path, str(path), "output")
    try:
        exists = path.exists()
        dangling = not exists and path.is_symlink()
    except OSError as error:  # a path too long as a whole, a loop of links ...
        raise OutputError(f"Cannot write {str(path)!r}: {os_reason(error)}; choose another name.") from None
    if dangling:
        raise OutputError(
            f"{str(path)!r} is a symbolic link to {os.readlink(path)!r}, which does not exist; sdgen does not "
            "write through links: remove it or choose another name."
        )
    if exists and not overwrite:
        raise OutputError(f"{str(path)!r} already exists; pass --overwrite to replace it or choose another name.")
    return Target(path=path)


def template_fields(template: str) -> set[str]:
    """The field names a --name template uses: {index:05d}-{seed} -> {"index", "seed"}."""
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:
        return set()


def index_pattern(template: str) -> re.Pattern[str]:
    """Names the template makes, with the number in group 1: "img-{index:04d}" -> ^img\\-(\\d+)\\.png$.
    Other fields match anything: the number counts up across the folder, whatever the prompt or seed."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name:
            parts.append(r"(\d+)" if name.split(".")[0] == "index" else ".*?")
    suffix = "" if template.lower().endswith(".png") else re.escape(".png")
    return re.compile("^" + "".join(parts) + suffix + "$")


def next_index(folder: Path, pattern: re.Pattern[str] | None = None) -> int:
    """One more than the highest number among the folder's files that the template's pattern matches
    (by default `NNNNN-...`)."""
    pattern = pattern or index_pattern("{index:05d}-{seed}-{slug}")
    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
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
    if not overwrite and path.exists():
        raise OutputError(f"{str(path)!r} already exists; pass --overwrite to replace it or choose another name.")
    return _write_through_temp(path.parent, data, lambda temp: _put(temp, path, overwrite), path)


def write_numbered(folder: Path, template: str, fields: Mapping[str, Any], data: bytes) -> Path:
    """Write under the template's next free number in the folder, claimed atomically: two runs that pick
    the same number find out at the link, and the later one takes the next."""
    pattern = index_pattern(template)

    def claim(temp: str) -> Path:
        index = next_index(folder, pattern)
        while True:
            path = folder / render_name(template, index=index, **fields)
            try:
                return _put(temp, path, overwrite=False)
            except OutputError:  # taken since we looked
                index = max(index + 1, next_index(folder, pattern))

    return _write_through_temp(folder, data, claim, folder)


def _write_through_temp(folder: Path, data: bytes, put: Callable[[str], Path], target: Path) -> Path:
    """The bytes into a synced temporary file in `folder`, then `put` gives it its name. A stop signal
    waits for this to finish; any OSError becomes one line naming the file (`target`) and the reason."""
    with finishing():
        temp_name = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temp_name = tempfile.mkstemp(prefix=".sdgen-", suffix=".part", dir=folder)
            os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes 0600; images get the usual permissions
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            return put(temp_name)
        except OSError as error:
            raise WriteError(
                f"Cannot write {str(target)!r}: {os_reason(error)}. Finished images are kept; "
                "free space or fix the folder, then run again."
            ) from None
        finally:
            if temp_name is not None and os.path.exists(temp_name):
                os.unlink(temp_name)


def _put(temp_name: str, path: Path, overwrite: bool) -> Path:
    """Give the written file its name: replace (overwrite), or a hard link that fails if the name is taken."""
    if overwrite:
        os.replace(temp_name, path)
        return path
    try:
        os.link(temp_name, path)
    except FileExistsError:
        raise OutputError(
            f"{str(path)!r} already exists; pass --overwrite to replace it or choose another name."
        ) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        # a file system without hard links: claim the name exclusively, then move the bytes onto it
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise OutputError(f"{str(path)!r} already exists; pass --overwrite to replace it.") from None
        os.replace(temp_name, path)
    return path


_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
