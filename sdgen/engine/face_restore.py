"""Face restoration, as A1111's "Restore faces": a face restoration model (GFPGAN, and CodeFormer or
RestoreFormer where spandrel's extra architectures and torchvision are there), read by spandrel like the
upscalers (sdgen/models/upscalers.py), run on each face of a finished picture.

Each face OpenCV's detector finds (sdgen/models/detectors.py) is cut out as a square 1.6 times its box,
scaled to the model's 512x512, restored, scaled back, mixed with the original by `--restore-faces-visibility`
(A1111's GFPGAN visibility) and pasted through a blurred ellipse, so pixels away from the faces stay the
picture's own. A1111 aligns each face by five landmarks first (facexlib); sdgen has no landmark detector
that needs no download, so its crops are upright squares: a tilted face is restored tilted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.request import GenerationRequest
    from sdgen.engine.tasks import GeneratedImage

FACE_RESTORERS = ("GFPGAN", "CodeFormer", "RestoreFormer")  # spandrel's names of face restoration architectures
FACE_SIZE = 512  # what GFPGAN and CodeFormer take
MARGIN = 1.6  # the square around a face box that the model sees


def face_square(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A square MARGIN times the box's larger side around its centre, shifted and shrunk to fit the picture."""
    side = min(round(max(box[2] - box[0], box[3] - box[1]) * MARGIN), *size)
    cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    left = min(max(cx - side // 2, 0), size[0] - side)
    top = min(max(cy - side // 2, 0), size[1] - side)
    return left, top, left + side, top + side


def ellipse_mask(size: tuple[int, int], square: tuple[int, int, int, int]) -> Image.Image:
    """White inside the ellipse within the square, blurred by a tenth of it: where a restored face is pasted."""
    from PIL import Image, ImageDraw, ImageFilter

    side = square[2] - square[0]
    inset = side // 10
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((square[0] + inset, square[1] + inset, square[2] - inset, square[3] - inset), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(side // 20, 1)))


def restore_faces(model: Any, picture: Image.Image, visibility: float = 1.0) -> Image.Image:
    """The picture with each face restored by the model (spandrel's FaceSR descriptor)."""
    from PIL import Image

    from sdgen.engine.upscaling import upscale_with_model
    from sdgen.models.detectors import detect, find_detector

    result = picture.convert("RGB")
    for box in detect(find_detector("face", "restore_faces"), result):
        square = face_square(box, result.size)
        face = result.crop(square).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.LANCZOS)
        restored = upscale_with_model(model, face, tile=0)  # a face restorer takes the whole 512 square
        if visibility < 1:
            restored = Image.blend(face, restored, visibility)
        patch = restored.resize((square[2] - square[0], square[3] - square[1]), Image.Resampling.LANCZOS)
        pasted = result.copy()
        pasted.paste(patch, square[:2])
        result = Image.composite(pasted, result, ellipse_mask(result.size, square))
    return result


def restored(result: GeneratedImage, parts: Any) -> GeneratedImage:
    """A finished image with --restore-faces applied (the model loaded once per loaded SD model)."""
    import dataclasses

    from sdgen.engine.upscaling import loaded_upscaler

    request = result.request
    model = loaded_upscaler(parts, request.restore_faces, request.upscaler_dir, "restore_faces")
    return dataclasses.replace(result, image=restore_faces(model, result.image, request.restore_faces_visibility))


def check_face_restorer(request: GenerationRequest, allow_pickle: bool) -> None:
    """--restore-faces before loading: the file found, a face restoration architecture, the face detector."""
    if not request.restore_faces:
        return
    from sdgen.errors import NAME, InvalidRequestError
    from sdgen.models.detectors import find_detector
    from sdgen.models.upscalers import find_upscaler, identify

    name, key = str(request.restore_faces), "restore_faces"
    found = identify(find_upscaler(name, request.upscaler_dir, allow_pickle, key), key)
    if found.architecture not in FACE_RESTORERS:
        raise InvalidRequestError(f"Invalid {NAME} {name!r}: not a face restorer (it is {found.architecture}; "
                                  f"face restorers: {', '.join(FACE_RESTORERS)}).", key)
    visibility = request.restore_faces_visibility
    if isinstance(visibility, bool) or not isinstance(visibility, (int, float)) or not 0 < visibility <= 1:
        raise InvalidRequestError(f"Invalid {NAME} {visibility!r}: must be more than 0 and at most 1.",
                                  "restore_faces_visibility")
    find_detector("face", key)
