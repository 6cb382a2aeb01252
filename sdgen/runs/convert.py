"""`sdgen convert`: a pickled checkpoint's tensors, read weights-only, written once as .safetensors."""

from __future__ import annotations

from pathlib import Path

from sdgen.errors import NAME, InvalidRequestError
from sdgen.models.single_file import PICKLE_SUFFIXES, read_pickled_tensors
from sdgen.record.output import write_atomic


def convert_to_safetensors(source: str, target: str, overwrite: bool = False) -> int:
    """`sdgen convert`: a pickled checkpoint's tensors (read weights-only, see read_pickled_tensors) written
    as .safetensors, atomically, never over an existing file unless asked. Returns how many tensors."""
    from safetensors.torch import save

    path, out = Path(source).expanduser(), Path(target).expanduser()
    if not path.is_file():
        raise InvalidRequestError(f"Invalid {NAME} {source!r}: no such file.", "source")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise InvalidRequestError(
            f"Invalid {NAME} {source!r}: convert reads pickled .ckpt, .pt, .pth or .bin files.", "source"
        )
    if out.suffix.lower() != ".safetensors":
        raise InvalidRequestError(f"Invalid {NAME} {target!r}: the output ends in .safetensors.", "target")
    tensors = read_pickled_tensors(path)
    if not tensors:
        raise InvalidRequestError(f"Invalid {NAME} {source!r}: it holds no tensors.", "source")
    # shared storage (tied weights) cannot be saved as is: each tensor gets its own contiguous copy
    data = save({key: tensor.contiguous().clone() for key, tensor in tensors.items()}, metadata={"format": "pt"})
    write_atomic(out, data, overwrite=overwrite)
    return len(tensors)
