"""Control maps made from the images a user gives (the preprocessors that need no weights, PREPROCESSORS) and
brought to the picture's size as A1111's ControlNet extension does it (its three resize
modes): `resize` stretches the image to the size; `crop` scales it to cover the size, keeping its aspect, and
cuts the overflow off evenly (the extension's default, "Crop and Resize"); `fill` scales it to fit inside,
keeping its aspect, and fills the rest with the median colour of its border pixels ("Resize and Fill"). The
extension scales with OpenCV (area when shrinking, cubic when enlarging); sdgen with Pillow's box filter when
shrinking and Lanczos when enlarging, so edges may differ by a level or two."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


def _scaled(image: Image.Image, width: int, height: int) -> Image.Image:
    from PIL import Image

    if image.size == (width, height):
        return image
    shrinking = width * height < image.width * image.height
    return image.resize((width, height), Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS)


def fit_control_image(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """`image` (RGB) at width x height by `mode`: resize, crop or fill."""
    import numpy as np
    from PIL import Image

    if mode == "resize" or image.size == (width, height):
        return _scaled(image, width, height)
    ratio_h, ratio_w = height / image.height, width / image.width
    scale = max(ratio_h, ratio_w) if mode == "crop" else min(ratio_h, ratio_w)
    scaled = _scaled(image, round(image.width * scale), round(image.height * scale))
    if mode == "crop":
        left, top = max(0, (scaled.width - width) // 2), max(0, (scaled.height - height) // 2)
        return scaled.crop((left, top, left + width, top + height))
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]], axis=0)
    colour = np.median(border, axis=0).astype(np.uint8)
    canvas = Image.fromarray(np.tile(colour[None, None], (height, width, 1)))
    canvas.paste(scaled, (max(0, (width - scaled.width) // 2), max(0, (height - scaled.height) // 2)))
    return canvas


# A1111 ControlNet extension's module names of the preprocessors sdgen has built in -> what each does
PREPROCESSORS = {
    "none": "the image is the control map",
    "invert": "white lines on black from black lines on white (a drawing, a scan)",
    "canny": "OpenCV's Canny edges, thresholds 100 and 200 (A1111's defaults); needs sdgen[controlnet]",
}
NEEDS_OPENCV = frozenset({"canny"})
CANNY_THRESHOLDS = (100, 200)


def missing_library(module: str) -> str | None:
    """What a preprocessor needs that is not installed, as the one line to say (None: nothing)."""
    import importlib.util

    if module in NEEDS_OPENCV and importlib.util.find_spec("cv2") is None:
        return f"the {module} preprocessor needs OpenCV: pip install 'sdgen[controlnet]'"
    return None


def preprocess(image: Image.Image, module: str) -> Image.Image:
    """The control map `module` (a key of PREPROCESSORS) makes from `image` (RGB)."""
    if module == "invert":
        from PIL import ImageOps

        return ImageOps.invert(image.convert("RGB"))
    if module == "canny":
        import cv2
        import numpy as np
        from PIL import Image

        edges = cv2.Canny(np.asarray(image.convert("RGB")), *CANNY_THRESHOLDS)  # edges of every channel at once
        return Image.fromarray(np.repeat(edges[..., None], 3, axis=-1))
    return image
