"""SD upscale (A1111's "SD upscale" script): `--sd-upscale 2` enlarges --init-image with an upscaler (Lanczos or
a model, sdgen/engine/upscaling.py), cuts the large picture into tiles of --width x --height that overlap by
--sd-upscale-overlap pixels, repaints each tile with image-to-image (the same prompt, seed and strength), and
blends the tiles back with linear ramps across each overlap, so the seams do not show. Memory is bounded by
the tile: the U-Net and VAE only ever see one tile; the large picture is kept as pixels. Each --control steers
its tile with the tile itself as the image, as the tile ControlNet wants (`--control tile=IMAGE:tile_resample`:
IMAGE is only checked; each tile is its own map).

Tiles are placed as A1111 places them: as many as cover the side with the overlap, spread evenly from edge
to edge. The large size is the init image's times the scale, rounded down to a multiple of 8 as A1111's
upscalers round it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import GenerationRequest
    from sdgen.engine.tasks import GeneratedImage, ImageTask

DEFAULT_OVERLAP = 64  # A1111's default tile overlap
SEAM_BLUR = 8  # Ultimate SD Upscale's default mask blur of a seam band
MAX_SCALE = 8
MAX_SIDE = 8192  # of the enlarged picture (its blend keeps 12 bytes a pixel: 800 MB at 8192x8192)


def check_sd_upscale(request: Any, init: Any, mask: Any, native: int, allow_pickle: bool) -> tuple[int, int]:
    """Every rule of SD upscale before loading; the tile's size (--width x --height, else the model's own size,
    no larger than the enlarged picture)."""
    from sdgen.config.specs import check_int
    from sdgen.errors import NAME, InvalidRequestError

    scale, key = request.sd_upscale, "sd_upscale"
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1 < scale <= MAX_SCALE:
        raise InvalidRequestError(f"Invalid {NAME} {scale!r}: must be more than 1 and at most {MAX_SCALE}.", key)
    if init is None:
        raise InvalidRequestError(f"Invalid {NAME} {scale!r}: SD upscale enlarges an --init-image; give one.", key)
    clash = "--mask" if mask is not None else "--hires-scale" if request.hires_scale is not None else None
    clash = "--outpaint" if request.outpaint is not None else clash
    if getattr(request, "adapters", ()):
        clash = "--adapter"  # its map is the whole picture's (a ControlNet is given each tile instead)
    if clash:
        raise InvalidRequestError(f"Invalid {NAME} {scale!r} with {clash}: SD upscale repaints the whole enlarged "
                                  "picture; leave one of them out.", key)
    large = large_size(*init.size, scale)
    if max(large) > MAX_SIDE:  # the enlarged picture is kept whole, as pixels and the blend's sums
        raise InvalidRequestError(f"Invalid {NAME} {scale!r}: the {init.size[0]}x{init.size[1]} init image would "
                                  f"become {large[0]}x{large[1]}, more than {MAX_SIDE} a side; enlarge less.", key)
    tile = [request.width or min(native, large[0]), request.height or min(native, large[1])]
    for index, side in enumerate(("width", "height")):
        check_int(side, tile[index], 64, 4096)
        if tile[index] % 8 or tile[index] > large[index]:
            raise InvalidRequestError(
                f"Invalid {NAME} {tile[index]}: the SD upscale tile must be a multiple of 8 no larger than the "
                f"enlarged picture ({large[0]}x{large[1]}).", side,
            )
    check_int("sd_upscale_overlap", request.sd_upscale_overlap, 0, min(tile) // 2)
    check_int("sd_upscale_seam_fix", request.sd_upscale_seam_fix, 0, min(tile) // 2)
    seam = request.sd_upscale_seam_strength
    if isinstance(seam, bool) or not isinstance(seam, (int, float)) or not 0 < seam <= 1:
        raise InvalidRequestError(f"Invalid {NAME} {seam!r}: must be more than 0 and at most 1.",
                                  "sd_upscale_seam_strength")
    if request.sd_upscale_seam_fix and int(request.num_inference_steps * seam) < 1:
        raise InvalidRequestError(f"Invalid {NAME} {seam!r} with {request.num_inference_steps} steps: the seam bands "
                                  "would run no step; raise one.", "sd_upscale_seam_strength")
    if request.sd_upscale_upscaler != "lanczos":
        from sdgen.models.upscalers import find_upscaler, identify

        name = str(request.sd_upscale_upscaler)
        identify(find_upscaler(name, request.upscaler_dir, allow_pickle, "sd_upscale_upscaler"), "sd_upscale_upscaler")
    return tile[0], tile[1]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` pixels start along a side of `length`, overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [int(index * step) for index in range(count)]


def large_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(int(width * scale) // 8 * 8, 8), max(int(height * scale) // 8 * 8, 8)


def enlarged(request: Any, parts: StableDiffusionParts) -> Image.Image:
    """The init image at the large size: Lanczos, or the upscaler model then Lanczos to the size."""
    from PIL import Image

    picture = request.init_pixels.pixels("RGB")
    size = large_size(picture.width, picture.height, request.sd_upscale)
    if request.sd_upscale_upscaler == "lanczos":
        return picture.resize(size, Image.Resampling.LANCZOS)
    from sdgen.engine.upscaling import loaded_upscaler, upscale_image

    model = loaded_upscaler(parts, request.sd_upscale_upscaler, request.upscaler_dir, "sd_upscale_upscaler")
    return upscale_image(model, picture, *size)


def ramp(size: int, before: int, after: int) -> Any:
    """Weights along a tile's side: rising over the `before` pixels it shares with the tile before it,
    falling over the `after` pixels shared with the next, 1 between (never 0, so every pixel is covered)."""
    import numpy as np

    weights = np.ones(size, dtype=np.float32)
    if before:
        weights[:before] = (np.arange(before, dtype=np.float32) + 1) / (before + 1)
    if after:
        weights[size - after:] = np.minimum(weights[size - after:], (np.arange(after, 0, -1, dtype=np.float32))
                                            / (after + 1))
    return weights


def blend(tiles: list[tuple[int, int, Any]], width: int, height: int, tile_size: tuple[int, int]) -> Image.Image:
    """The tiles ((left, top, RGB array)) joined into one picture, each overlap a weighted mean."""
    import numpy as np
    from PIL import Image

    total = np.zeros((height, width, 3), dtype=np.float32)
    weight = np.zeros((height, width, 1), dtype=np.float32)
    lefts, tops = sorted({left for left, _, _ in tiles}), sorted({top for _, top, _ in tiles})
    tw, th = tile_size
    for left, top, pixels in tiles:
        column, row = lefts.index(left), tops.index(top)
        shared_x = _shared(lefts, column, tw)
        shared_y = _shared(tops, row, th)
        mask = ramp(th, *shared_y)[:, None, None] * ramp(tw, *shared_x)[None, :, None]
        total[top:top + th, left:left + tw] += pixels.astype(np.float32) * mask
        weight[top:top + th, left:left + tw] += mask
    return Image.fromarray(np.clip(np.rint(total / weight), 0, 255).astype(np.uint8))


def _shared(starts: list[int], index: int, size: int) -> tuple[int, int]:
    """(pixels shared with the tile before, with the tile after) along one side."""
    before = starts[index - 1] + size - starts[index] if index > 0 else 0
    after = starts[index] + size - starts[index + 1] if index + 1 < len(starts) else 0
    return max(before, 0), max(after, 0)


def _tile_controls(request: Any, crop: Image.Image) -> tuple[Any, ...]:
    """Each ControlNet steers a tile with the tile itself as its image: the tile ControlNet's way (A1111's SD
    upscale with control_v11f1e_sd15_tile and tile_resample); a preprocessor makes its map from the tile."""
    from sdgen.engine.plugins.control_units import control_units

    return tuple(dataclasses.replace(unit, image=crop) for unit in control_units(request))


def sd_upscaled(
    task: ImageTask, parts: StableDiffusionParts, run_tile: Callable[[GenerationRequest], GeneratedImage]
) -> GeneratedImage:
    """One image of an SD upscale request: every tile repainted by `run_tile` (image-to-image of the tile's
    request, checked and run by the pipeline), blended."""
    import numpy as np

    from sdgen.engine.tasks import GeneratedImage

    request = task.request
    picture = enlarged(request, parts)
    tiles, seconds = [], 0.0
    for top in tile_starts(picture.height, request.height, request.sd_upscale_overlap):
        for left in tile_starts(picture.width, request.width, request.sd_upscale_overlap):
            crop = picture.crop((left, top, left + request.width, top + request.height))
            done = run_tile(_part(task, crop))
            seconds += done.seconds
            tiles.append((left, top, np.asarray(done.image.convert("RGB"))))
    joined = blend(tiles, picture.width, picture.height, (request.width, request.height))
    for box, band in seam_bands(joined.size, request):  # Ultimate SD Upscale's band pass, when asked
        done = run_tile(_part(task, joined.crop(box), mask=band, mask_blur=SEAM_BLUR,
                              strength=request.sd_upscale_seam_strength))
        joined.paste(done.image.convert("RGB"), box[:2])  # outside the band the crop's own pixels came back
        seconds += done.seconds
    return GeneratedImage(request, task.job, joined, seconds, done.vae_dtype)


def _part(task: ImageTask, crop: Image.Image, **changes: Any) -> GenerationRequest:
    """The image-to-image request of one tile or seam band: the image's prompt and seed, the crop as its init
    image (and its ControlNets' image), nothing that would tile or repair it again."""
    from sdgen.engine.request import GenerationRequest

    request = task.request
    given = {field.name: getattr(request, field.name) for field in dataclasses.fields(GenerationRequest)}
    values = {
        "prompt": task.job.prompt, "styles": (), "seed": task.seed, "subseed": task.job.subseed, "num_images": 1,
        "batch_size": 1, "init_image": crop, "sd_upscale": None, "details": (), "restore_faces": None,
        "controls": _tile_controls(request, crop), **changes,
    }
    return GenerationRequest(**given | {key: value for key, value in values.items() if key in given})


def seam_bands(size: tuple[int, int], request: Any) -> list[tuple[tuple[int, int, int, int], Image.Image]]:
    """Ultimate SD Upscale's band pass: for each seam between tiles, the tile-sized crops along it (box) and
    their masks, white over a band `sd_upscale_seam_fix` wide centred on the seam."""
    from PIL import Image, ImageDraw

    band, (width, height), tile = request.sd_upscale_seam_fix, size, (request.width, request.height)
    if not band:
        return []
    lefts = tile_starts(width, tile[0], request.sd_upscale_overlap)
    tops = tile_starts(height, tile[1], request.sd_upscale_overlap)
    found = []
    for axis, starts, across in (("x", lefts, tops), ("y", tops, lefts)):
        side = tile[0] if axis == "x" else tile[1]
        limit = width if axis == "x" else height
        for line in ((a + b + side) // 2 for a, b in zip(starts, starts[1:], strict=False)):
            low = min(max(line - side // 2, 0), limit - side)
            for start in across:
                box = (low, start, low + tile[0], start + tile[1]) if axis == "x" else (
                    start, low, start + tile[0], low + tile[1])
                mask = Image.new("L", tile, 0)
                edge = (line - low - band // 2, line - low + band // 2)
                shape = (edge[0], 0, edge[1], tile[1]) if axis == "x" else (0, edge[0], tile[0], edge[1])
                ImageDraw.Draw(mask).rectangle(shape, fill=255)
                found.append((box, mask))
    return found
