"""POST /sdapi/v1/png-info: the generation parameters of any image (A1111's, sdgen's, one with none), as
A1111 answers: `info` (the parameters text), `items` (the image's other text) and `parameters` (the text
split by A1111's rules: modules/infotext_utils.py's parse_generation_parameters, with the defaults it fills
in for fields an infotext leaves out)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from typing import Any

from sdgen.errors import NAME, InvalidRequestError
from sdgen.record.formats import read_image_text

# A1111's patterns: a `key: value` pair (a value may be JSON-quoted) and a WxH size
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")

# What A1111 fills in for a field an infotext leaves out, in its order
_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Clip skip", "1"), ("Hires resize-1", 0), ("Hires resize-2", 0), ("Hires sampler", "Use same sampler"),
    ("Hires checkpoint", "Use same checkpoint"), ("Hires prompt", ""), ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"), ("Masked content", "original"), ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32), ("RNG", "GPU"), ("Schedule type", "Automatic"), ("Schedule max sigma", 0),
    ("Schedule min sigma", 0), ("Schedule rho", 0), ("VAE Encoder", "Full"), ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def png_info(image: str) -> dict[str, Any]:
    """A1111's answer for a base64 image (a `data:` prefix is fine); an empty one has no parameters."""
    text = image.strip()
    if not text:
        return {"info": "", "items": {}, "parameters": {}}
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"Invalid {NAME}: not valid base64 (send the image's bytes base64-encoded).",
                                  "image") from None
    parameters, _, items = read_image_text(io.BytesIO(data), f"the image ({len(data)} bytes)")
    info = parameters or ""
    return {"info": info, "items": items, "parameters": parse_generation_parameters(info) if info else {}}


def parse_generation_parameters(text: str) -> dict[str, Any]:
    """An infotext as A1111 splits it: Prompt, Negative prompt, each field (a size as `Size-1`, `Size-2`)."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt = negative = ""
    done_with_prompt = False
    for line in (line.strip() for line in lines):
        if line.startswith("Negative prompt:"):
            done_with_prompt, line = True, line[16:].strip()
        if done_with_prompt:
            negative += ("\n" if negative else "") + line
        else:
            prompt += ("\n" if prompt else "") + line
    found: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in _PARAM.findall(last):
        value = _unquote(value)
        size = _SIZE.match(value)
        if size is not None:
            found[f"{key}-1"], found[f"{key}-2"] = size.group(1), size.group(2)
        else:
            found[key] = value
    for key, value in _DEFAULTS:
        found.setdefault(key, value)
    return found


def _unquote(value: str) -> str:
    if not value or value[0] != '"' or value[-1] != '"':
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
