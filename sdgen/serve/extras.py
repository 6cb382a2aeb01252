"""A1111's Extras endpoints: POST /sdapi/v1/extra-single-image and /extra-batch-images enlarge pictures with
the server's --upscaler-dir models (listed by GET /sdapi/v1/upscalers) or Lanczos, as A1111's "Upscale"
postprocessing does it: scale by `upscaling_resize` (resize_mode 0) or to `upscaling_resize_w` x `_h`
(resize_mode 1, cropped to fit when `upscaling_crop`), a second upscaler blended in by
`extras_upscaler_2_visibility`, sizes rounded down to a multiple of 8 as A1111's upscalers round them, and
the "Postprocess upscaler" fields in `html_info`. gfpgan/codeformer visibility restore faces with the server's
--restore-faces model. The checks run before the work is queued; the work runs in the generation queue.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from sdgen.errors import NAME, InvalidRequestError
from sdgen.serve.schema import STRICT, Text, Whole, error_responses

MAX_SIDE = 8192  # A1111's slider limit for the target size


class ExtrasBody(BaseModel):
    """What both Extras endpoints take, with A1111's names and defaults."""

    model_config = STRICT

    resize_mode: Whole = Field(0, ge=0, le=1, description="0: scale by upscaling_resize; 1: to _w x _h.")
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, gt=0, le=16)
    upscaling_resize_w: Whole = Field(512, ge=1, le=MAX_SIDE)
    upscaling_resize_h: Whole = Field(512, ge=1, le=MAX_SIDE)
    upscaling_crop: bool = True
    upscaler_1: Text | None = Field("None", description="A name of GET /sdapi/v1/upscalers.")
    upscaler_2: Text | None = Field("None", description="A second upscaler, blended in.")
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleBody(ExtrasBody):
    image: Text = Field(description="The picture, base64.")


class ImageEntry(BaseModel):
    model_config = STRICT

    data: Text
    name: Text = ""


class ExtrasBatchBody(ExtrasBody):
    imageList: list[ImageEntry] = Field(max_length=64)  # noqa: N815 (A1111's name)


MAX_BATCH_PIXELS = 64 * 1024 * 1024  # the pictures of one extra-batch-images request, decoded
KEPT_MODELS = 3  # upscaler and face models kept between requests, beside the served SD model


def extras_routes(api: APIRouter, engine: Any, auth: tuple[int, ...], wait: Callable[..., Any]) -> None:
    """The two routes; `wait` is the app's wait_for (503 on shutdown, 499 when the client leaves)."""
    kept: dict[str, Any] = {}  # the upscaler and face models used last, for the next request
    answers = error_responses(*auth, 400, 413, 422, 499, 503)

    @api.post("/extra-single-image", responses=answers)
    async def extra_single_image(body: ExtrasSingleBody, request: Request) -> dict[str, Any]:
        job = await run_in_threadpool(_prepare, engine, body, [(body.image, "image")])
        [image], info = await wait(engine, engine.submit(lambda: _upscale_all(engine, kept, body, *job)), request)
        return {"html_info": info, "image": image}

    @api.post("/extra-batch-images", responses=answers)
    async def extra_batch_images(body: ExtrasBatchBody, request: Request) -> dict[str, Any]:
        sent = [(entry.data, f"imageList[{index}].data") for index, entry in enumerate(body.imageList)]
        job = await run_in_threadpool(_prepare, engine, body, sent)
        images, info = await wait(engine, engine.submit(lambda: _upscale_all(engine, kept, body, *job)), request)
        return {"html_info": info, "images": images}


def _prepare(engine: Any, body: ExtrasBody, sent: list[tuple[str, str]]) -> tuple[list[Any], Any, Any, Any]:
    """Every check before the work is queued (off the event loop: decoding and reading headers take a
    moment): (the pictures, upscaler 1, upscaler 2, the face restorer)."""
    from sdgen.serve.translate import decode_image

    settings, pictures, pixels = engine.settings, [], 0
    for text, field in sent:
        pictures.append(decode_image(text, field))
        pixels += pictures[-1].width * pictures[-1].height
        if pixels > MAX_BATCH_PIXELS:
            raise InvalidRequestError(f"Invalid {NAME}: the pictures hold more than {MAX_BATCH_PIXELS // 2**20} "
                                      "megapixels in all; send fewer in one request.", field)
    for picture in pictures:  # the result's size is bounded as A1111's sliders bound it, before any work
        size = target_size(picture.width, picture.height, body)[1]
        if max(size) > MAX_SIDE:
            field = "upscaling_resize" if body.resize_mode == 0 else "upscaling_resize_w"
            raise InvalidRequestError(f"Invalid {NAME}: a {picture.width}x{picture.height} picture would become "
                                      f"{size[0]}x{size[1]}, more than {MAX_SIDE} a side; upscale less.", field)
    first = _upscaler(body.upscaler_1, "upscaler_1", settings)
    second = _upscaler(body.upscaler_2, "upscaler_2", settings) if body.extras_upscaler_2_visibility else None
    restorer = None
    field = "codeformer_visibility" if body.codeformer_visibility > body.gfpgan_visibility else "gfpgan_visibility"
    if getattr(body, field) > 0:
        restorer = _face_restorer(settings, field)
    return pictures, first, second, restorer


