"""Styles as A1111 keeps them: a CSV file of `name,prompt,negative_prompt`, applied to a prompt by name.

A style's text holding `{prompt}` has the prompt put in its place; any other style's text is appended after
", " (an empty side adds nothing), and the negative prompt likewise with the style's negative prompt, each
style in the order given (A1111's modules/styles.py, merge_prompts). The file is read as A1111 reads it:
UTF-8 with or without a byte-order mark, a header row, quoted fields, the old `name,text` header too.
Where A1111 skips a style it does not know, sdgen refuses it by name, with the choices.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

from sdgen.errors import NAME, InvalidRequestError

STYLES_FILE_NAME = "styles.csv"
MAX_STYLES_BYTES = 4 * 1024 * 1024  # a styles file of thousands of styles is well under this


class Style(NamedTuple):
    name: str
    prompt: str
    negative_prompt: str


def styles_path(styles_file: str | None) -> Path:
    """The styles file: the one given, else styles.csv beside the user config file (`sdgen config --path`)."""
    if styles_file:
        return Path(str(styles_file)).expanduser()
    from sdgen.config.settings import user_config_path

    return user_config_path().parent / STYLES_FILE_NAME


def read_styles(styles_file: str | None, key: str = "styles_file") -> dict[str, Style]:
    """The styles of the file by name, in file order; {} when the default file is not there."""
    path = styles_path(styles_file)
    if not path.is_file():
        if styles_file:
            raise InvalidRequestError(f"Invalid {NAME} {str(styles_file)!r}: no such file.", key)
        return {}
    try:
        if path.stat().st_size > MAX_STYLES_BYTES:
            raise InvalidRequestError(
                f"Invalid {NAME} {str(path)!r}: larger than {MAX_STYLES_BYTES // 2**20} MiB; is it a styles file?", key
            )
        text = path.read_bytes().decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InvalidRequestError(
            f"Invalid {NAME} {str(path)!r}: not a readable styles CSV ({type(error).__name__}); A1111's format is "
            "a header name,prompt,negative_prompt and one style per line.",
            key,
        ) from None
    styles = {}
    for row in rows:
        name = row.get("name")
        if name is None:
            continue
        prompt = row.get("prompt") if "prompt" in row else row.get("text")
        styles[name] = Style(name, prompt or "", row.get("negative_prompt") or "")
    return styles


def merge_prompt(style_text: str, prompt: str) -> str:
    """One style applied to one prompt: into its `{prompt}`, or after ", " (A1111's merge_prompts)."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, names: tuple[str, ...] | list[str], styles_file: str | None
                 ) -> tuple[str, str]:
    """(prompt, negative prompt) with the named styles applied in order; InvalidRequestError for a name the
    file does not have (naming the file and its styles)."""
    styles = read_styles(styles_file)
    for name in names:
        style = styles.get(name)
        if style is None:
            where = str(styles_path(styles_file))
            choices = ", ".join(repr(known) for known in styles) or "none (the file has no styles)"
            if not styles and not styles_path(styles_file).is_file():
                choices = f"none: there is no {where}; give --styles-file"
            raise InvalidRequestError(f"Invalid {NAME} {name!r}: no such style in {where}; choose {choices}.", "style")
        prompt = merge_prompt(style.prompt, prompt)
        negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


def styles_listing(styles_file: str | None) -> list[dict[str, str]]:
    """GET /sdapi/v1/prompt-styles: A1111's shape, one object per style."""
    return [style._asdict() for style in read_styles(styles_file).values()]
