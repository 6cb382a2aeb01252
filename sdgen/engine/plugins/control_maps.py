"""Control maps made from the images a user gives (`make_control_map`: the preprocessors of PREPROCESSORS, as
A1111's ControlNet extension names them; those needing no weights in control_builtins.py, the detectors in
control_detectors.py) and brought to the picture's size as A1111's ControlNet extension does it (its three resize
modes): `resize` stretches the image to the size; `crop` scales it to cover the size, keeping its aspect, and
cuts the overflow off evenly (the extension's default, "Crop and Resize"); `fill` scales it to fit inside,
keeping its aspect, and fills the rest with the median colour of its border pixels ("Resize and Fill"). The
extension scales with OpenCV (area when shrinking, cubic when enlarging); sdgen with Pillow's box filter when
shrinking and Lanczos when enlarging, so edges may differ by a level or two."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.plugins.control_detectors import DETECTORS, NOT_AVAILABLE, check_detector, detect, detector_problem
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch
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


def control_hint(image: Image.Image, width: int, height: int, resize: str, vae_scale: int) -> torch.Tensor:
    """The control map as the ControlNet takes it, as diffusers prepares it: (1, 3, H, W) RGB in [0, 1] at
    width x height; the pixels an RGBA map (the inpaint preprocessor's) holds transparent are -1 there, as
    diffusers' make_inpaint_condition marks the region to repaint for the inpaint ControlNet."""
    import numpy as np
    import torch
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=vae_scale, do_convert_rgb=True, do_normalize=False)
    fitted = fit_control_image(image, width, height, resize)
    hint = processor.preprocess(fitted, height=height, width=width)
    if fitted.mode == "RGBA":
        masked = torch.from_numpy(np.asarray(fitted)[..., 3] < 128)
        hint[:, :, masked] = -1.0
    return hint


@dataclass(frozen=True)
class Slider:
    """One of a preprocessor's two settings (the extension's threshold_a/b sliders): its label, range, default."""

    label: str
    low: float
    high: float
    default: float


@dataclass(frozen=True)
class Preprocessor:
    """What a preprocessor does, whether it works at a processor resolution, and its two settings."""

    does: str
    uses_resolution: bool = True
    a: Slider | None = None
    b: Slider | None = None


_BUILT_IN = {
    "none": Preprocessor("the image is the control map", uses_resolution=False),
    "invert": Preprocessor("white lines on black from black lines on white (a drawing, a scan)", False),
    "canny": Preprocessor("OpenCV's Canny edges", a=Slider("Low Threshold", 1, 255, 100),
                          b=Slider("High Threshold", 1, 255, 200)),
    "threshold": Preprocessor("white where every channel is above the level, black elsewhere",
                              a=Slider("Binarization Threshold", 0, 255, 127)),
    "scribble_xdog": Preprocessor("strokes from a photo: a difference of Gaussians, binarized",
                                  a=Slider("XDoG Threshold", 1, 64, 32)),
    "lineart_standard": Preprocessor("lines from a drawing on a white ground, white on black"),
    "tile_resample": Preprocessor("the image shrunk by the rate (the tile ControlNet's input)", False,
                                  a=Slider("Down Sampling Rate", 1, 8, 1)),
    "shuffle": Preprocessor("the image's content shuffled by a smooth random flow, seeded by the image's seed"),
    "inpaint": Preprocessor("the image with the request's --mask region marked -1 (the inpaint ControlNet)", False),
    "inpaint_only": Preprocessor("as inpaint (A1111's inpaint_only; outside the mask sdgen keeps the image)", False),
}
_DETECTED = {
    "openpose": "body poses (OpenPose)", "openpose_full": "body, hand and face poses (OpenPose)",
    "depth": "depth (MiDaS)", "depth_zoe": "depth (ZoeDepth)", "depth_leres": "depth (LeReS)",
    "normal_bae": "surface normals (NormalBae)", "hed": "soft edges (HED)", "pidinet": "soft edges (PiDiNet)",
    "lineart": "lines of a photo", "lineart_coarse": "coarse lines of a photo", "lineart_anime": "anime lines",
    "mlsd": "straight lines (M-LSD)",
}
_DETECTOR_SLIDERS = {
    "mlsd": (Slider("MLSD Value Threshold", 0.01, 2, 0.1), Slider("MLSD Distance Threshold", 0.01, 20, 0.1)),
    "depth_leres": (Slider("Remove Near %", 0, 100, 0), Slider("Remove Background %", 0, 100, 0)),
}
# A1111's ControlNet extension's module names of the preprocessors sdgen knows -> what each is
PREPROCESSORS: dict[str, Preprocessor] = {
    **_BUILT_IN,
    **{name: Preprocessor(f"{does}; a detector model", True, *_DETECTOR_SLIDERS.get(name, (None, None)))
       for name, does in _DETECTED.items()},
    **{name: Preprocessor(f"segmentation: not available ({why})") for name, why in NOT_AVAILABLE.items()},
}
# the extension's labels (and older names) -> its module names
ALIASES = {
    "binary": "threshold", "depth_midas": "depth", "normalbae": "normal_bae", "softedge_hed": "hed",
    "softedge_pidinet": "pidinet", "lineart_realistic": "lineart", "tile": "tile_resample",
}
NEEDS_OPENCV = frozenset({"canny", "threshold", "scribble_xdog", "lineart_standard", "tile_resample", "shuffle"})
CANNY_THRESHOLDS = (100, 200)
DETECTOR_RESOLUTION = 512  # the extension's default processor resolution, the detectors' when none is given
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048  # the extension's slider


