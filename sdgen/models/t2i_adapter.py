"""Finding and loading T2I-Adapters (`--adapter MODEL=IMAGE`): a Hub id through the Hugging Face cache
(TencentARC/t2iadapter_canny_sd15v2) or a diffusers folder, also found by a short name in `--adapter-dir`
(`canny` finds the folder t2iadapter_canny_sd15v2). Single files in A1111's layout are not read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError
from sdgen.models.controlnet import PICKLE_SUFFIXES, _looks_like_hub_id

KEY = "adapter"


def _in_adapter_dir(name: str, adapter_dir: str | None) -> Path | None:
    """`name` in the folder: the folder NAME, or the one folder whose name holds NAME as a word
    (t2iadapter_canny_sd15v2 for canny)."""
    if not adapter_dir:
        return None
    folder = Path(adapter_dir).expanduser()
    if (folder / name).exists():
        return folder / name
    if not folder.is_dir():
        return None
    word = re.compile(rf"(^|[_-]){re.escape(name)}([_-]|$)")
    matches = sorted(path for path in folder.iterdir() if path.is_dir() and word.search(path.name))
    if len(matches) > 1:
        names = ", ".join(path.name for path in matches)
        raise InvalidRequestError(
            f"Invalid {{name}} {name!r}: several folders in {str(folder)!r} match ({names}); name one of them.", KEY
        )
    return matches[0] if matches else None


def find_t2i_adapter(name: str, adapter_dir: str | None = None) -> str:
    """Where the T2I-Adapter `name` is: a diffusers folder or a Hub id; InvalidRequestError naming it otherwise."""
    path = _in_adapter_dir(name, adapter_dir) or Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidRequestError(
                f"Invalid {{name}} {name!r}: the folder has no config.json (a diffusers T2I-Adapter folder has).", KEY
            )
        return str(path)
    if path.is_file():
        pickled = path.suffix.lower() in PICKLE_SUFFIXES
        raise InvalidRequestError(
            f"Invalid {{name}} {name!r}: {'a pickled file' if pickled else 'a single file'}; sdgen reads "
            "T2I-Adapters as diffusers folders or Hub ids (TencentARC/t2iadapter_canny_sd15v2).", KEY
        )
    if _looks_like_hub_id(name):
        return name
    where = f" or in --adapter-dir {adapter_dir!r}" if adapter_dir else ""
    raise InvalidRequestError(
        f"Invalid {{name}} {name!r}: no such folder{where}; give a Hub id (TencentARC/t2iadapter_canny_sd15v2) "
        "or a diffusers folder.", KEY
    )


def t2i_adapter_name(source: str) -> str:
    """The name A1111 shows for it: the folder's name, or the Hub id's last part."""
    return Path(source).name if Path(source).exists() else source.rsplit("/", 1)[-1]


def load_t2i_adapter(source: str, dtype: Any = None) -> Any:
    """The T2IAdapter at `source` (find_t2i_adapter's answer), in eval mode."""
    from diffusers import T2IAdapter

    return T2IAdapter.from_pretrained(source, torch_dtype=dtype).eval()
