"""Images a user gives (init images, masks, `sdgen info` and `--from` files, server uploads), read safely.

Every such image goes through `open_image` (the header only) and, when its pixels are needed,
`load_checked_image`. Before any pixel is decoded: the file's size, its format (PNG, JPEG, WebP, BMP and
GIF only: no PostScript through Ghostscript, no rarely used decoders) and its pixel count from the header.
Decoding then runs in a small pool (DECODE_SLOTS at a time), so N uploads at once hold at most that many
images' worth of decoding memory. Messages name the image and never carry an object's repr.
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # Pillow's names; JPEG includes MPO (phones' JPEGs)
FORMAT_NAMES = "PNG, JPEG, WebP, BMP or GIF"
MAX_IMAGE_PIXELS = 4096 * 4096  # the largest image sdgen makes (request.MAX_SIZE squared): 16.8 megapixels
MAX_IMAGE_BYTES = 128 * 2**20  # a file larger than this is refused before it is read
DECODE_SLOTS = 2  # images decoded at once, process-wide

_decoding = threading.BoundedSemaphore(DECODE_SLOTS)
_opening = threading.Lock()  # warnings.catch_warnings changes process-wide state: one header at a time
_ADDRESS = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>|0x[0-9a-fA-F]{6,}")


class ImageRefused(InvalidRequestError):
    """An image refused before (or while) decoding; `reason` is the message without the image's name."""

    def __init__(self, message: str, key: str | None = None, reason: str = "") -> None:
        super().__init__(message, key)
        self.reason = reason


def _refuse(label: str, key: str | None, reason: str) -> ImageRefused:
    return ImageRefused(f"Invalid {NAME} {label}: {reason}.", key, reason)


def _clean(text: str) -> str:
    """Pillow's own words without memory addresses or object reprs, on one short line."""
    text = " ".join(_ADDRESS.sub("the data", text).split())
    return text[:200]


def _byte_count(source: Path | str | BinaryIO) -> int:
    if isinstance(source, (str, Path)):
        return Path(source).stat().st_size
    position = source.tell()
    size = source.seek(0, 2)
    source.seek(position)
    return size - position


def _format_of(source: Path | str | BinaryIO, start: int) -> str | None:
    """Which format the first bytes (from `start`) claim, by Pillow's own signature checks (no plug-in runs)."""
    from PIL import Image

    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as handle:
                prefix = handle.read(16)
        else:
            source.seek(start)
            prefix = source.read(16)
    except OSError:  # a folder, a file gone since: no format to name
        return None
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a signature check that fails on odd bytes: not this format
            continue
    return None


def _unidentified(source: Path | str | BinaryIO, start: int, label: str, key: str | None) -> ImageRefused:
    claimed = _format_of(source, start)
    if claimed is None:
        return _refuse(label, key, f"not an image sdgen reads (it reads {FORMAT_NAMES})")
    if claimed in IMAGE_FORMATS:
        return _broken(label, key, claimed, "")
    return _refuse(label, key, f"{claimed}, a format sdgen does not read; convert it to PNG (sdgen reads "
                               f"{FORMAT_NAMES})")


def _broken(label: str, key: str | None, kind: str | None, detail: str) -> ImageRefused:
    what = f"{kind} file" if kind else "image file"
    return _refuse(label, key, f"not an image sdgen can read: a truncated or corrupt {what}"
                               + (f" ({detail})" if detail else ""))


def _too_many(label: str, key: str | None, pixels: str) -> ImageRefused:
    return _refuse(label, key, f"{pixels}, too many pixels to open safely (at most {MAX_IMAGE_PIXELS}, "
                               "e.g. 4096x4096); use a smaller image")


