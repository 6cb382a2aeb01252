"""Image files and the text they carry: A1111's `parameters` and sdgen's record in a PNG's text chunks, and
in a JPEG's or WebP's EXIF as A1111 writes them (its `parameters` in the Exif UserComment, UTF-16 after the
`UNICODE` prefix: piexif's UserComment.dump(..., encoding="unicode"), which A1111 calls), with sdgen's
record in the Exif MakerNote."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sdgen.errors import InvalidRequestError, os_reason

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

A1111_KEY = "parameters"
SDGEN_KEY = "sdgen"
EXIF_IFD, USER_COMMENT, MAKER_NOTE = 0x8769, 0x9286, 0x927C
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}  # A1111's samples_format values
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def image_bytes(
    image: Image.Image, kind: str = "png", parameters: str | None = None, record: str | None = None,
    quality: int = 80, lossless: bool = False,
) -> bytes:
    """The file of an image in one of A1111's formats (png, jpg, webp), carrying `parameters` and sdgen's
    record (JSON text) where given: text chunks in a PNG, EXIF in a JPEG or WebP, as A1111 saves them
    (jpeg_quality for both; webp_lossless)."""
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    kind = FORMATS[kind.lower()]
    buffer = io.BytesIO()
    if kind == "PNG":
        info = None
        if parameters is not None or record is not None:
            info = PngInfo()
            if parameters is not None:
                info.add_text(A1111_KEY, parameters)
            if record is not None:
                info.add_text(SDGEN_KEY, record)
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()
    exif = PILImage.Exif()
    if parameters is not None:
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
    if record is not None:
        exif.get_ifd(EXIF_IFD)[MAKER_NOTE] = record.encode("utf-8")
    rgb = image.convert("RGB") if image.mode not in ("RGB", "L") else image
    options: dict[str, Any] = {"quality": quality, "exif": exif.tobytes()}
    if kind == "WEBP":
        options["lossless"] = lossless
    rgb.save(buffer, format=kind, **options)
    return buffer.getvalue()


def read_image_metadata(path: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """(A1111 parameters text, sdgen record) from a PNG's text chunks, a GIF's comment or a JPEG/WebP's EXIF
    UserComment."""
    parameters, record, _ = read_image_text(Path(path), repr(str(path)))
    return parameters, record


def read_image_text(
    source: Path | BinaryIO, label: str
) -> tuple[str | None, dict[str, Any] | None, dict[str, Any]]:
    """(A1111 parameters text, sdgen record, the image's other text items as A1111's read_info_from_image
    lists them) of a file or an upload; InvalidRequestError naming `label` when it is no readable image."""
    from sdgen.config.images import ImageRefused, open_image

    try:  # the header and text chunks only, of the formats sdgen reads: no pixel is decoded
        with open_image(source, label, None, max_pixels=None) as image:
            info = dict(image.info)
            # a PNG's getexif decodes the whole image to look past its pixels: read EXIF from other formats
            exif = image.getexif() if image.format != "PNG" or "exif" in image.info else None
    except ImageRefused as error:
        raise InvalidRequestError(f"Cannot read {label}: {error.reason}.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # broken EXIF and the like
        reason = os_reason(error) if isinstance(error, OSError) else type(error).__name__
        raise InvalidRequestError(f"Cannot read {label}: not a readable image ({reason}).") from None
    parameters = info.get(A1111_KEY) or info.get("comment")  # PNG text chunk; a GIF's comment
    items = {key: value for key, value in info.items() if key not in _NOT_ITEMS}
    if parameters is None and exif is not None:
        comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)  # Exif IFD -> UserComment, where A1111 puts it in JPEG/WebP
        parameters = _decode_user_comment(comment) if comment else None
        if parameters is not None:
            items["exif comment"] = parameters
    record = None
    chunk = info.get(SDGEN_KEY)
    if chunk is None and exif is not None:
        chunk = exif.get_ifd(EXIF_IFD).get(MAKER_NOTE)  # where sdgen keeps its record in a JPEG or WebP
    if chunk is not None:
        try:
            record = json.loads(chunk)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            record = None
    if isinstance(parameters, bytes):
        parameters = parameters.decode("utf-8", "replace")
    return parameters, record, {key: _text(value) for key, value in items.items()}


# What A1111's read_info_from_image leaves out of `items` (Pillow's own keys), and the parameters themselves
_NOT_ITEMS = frozenset({
    A1111_KEY, "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
    "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop",
})


def _text(value: Any) -> Any:
    """An item as JSON can carry it: text and numbers as they are, bytes decoded, anything else as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _decode_user_comment(comment: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UNICODE, i.e. UTF-16)."""
    if isinstance(comment, str):
        return comment
    prefix, body = comment[:8], comment[8:]
    if prefix.startswith(b"UNICODE"):
        big, little = body.decode("utf-16-be", "replace"), body.decode("utf-16-le", "replace")
        return big if big.isprintable() or "\n" in big and big.replace("\n", "").isprintable() else little
    return body.decode("utf-8", "replace").rstrip("\x00") or None


# A1111's own pattern for `key: value` pairs, where a value may be a JSON-quoted string.
_PARAM = re.compile(r'\s*(\w[\w \-/+]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict[str, Any]:
    """Split A1111 `parameters` text into prompt, negative prompt and its `key: value` fields."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        fields = {key.strip(): _unquote(value) for key, value in _PARAM.findall(lines.pop())}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:") or negative_lines:
            negative_lines.append(line.removeprefix("Negative prompt:").strip() if not negative_lines else line)
        else:
            prompt_lines.append(line)
    return {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines), "fields": fields}


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