def module_name(word: str) -> str | None:
    """The extension's module name a word spells (itself or an alias), None if it names no preprocessor."""
    word = word.strip().lower()
    return word if word in PREPROCESSORS else ALIASES.get(word)


def missing_library(module: str) -> str | None:
    """What a preprocessor needs that is not installed, as the one line to say (None: nothing)."""
    import importlib.util

    if module in NEEDS_OPENCV and importlib.util.find_spec("cv2") is None:
        return f"the {module} preprocessor needs OpenCV: pip install 'sdgen[controlnet]'"
    if module in DETECTORS or module in NOT_AVAILABLE:
        return detector_problem(module)
    return None


@dataclass(frozen=True)
class MapSettings:
    """How a map is made, by the extension's unit fields (ControlUnit has the same ones): -1 leaves a setting
    to the preprocessor (the image's own size, or 512 for a detector; the slider's default)."""

    module: str = "none"
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    pixel_perfect: bool = False
    resize: str = "crop"  # how the map meets the picture (pixel perfect's estimate depends on it)


def thresholds(settings: Any) -> tuple[float, float]:
    """The unit's threshold_a/b, each the preprocessor's default where left at -1 (-1 where it has none)."""
    spec = PREPROCESSORS[settings.module]
    given = (settings.threshold_a, settings.threshold_b)
    return tuple(  # type: ignore[return-value]
        -1 if slider is None else (slider.default if value == -1 else value)
        for slider, value in zip((spec.a, spec.b), given, strict=True)
    )


def relevant_settings(module: str, processor_res: float = -1, threshold_a: float = -1, threshold_b: float = -1,
                      ) -> dict[str, float]:
    """The settings `module` has, from a client's (an A1111 API unit sends all three to every module, as the
    extension ignores those a preprocessor has no slider for): the others left at -1."""
    spec = PREPROCESSORS[module]
    return {
        "processor_res": int(processor_res) if spec.uses_resolution and processor_res not in (-1, None) else -1,
        "threshold_a": threshold_a if spec.a is not None and threshold_a is not None else -1,
        "threshold_b": threshold_b if spec.b is not None and threshold_b is not None else -1,
    }


def check_settings(settings: Any, key: str | None = "control") -> None:
    """InvalidRequestError for a setting out of its slider's range, or given to a preprocessor without it."""
    spec = PREPROCESSORS[settings.module]
    res = settings.processor_res
    if res != -1 and not (spec.uses_resolution and MIN_RESOLUTION <= res <= MAX_RESOLUTION):
        why = (f"from {MIN_RESOLUTION} to {MAX_RESOLUTION}" if spec.uses_resolution
               else f"the {settings.module} preprocessor works on the image as it is; leave res out")
        raise InvalidRequestError(f"Invalid {{name}} res={res}: {why}.", key)
    for word, slider, value in (("low", spec.a, settings.threshold_a), ("high", spec.b, settings.threshold_b)):
        if value == -1:
            continue
        if slider is None:
            raise InvalidRequestError(
                f"Invalid {{name}} {word}={value:g}: the {settings.module} preprocessor has no threshold "
                f"{'A' if word == 'low' else 'B'}; leave it out.", key)
        if not slider.low <= value <= slider.high:
            raise InvalidRequestError(
                f"Invalid {{name}} {word}={value:g}: the {settings.module} preprocessor's "
                f"{slider.label} is from {slider.low:g} to {slider.high:g}.", key)


def check_detector_weights(module: str, key: str | None = "control") -> None:
    """A detector's weights must be in the Hugging Face cache (nothing to check for the others)."""
    if module in DETECTORS:
        check_detector(module, key)


def check_map_settings(settings: Any, key: str | None = "control") -> None:
    """Every check a map's settings need before it is made: the values, the library, a detector's weights."""
    check_settings(settings, key)
    missing = missing_library(settings.module)
    if missing:
        raise InvalidRequestError(f"Invalid {{name}} {settings.module!r}: {missing}.", key)
    check_detector_weights(settings.module, key)


def pixel_perfect_resolution(image_size: tuple[int, int], width: int, height: int, resize: str) -> int:
    """The extension's pixel perfect: the processor resolution that makes the map's short side land on the
    picture's pixels once fitted (the smaller scale for "Resize and Fill", the larger for the other modes)."""
    raw_w, raw_h = image_size
    scales = (height / raw_h, width / raw_w)
    scale = min(scales) if resize == "fill" else max(scales)
    return int(round(scale * min(raw_h, raw_w)))


