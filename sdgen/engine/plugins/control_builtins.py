"""The preprocessors that need no weights, as A1111's ControlNet extension (Mikubill/sd-webui-controlnet,
scripts/preprocessor/ and annotator/) defines them, on RGB uint8 arrays (H, W, 3). Each takes the array (already
at the processor resolution, see `at_resolution`) and its two settings (the extension's threshold_a/b, here
resolved to numbers) and returns the map. OpenCV (the `controlnet` extra) does the filtering, as in the extension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sdgen.config.images import MAX_IMAGE_PIXELS
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

SHUFFLE_CELL = 256  # the extension's ContentShuffleDetector: one random control point per 256 pixels


def check_scaled_size(width: int, height: int, resolution: int, key: str = "control") -> None:
    """InvalidRequestError when the short side scaled to `resolution` takes the long side past MAX_IMAGE_PIXELS
    (a thin image: 16384x1 at 512 would be 8 million pixels wide), as the preprocessors scale."""
    if min(width, height) < 1 or max(width, height) * resolution / min(width, height) * resolution <= MAX_IMAGE_PIXELS:
        return
    raise InvalidRequestError(
        f"Invalid {{name}}: a {width}x{height} control image at processor resolution {resolution} would pass "
        f"{MAX_IMAGE_PIXELS // 10**6} megapixels; crop it nearer to the picture's shape or lower res.", key,
    )


def at_resolution(pixels: np.ndarray, resolution: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The extension's resize_image_with_pad: the short side scaled to `resolution` (OpenCV cubic when
    enlarging, area when shrinking), the edges repeated to a multiple of 64; and the function that cuts a map
    made from it back to the scaled size."""
    import cv2
    import numpy as np

    height, width = pixels.shape[:2]
    scale = float(resolution) / float(min(height, width))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    target_h, target_w = int(np.round(height * scale)), int(np.round(width * scale))
    check_scaled_size(width, height, resolution)
    scaled = cv2.resize(pixels, (target_w, target_h), interpolation=interpolation)
    pad_h, pad_w = -target_h % 64, -target_w % 64
    padded = np.pad(scaled, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), lambda made: np.ascontiguousarray(made[:target_h, :target_w])


def _rgb(gray: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.repeat(gray[..., None], 3, axis=-1) if gray.ndim == 2 else gray


def canny(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    import cv2

    return _rgb(cv2.Canny(pixels, int(low), int(high)))  # edges of every channel at once, as the extension


def threshold(pixels: np.ndarray, level: float, _: float) -> np.ndarray:
    """White where every channel is above `level` (the extension's "threshold", once called "binary")."""
    import numpy as np

    made = np.zeros_like(pixels, dtype=np.uint8)
    made[np.min(pixels, axis=2) > level] = 255
    return made


def scribble_xdog(pixels: np.ndarray, level: float, _: float) -> np.ndarray:
    """A difference of Gaussians (sigmas 0.5 and 5), binarized at `level`: strokes from a photo."""
    import cv2
    import numpy as np

    fine = cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), 0.5)
    coarse = cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    made = np.zeros_like(pixels, dtype=np.uint8)
    made[2 * (255 - dog) > level] = 255
    return made


def lineart_standard(pixels: np.ndarray, _a: float, _b: float) -> np.ndarray:
    """Dark lines on a light ground made white on black: the image less its blur (sigma 6), scaled by the
    median of the clearly dark pixels."""
    import cv2
    import numpy as np

    image = pixels.astype(np.float32)
    blurred = cv2.GaussianBlur(image, (0, 0), 6.0)
    intensity = np.min(blurred - image, axis=2).clip(0, 255)
    dark = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(dark)) if dark.size else 0.0)
    return _rgb((intensity * 127).clip(0, 255).astype(np.uint8))


def tile_resample(pixels: np.ndarray, rate: float, _: float) -> np.ndarray:
    """The image shrunk by `rate` (OpenCV area); below 1.1 it is left as it is, as the extension does."""
    import cv2

    if rate < 1.1:
        return pixels
    height, width = pixels.shape[:2]
    return cv2.resize(pixels, (int(width / rate), int(height / rate)), interpolation=cv2.INTER_AREA)


def _noise_disk(random, height: int, width: int, cell: int):
    """The extension's make_noise_disk: coarse uniform noise, enlarged (cubic) and normalised to [0, 1]."""
    import cv2
    import numpy as np

    noise = random.uniform(low=0, high=1, size=((height // cell) + 2, (width // cell) + 2, 1))
    noise = cv2.resize(noise, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    noise = noise[cell: cell + height, cell: cell + width]
    noise -= np.min(noise)
    noise /= np.max(noise)
    return noise[:, :, None]


def shuffle(pixels: np.ndarray, seed: int) -> np.ndarray:
    """The extension's content shuffle: the image remapped through a smooth random flow. The extension seeds
    NumPy's global generator; a RandomState with the same seed makes the same draws without touching it."""
    import cv2
    import numpy as np

    height, width = pixels.shape[:2]
    random = np.random.RandomState(seed)
    x = _noise_disk(random, height, width, SHUFFLE_CELL) * float(width - 1)
    y = _noise_disk(random, height, width, SHUFFLE_CELL) * float(height - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(pixels, flow, None, cv2.INTER_LINEAR)


# the extension's module name -> the function making its map (shuffle and inpaint take other inputs)
FILTERS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "canny": canny, "threshold": threshold, "scribble_xdog": scribble_xdog, "lineart_standard": lineart_standard,
    "tile_resample": tile_resample,
}
