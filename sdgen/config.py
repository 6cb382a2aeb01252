"""What a run is asked to do: frozen dataclasses, defaults, and the checks made before any weights load."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from sdgen.devices import normalize_device, normalize_dtype, normalize_rng
from sdgen.errors import InvalidRequestError
from sdgen.schedulers import DEFAULT_SCHEDULER, scheduler_spec

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# The Hub moved SD1.5 from runwayml/ to stable-diffusion-v1-5/; the old id still appears in every tutorial.
MODEL_ALIASES = {"runwayml/stable-diffusion-v1-5": DEFAULT_MODEL}

DEFAULT_SIZE = 512
MIN_SIZE, MAX_SIZE = 64, 4096
MAX_STEPS = 1000
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed accepts any 64-bit value; keep S+i positive and signed

InitImage = Union[str, Path, "Image.Image"]

SPEED_KEYS = ("attention_slicing", "vae_slicing", "vae_tiling", "offload", "compile")

# The options that make one image, under their CLI names: what metadata records, what a batch line may
# set, what must match for a finished image to count as done.
IMAGE_KEYS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "scheduler",
    "width",
    "height",
    "strength",
    "init_image",
)


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to load and where to run them."""

    model: str = DEFAULT_MODEL  # Hub id or local diffusers folder
    revision: str | None = None  # Hub branch, tag or commit to pin
    device: str = "auto"  # auto, cpu, mps, cuda, cuda:N
    dtype: str = "auto"  # auto, float32, float16, bfloat16
    rng: str = "cpu"  # where the initial noise is drawn: cpu (portable) or device
    offline: bool = False  # never touch the network; use the Hugging Face cache only
    cache_dir: str | None = None  # Hugging Face cache folder; None = the usual one (HF_HOME ...)
    # speed and memory (sdgen/speed.py)
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    offload: str = "none"  # none, model, sequential (CUDA only)
    compile: bool = False

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> ModelSpec:
        """Build from effective settings (sdgen.settings keys); absent keys keep the defaults above."""
        names = ("model", "revision", "device", "dtype", "rng", "offline", *SPEED_KEYS)
        return cls(**{name: values[name] for name in names if name in values})

    def validated(self) -> ModelSpec:
        """Check spellings without probing hardware or touching weights."""
        if not self.model or not self.model.strip():
            raise InvalidRequestError("Invalid --model '': give a Hub id (owner/name) or a local model folder.")
        return replace(
            self,
            device=normalize_device(self.device),
            dtype=normalize_dtype(self.dtype),
            rng=normalize_rng(self.rng),
        )


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt's worth of work: the diffusers names, one field per CLI flag."""

    prompt: str
    negative_prompt: str = ""
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    seed: int | None = None  # None: a random seed, chosen once and reported; image i uses seed + i
    scheduler: str = DEFAULT_SCHEDULER
    width: int | None = None  # None: 512, or the init image's own size for image-to-image
    height: int | None = None
    num_images: int = 1
    batch_size: int = 1  # images per U-Net call; does not change the pictures
    init_image: InitImage | None = None  # image-to-image when set
    strength: float = 0.8  # img2img: how much of the schedule to run (1.0 = ignore the image)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> GenerationRequest:
        """Build from effective settings: the CLI's names (steps, ...) mapped to the diffusers ones."""
        if values.get("prompt") is None:
            raise InvalidRequestError('Missing PROMPT: give a prompt, e.g. sdgen "a cute kitten", or --from IMAGE.')
        renamed = {"steps": "num_inference_steps"}
        fields = {f.name for f in dataclasses.fields(cls)}
        chosen = {renamed.get(key, key): value for key, value in values.items() if renamed.get(key, key) in fields}
        return cls(**chosen)

    @property
    def is_img2img(self) -> bool:
        return self.init_image is not None

    def validated(self) -> GenerationRequest:
        """Check every rule and fill in the seed and size; raises InvalidRequestError naming the value."""
        _check_int("--steps", self.num_inference_steps, 1, MAX_STEPS)
        _check_int("--num-images", self.num_images, 1, 10_000)
        _check_int("--batch-size", self.batch_size, 1, 1024)
        if not isinstance(self.guidance_scale, (int, float)) or not 0 <= self.guidance_scale <= 100:
            raise InvalidRequestError(
                f"Invalid --guidance-scale {self.guidance_scale!r}: must be between 0 and 100 (7.5 is typical)."
            )
        if not isinstance(self.prompt, str):
            raise InvalidRequestError(f"Invalid prompt {self.prompt!r}: must be text.")
        scheduler = scheduler_spec(self.scheduler).name
        seed = self.seed
        if seed is None:
            seed = secrets.randbelow(2**32)  # A1111-sized, so the seed is easy to retype
        _check_int("--seed", seed, 0, MAX_SEED - self.num_images + 1)

        width, height = self.width, self.height
        if self.init_image is not None:
            if not 0 < self.strength <= 1:
                raise InvalidRequestError(
                    f"Invalid --strength {self.strength!r}: must be greater than 0 and at most 1."
                )
            if int(self.num_inference_steps * self.strength) < 1:
                raise InvalidRequestError(
                    f"Invalid --strength {self.strength!r} with --steps {self.num_inference_steps}: that runs no "
                    "denoising step; raise --strength or --steps so that steps x strength >= 1."
                )
            image_size = _init_image_size(self.init_image)
            # An unset side follows the image's aspect ratio, rounded down to a multiple of 8.
            if width is None and height is None:
                width, height = (image_size[0] // 8) * 8, (image_size[1] // 8) * 8
            elif width is None:
                width = max(8, round(image_size[0] * height / image_size[1]) // 8 * 8)
            elif height is None:
                height = max(8, round(image_size[1] * width / image_size[0]) // 8 * 8)
        width = DEFAULT_SIZE if width is None else width
        height = DEFAULT_SIZE if height is None else height
        for flag, value in (("--width", width), ("--height", height)):
            _check_int(flag, value, MIN_SIZE, MAX_SIZE)
            if value % 8:
                raise InvalidRequestError(
                    f"Invalid {flag} {value}: must be a multiple of 8 (the VAE works on 8x8 pixel blocks); "
                    f"try {value // 8 * 8 or 8} or {value // 8 * 8 + 8}."
                )
        return replace(self, seed=seed, scheduler=scheduler, width=width, height=height)

    @property
    def seeds(self) -> list[int]:
        """Image i of a run uses seed + i, so any image can be made again on its own."""
        if self.seed is None:
            raise ValueError("call validated() first: the seed is chosen there")
        return [self.seed + i for i in range(self.num_images)]


def _check_int(flag: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(f"Invalid {flag} {value!r}: must be a whole number from {low} to {high}.")


def _init_image_size(init_image: InitImage) -> tuple[int, int]:
    """Open the init image's header only (cheap, no torch) so a bad file fails before loading."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(init_image, Image.Image):
        return init_image.size
    path = Path(init_image)
    if not path.is_file():
        raise InvalidRequestError(f"Invalid --init-image {str(path)!r}: no such file.")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidRequestError(
            f"Invalid --init-image {str(path)!r}: not an image Pillow can read ({error.__class__.__name__})."
        ) from None