def processor_resolution(settings: Any, image_size: tuple[int, int], size: tuple[int, int] | None) -> int | None:
    """The short side the map is made at (None: the image as it is)."""
    if not PREPROCESSORS[settings.module].uses_resolution:
        return None
    if settings.pixel_perfect and size is not None:
        return pixel_perfect_resolution(image_size, *size, settings.resize)
    if settings.processor_res != -1:
        return int(settings.processor_res)
    return DETECTOR_RESOLUTION if settings.module in DETECTORS else None


def make_control_map(
    image: Image.Image, settings: Any, *, size: tuple[int, int] | None = None, seed: int = 0,
    mask: Image.Image | None = None,
) -> Image.Image:
    """The control map `settings` (a MapSettings, a ControlUnit: module, processor_res, threshold_a/b,
    pixel_perfect, resize) make from `image`. `size` is the picture's (width, height), for pixel perfect;
    `seed` seeds shuffle; `mask` (white = repaint) is what the inpaint preprocessors mark."""
    import numpy as np
    from PIL import Image, ImageOps

    from sdgen.engine.plugins import control_builtins

    module, rgb = settings.module, image.convert("RGB")
    if module == "none":
        return image
    if module == "invert":
        return ImageOps.invert(rgb)
    if module in ("inpaint", "inpaint_only"):
        if mask is None:
            raise InvalidRequestError(f"Invalid {{name}} {module!r}: it needs the request's --mask.", "control")
        kept = ImageOps.invert(mask.convert("L").resize(rgb.size))  # alpha 0 where repainted, as A1111 keeps it
        return Image.merge("RGBA", (*rgb.split(), kept))
    threshold_a, threshold_b = thresholds(settings)
    resolution = processor_resolution(settings, rgb.size, size)
    if module in DETECTORS:
        return detect(module, rgb, resolution or DETECTOR_RESOLUTION, threshold_a, threshold_b)
    pixels = np.asarray(rgb)
    if module == "tile_resample":
        return Image.fromarray(control_builtins.tile_resample(pixels, threshold_a, threshold_b))
    cut = np.asarray
    if resolution is not None:
        pixels, cut = control_builtins.at_resolution(pixels, resolution)
    if module == "shuffle":
        return Image.fromarray(control_builtins.shuffle(cut(pixels), seed))
    if module not in control_builtins.FILTERS:
        raise InvalidRequestError(f"Invalid {{name}} {module!r}: {PREPROCESSORS[module].does}.", "control")
    return Image.fromarray(cut(control_builtins.FILTERS[module](pixels, threshold_a, threshold_b)))


def preprocess(image: Image.Image, module: str) -> Image.Image:
    """The control map `module` (a key of PREPROCESSORS) makes from `image` (RGB), every setting its default."""
    return make_control_map(image, MapSettings(module))


def detect_control_map(
    image: str, settings: Any, *, size: tuple[int, int] | None = None, seed: int = 0, mask: str | None = None,
) -> Image.Image:
    """The map `settings` make of the image file `image` (what `sdgen control detect` writes, alone): every
    check first, as a request's (InvalidRequestError naming the setting, before any detector loads)."""
    from sdgen.config.images import load_checked_image

    check_map_settings(settings, "preprocessor")
    if settings.module in ("inpaint", "inpaint_only") and mask is None:
        raise InvalidRequestError(f"Invalid {{name}} {settings.module!r}: it needs --mask.", "preprocessor")
    mask_image = None if mask is None else load_checked_image(mask, f"mask {mask!r}", "mask", mode="L")
    picture = load_checked_image(image, f"image {image!r}", "image", mode="RGB")
    return make_control_map(picture, settings, size=size, seed=seed, mask=mask_image)


def map_settings(
    preprocessor: str, res: int = -1, low: float = -1, high: float = -1, pixel_perfect: bool = False,
    resize: str = "crop",
) -> MapSettings:
    """MapSettings from loose values (the detect command's options), checked: InvalidRequestError naming the
    preprocessor (its names listed), the resize mode or the setting out of range."""
    module = module_name(preprocessor)
    if module is None:
        raise InvalidRequestError(
            f"Invalid {{name}} {preprocessor!r}: use one of {', '.join(PREPROCESSORS)}.", "preprocessor")
    if resize not in ("crop", "resize", "fill"):
        raise InvalidRequestError(f"Invalid {{name}} {resize!r}: use crop, resize or fill.", "resize")
    settings = MapSettings(module, res, low, high, pixel_perfect, resize)
    check_settings(settings, "preprocessor")
    return settings


def check_map_size(size: tuple[int, int], settings: Any, key: str = "control") -> None:
    """Before loading: a unit's processor resolution would not scale its image past MAX_IMAGE_PIXELS."""
    from sdgen.engine.plugins.control_builtins import check_scaled_size

    resolution = getattr(settings, "processor_res", -1)
    if resolution not in (-1, None):
        check_scaled_size(*size, resolution, key)