def _upscaler(name: str | None, field: str, settings: dict[str, Any]) -> Any:
    """None (no upscaling), "Lanczos", or a listed upscaler file recognised (422 naming the field)."""
    if name is None or name == "None":
        return None
    if name.lower() == "lanczos":
        return "Lanczos"
    from sdgen.models.upscalers import identify
    from sdgen.serve.listings import listed_upscaler

    return identify(listed_upscaler(name, settings, field), field)


def _face_restorer(settings: dict[str, Any], field: str) -> Any:
    """The server's --restore-faces model, found and recognised as a face restorer (422 without one)."""
    from sdgen.engine.face_restore import FACE_RESTORERS
    from sdgen.models.upscalers import find_upscaler, identify

    if not settings.get("restore_faces"):
        raise InvalidRequestError(f"Invalid {NAME}: this server has no face restorer; start sdgen serve with "
                                  "--restore-faces MODEL, or send 0.", field)
    path = find_upscaler(str(settings["restore_faces"]), settings.get("upscaler_dir"),
                         bool(settings.get("allow_unsafe_pickle")), "restore_faces")
    found = identify(path, "restore_faces")
    if found.architecture not in FACE_RESTORERS:
        raise InvalidRequestError(f"Invalid {NAME}: the server's --restore-faces is {found.architecture}, not a face "
                                  "restorer.", field)
    return found


def target_size(width: int, height: int, body: ExtrasBody) -> tuple[float, tuple[int, int]]:
    """(scale, the upscaled size before any crop), as A1111: by a factor, or the factor that covers _w x _h;
    the size rounded down to a multiple of 8."""
    by = body.upscaling_resize
    if body.resize_mode == 1:
        by = max(body.upscaling_resize_w / width, body.upscaling_resize_h / height)
    return by, (max(int(width * by) // 8 * 8, 8), max(int(height * by) // 8 * 8, 8))


def _upscale_all(engine: Any, kept: dict[str, Any], body: ExtrasBody, pictures: list[Any], first: Any,
                 second: Any, restorer: Any) -> tuple[list[str], str]:
    from PIL import Image

    from sdgen.record.output import png_bytes

    images, info = [], ""
    for picture in pictures:
        fields: dict[str, Any] = {}
        result = picture.convert("RGB")
        if first is not None:
            by, size = target_size(result.width, result.height, body)
            fields["Postprocess upscale to" if body.resize_mode == 1 else "Postprocess upscale by"] = (
                f"{body.upscaling_resize_w}x{body.upscaling_resize_h}" if body.resize_mode == 1 else f"{by:g}")
            upscaled = _one(engine, kept, first, result, size)
            fields["Postprocess upscaler"] = _name(first)
            if second is not None:
                other = _one(engine, kept, second, result, size)
                upscaled = Image.blend(upscaled, other, body.extras_upscaler_2_visibility)
                fields["Postprocess upscaler 2"] = _name(second)
            if body.resize_mode == 1 and body.upscaling_crop:
                crop = Image.new("RGB", (body.upscaling_resize_w, body.upscaling_resize_h))
                crop.paste(upscaled, (crop.width // 2 - upscaled.width // 2, crop.height // 2 - upscaled.height // 2))
                upscaled = crop
                fields["Postprocess crop to"] = f"{crop.width}x{crop.height}"
            result = upscaled
        if restorer is not None:  # after upscaling, in the order of A1111's postprocessing scripts
            from sdgen.engine.face_restore import restore_faces

            gfpgan = body.gfpgan_visibility >= body.codeformer_visibility
            visibility = body.gfpgan_visibility if gfpgan else body.codeformer_visibility
            result = restore_faces(_model(engine, kept, restorer), result, visibility)
            fields["GFPGAN visibility" if gfpgan else "CodeFormer visibility"] = f"{visibility:g}"
        images.append(base64.b64encode(png_bytes(result, None)).decode("ascii"))
        info = ", ".join(f"{key}: {value}" for key, value in fields.items())
    return images, f"<p>{info}</p>" if info else ""


def _name(upscaler: Any) -> str:
    return upscaler if isinstance(upscaler, str) else upscaler.name


def _one(engine: Any, kept: dict[str, Any], upscaler: Any, picture: Any, size: tuple[int, int]) -> Any:
    from PIL import Image

    if isinstance(upscaler, str):  # Lanczos
        return picture.resize(size, Image.Resampling.LANCZOS)
    from sdgen.engine.upscaling import upscale_image

    return upscale_image(_model(engine, kept, upscaler), picture, *size)


def _model(engine: Any, kept: dict[str, Any], found: Any) -> Any:
    """A recognised upscaler or face file, loaded once and kept (the KEPT_MODELS used last)."""
    from sdgen.engine.upscaling import upscaler_dtype
    from sdgen.hardware.devices import choose_placement
    from sdgen.models.upscalers import load_upscaler

    key = str(found.path)
    if key not in kept:
        while len(kept) >= KEPT_MODELS:
            kept.pop(next(iter(kept)))
        placement = choose_placement(engine.spec.device, engine.spec.dtype)
        kept[key] = load_upscaler(found, placement.device, upscaler_dtype(placement.device, placement.dtype))
    kept[key] = kept.pop(key)  # the last used goes last
    return kept[key]