def open_image(
    source: Path | str | BinaryIO, label: str, key: str | None, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Open an image's header (no pixel decoded): ImageRefused naming it as `label` if the file is too large,
    not one of IMAGE_FORMATS, or claims more than `max_pixels` (None: any count Pillow's own decompression-bomb
    guard lets through, for reading metadata only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = _byte_count(source)
    except FileNotFoundError:
        raise _refuse(label, key, "no such file") from None
    except OSError as error:
        raise _refuse(label, key, f"cannot be read ({error.strerror or type(error).__name__})") from None
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        raise _refuse(label, key, "a folder, not an image file")
    if size == 0:
        raise _refuse(label, key, "not an image (empty file)")
    if size > MAX_IMAGE_BYTES:
        raise _refuse(label, key, f"{size} bytes, larger than the {MAX_IMAGE_BYTES // 2**20} MiB sdgen reads; "
                                  "use a smaller file")
    start = 0 if isinstance(source, (str, Path)) else source.tell()
    try:
        with _opening, warnings.catch_warnings():
            action = "ignore" if max_pixels is None else "error"  # past ~89 megapixels Pillow warns
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            image = Image.open(source, formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        count = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_many(label, key, f"{count.group(1)} pixels" if count else "a huge image") from None
    except UnidentifiedImageError:
        raise _unidentified(source, start, label, key) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        detail = _clean(str(error)) or type(error).__name__
        raise _broken(label, key, _format_of(source, start), detail) from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise _too_many(label, key, f"{width}x{height} pixels")
    return image


def load_checked_image(
    source: Path | str | BinaryIO, label: str, key: str | None, mode: str | None = None
) -> Image.Image:
    """Decode an image's first frame after open_image's checks, in the bounded pool; converted to `mode` there
    when given (so the conversion's copy is bounded too). ImageRefused naming `key` and describing the input
    as `label` for anything unreadable: not an image, another format, too large, truncated, corrupt."""
    image = open_image(source, label, key)
    with _decoding:
        try:
            image.load()  # every byte of the first frame: a truncated file fails now, before any weights load
            if mode is not None and image.mode != mode:
                converted = image.convert(mode)
                image.close()
                return converted
            if image.fp is not None and isinstance(source, (str, Path)):  # an animation keeps its file open
                copied = image.copy()
                image.close()
                return copied
            return image
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
            image.close()
            raise _broken(label, key, image.format, _clean(str(error)) or type(error).__name__) from None


def image_label(path: Path | str) -> str:
    """How messages name an image file: its path, quoted."""
    return repr(str(path))


def checked_image_size(image: Path | str | Image.Image, key: str) -> tuple[int, int]:
    """(width, height) of an image after decoding it all (so a bad file fails before any weights load);
    InvalidRequestError naming `key` if it is missing or refused. An image in memory is taken as it is."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.size
    path = Path(image)
    if not path.is_file():
        raise InvalidRequestError(f"Invalid {NAME} {str(path)!r}: no such file.", key)
    with load_checked_image(path, image_label(path), key) as loaded:
        return loaded.size


def open_user_image(image: Path | str | Image.Image, key: str, mode: str | None = None) -> Image.Image:
    """The pixels of an init image or mask given as a path or in memory, through load_checked_image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if mode is None or image.mode == mode else image.convert(mode)
    return load_checked_image(Path(image), image_label(image), key, mode)


class UserImage:
    """An init image or mask of a checked request: decoded once when the request is checked (so a bad file
    fails before any weights load), its pixels then kept for the run instead of read again."""

    def __init__(self, source: Path | str | Image.Image, key: str) -> None:
        from PIL import Image

        if not isinstance(source, Image.Image) and not Path(source).is_file():
            raise InvalidRequestError(f"Invalid {NAME} {str(source)!r}: no such file.", key)
        self.source, self.key = source, key
        self._pixels = open_user_image(source, key)

    @property
    def size(self) -> tuple[int, int]:
        return self._pixels.size

    def pixels(self, mode: str | None = None) -> Image.Image:
        """The decoded image, converted to `mode` when given (a copy; the kept pixels stay as decoded)."""
        return self._pixels if mode is None or self._pixels.mode == mode else self._pixels.convert(mode)
