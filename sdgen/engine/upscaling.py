"""Enlarging a picture with an upscaler model (sdgen/models/upscalers.py), tile by tile.

The picture is cut into tiles of `tile` pixels; each goes through the model with `overlap` pixels of its
neighbours around it as context, and only its own part of the output is kept. So memory is bounded by the
tile, not the picture (a 4x of a 2048 picture is 64 tiles of 256), and where a model sees no farther than
`overlap` pixels the tiled picture equals the untiled one; deeper models differ a little along the seams
(measured in tests/test_upscaling.py). The output is gathered in 8 bits, a quarter of the float picture.
After the model, a scale other than the model's own (`--scale 2` with a 4x model) is reached with Lanczos, as
A1111 does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

DEFAULT_TILE = 256  # input pixels a side: a 4x model's 1024x1024 output tile stays in a few hundred MB
DEFAULT_OVERLAP = 16
OnTile = Callable[[int, int], None]  # (tiles done, tiles in all)


def tile_origins(length: int, tile: int) -> list[int]:
    """Where the tiles along one side start: every `tile` pixels (the last one shorter)."""
    return list(range(0, length, tile)) if tile > 0 else [0]


def upscale_with_model(
    model: Any, image: Image.Image, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
    on_tile: OnTile | None = None,
) -> Image.Image:
    """The picture enlarged by the model's own scale, tile by tile (tile 0: in one piece)."""
    import numpy as np
    import torch
    from PIL import Image

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    height, width = rgb.shape[:2]
    scale = model.scale
    out = np.zeros((height * scale, width * scale, 3), dtype=np.uint8)
    size = tile if 0 < tile < max(width, height) else max(width, height)
    rows, columns = tile_origins(height, size), tile_origins(width, size)
    total = len(rows) * len(columns)
    for done, (top, left) in enumerate(((t, lft) for t in rows for lft in columns), start=1):
        bottom, right = min(top + size, height), min(left + size, width)
        # the tile with its context, clipped to the picture
        top_c, left_c = max(top - overlap, 0), max(left - overlap, 0)
        bottom_c, right_c = min(bottom + overlap, height), min(right + overlap, width)
        piece = torch.from_numpy(rgb[top_c:bottom_c, left_c:right_c].transpose(2, 0, 1).copy())[None]
        result = _run(model, piece)
        rows_kept = slice((top - top_c) * scale, (bottom - top_c) * scale)
        columns_kept = slice((left - left_c) * scale, (right - left_c) * scale)
        kept = result[:, rows_kept, columns_kept]
        out[top * scale:bottom * scale, left * scale:right * scale] = to_bytes(kept)
        if on_tile is not None:
            on_tile(done, total)
    return Image.fromarray(out)


def _run(model: Any, piece: Any) -> Any:
    """One tile through the model, (1, 3, h, w) floats in [0, 1] -> (3, h * scale, w * scale) on the CPU."""
    import torch

    from sdgen.errors import GenerationError

    try:
        with torch.inference_mode():
            return model(piece.to(model.device, model.dtype))[0].float().cpu()
    except (RuntimeError, ValueError) as error:  # a model that cannot take this input or precision
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise GenerationError(f"The upscaler failed on a {piece.shape[-1]}x{piece.shape[-2]} tile: {first}") from None


def to_bytes(pixels: Any) -> Any:
    """(3, H, W) floats in [0, 1] -> (H, W, 3) uint8, rounded as spandrel's users (chaiNNer) round."""
    import numpy as np

    return (pixels.clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)


def upscale_image(
    model: Any, image: Image.Image, width: int, height: int, tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP, on_tile: OnTile | None = None,
) -> Image.Image:
    """The picture at width x height: through the model (repeated while it is still too small, as A1111
    runs a 2x model twice for 4x), then Lanczos to the exact size."""
    from PIL import Image

    result = image.convert("RGB")
    while result.width < width or result.height < height:
        result = upscale_with_model(model, result, tile, overlap, on_tile)
        if model.scale == 1:  # a restoration model: once is all it does
            break
    if result.size != (width, height):
        result = result.resize((width, height), Image.Resampling.LANCZOS)
    return result


def loaded_upscaler(parts: Any, name: str, folder: str | None, key: str = "hires_upscaler") -> Any:
    """The upscaler model `name`, loaded once per loaded SD model (kept in parts.plugins) on its device, in its
    VAE's precision where the architecture allows it. The request check has found and recognised the file."""
    from sdgen.models.upscalers import find_upscaler, identify, load_upscaler

    path = find_upscaler(name, folder, allow_pickle=True, key=key)
    kept: dict[str, Any] = parts.plugins.setdefault("upscalers", {})
    if path not in kept:
        placement = parts.placement
        dtype = upscaler_dtype(placement.device, placement.dtype)
        kept[path] = load_upscaler(identify(path, key), placement.device, dtype)
    return kept[path]


def upscaler_dtype(device: str, dtype: str) -> str:
    """float32 off CUDA (spandrel's bfloat16 support breaks some architectures, SwinIR's masks among them, and
    the CPU gains little on convolutions this size); on CUDA the run's precision where the model has it."""
    return dtype if device.startswith("cuda") else "float32"
