"""What a run is asked to do: frozen dataclasses, and the checks made before any weights load.

Their defaults and the mapping from settings keys to their fields come from the table of options in
sdgen/config/options.py; messages name each setting as `{name}` (see sdgen.errors.UsageError).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from sdgen.config import options
from sdgen.config.images import checked_image_size, image_label
from sdgen.config.images import load_checked_image as load_checked_image  # the server's name for it
from sdgen.config.options import MODEL, OUTPUT, PICTURES, REQUEST, default
from sdgen.config.schedulers import scheduler_spec
from sdgen.engine import plugins
from sdgen.errors import NAME, InvalidRequestError
from sdgen.hardware.devices import normalize_device, normalize_dtype, normalize_rng

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.prompts.limits import PromptLimits
    from sdgen.prompts.networks import EmbeddingRef, LoraRef

DEFAULT_SIZE = 512
MIN_SIZE, MAX_SIZE = 64, 4096
MAX_STEPS = 1000
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed accepts any 64-bit value; keep S+i positive and signed
HIRES_UPSCALERS = {"latent": "Latent", "lanczos": "Lanczos"}  # sdgen name -> A1111's

InitImage = Union[str, Path, "Image.Image"]

@dataclass(frozen=True)
class ModelSpec:
    """Which weights to load and where to run them."""

    model: str = default("model")  # Hub id or local diffusers folder
    vae: str | None = default("vae")  # another VAE: file, folder or Hub id (sdgen/models/vae.py)
    models_dir: str | None = default("models_dir")  # where --model NAME finds NAME.safetensors (A1111's way)
    model_config: str | None = default("model_config")  # architecture configs of a single-file model
    prediction_type: str | None = default("prediction_type")  # epsilon or v_prediction; None: the model's
    allow_unsafe_pickle: bool = default("allow_unsafe_pickle")  # pickled checkpoints, read weights-only
    revision: str | None = default("revision")  # Hub branch, tag or commit to pin
    device: str = default("device")  # auto, cpu, mps, cuda, cuda:N
    dtype: str = default("dtype")  # auto, float32, float16, bfloat16
    rng: str = default("rng")  # where the initial noise is drawn: cpu (portable) or device
    offline: bool = default("offline")  # never touch the network; use the Hugging Face cache only
    cache_dir: str | None = None  # Hugging Face cache folder; None = the usual one (HF_HOME ...)
    # speed and memory (sdgen/hardware/speed.py)
    attention_slicing: bool = default("attention_slicing")
    vae_slicing: bool = default("vae_slicing")
    vae_tiling: bool = default("vae_tiling")
    offload: str = default("offload")  # none, model, sequential (CUDA only)
    compile: bool = default("compile")
    decoder: str | None = default("decoder")  # a tiny autoencoder for the final decode (TAESD)
    token_merging: float = default("token_merging")  # tomesd's ratio; 0: off

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> ModelSpec:
        """Build from effective settings (sdgen.config.settings keys); absent keys keep the defaults above."""
        return cls(**fields_for(cls, MODEL, values))

    def validated(self) -> ModelSpec:
        """Check spellings without probing hardware or touching weights."""
        if not self.model or not self.model.strip():
            raise InvalidRequestError(
                f"Invalid {NAME} '': give a Hub id (owner/name) or a local model folder.", "model"
            )
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            raise InvalidRequestError(
                f"Invalid {NAME} {self.prediction_type!r}: choose epsilon or v_prediction.", "prediction_type"
            )
        from sdgen.models.catalog import find_in_models_dir
        from sdgen.models.single_file import inspect_checkpoint, is_checkpoint_file

        model = self.model
        if self.models_dir and not Path(model).expanduser().exists():
            if not Path(str(self.models_dir)).expanduser().is_dir():
                raise InvalidRequestError(f"Invalid {NAME} {str(self.models_dir)!r}: no such folder.", "models_dir")
            model = find_in_models_dir(model, str(self.models_dir)) or model
        if is_checkpoint_file(model):  # which family, from the header: refused by name before loading
            inspect_checkpoint(model, self.allow_unsafe_pickle)
        if self.vae is not None:
            from sdgen.models.vae import vae_source

            vae_source(str(self.vae))  # a missing file or a pickle: an error now, before any weights load
        ratio = self.token_merging
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 0.75:
            raise InvalidRequestError(
                f"Invalid {NAME} {ratio!r}: a fraction of the tokens from 0 (off) to 0.75 (e.g. 0.5).", "token_merging"
            )
        if self.decoder:  # "" undoes a preset's decoder: the VAE decodes
            _check_local_folder("decoder", str(self.decoder))
        return replace(
            self,
            model=model,
            decoder=self.decoder or None,
            device=normalize_device(self.device),
            dtype=normalize_dtype(self.dtype),
            rng=normalize_rng(self.rng),
        )


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt's worth of work: the diffusers names, one field per CLI flag."""

    prompt: str
    negative_prompt: str = default("negative_prompt")
    num_inference_steps: int = default("steps")
    guidance_scale: float = default("guidance_scale")
    seed: int | None = None  # None: a random seed, chosen once and reported; image i uses seed + i
    scheduler: str = default("scheduler")
    width: int | None = None  # None: 512, or the init image's own size for image-to-image
    height: int | None = None
    num_images: int = default("num_images")
    batch_size: int = default("batch_size")  # images per U-Net call; does not change the pictures
    init_image: InitImage | None = None  # image-to-image when set
    strength: float = default("strength")  # img2img: how much of the schedule to run (1.0 = ignore the image)
    # inpainting (sdgen/engine/inpaint.py): repaint where the mask is white
    mask: InitImage | None = None
    invert_mask: bool = default("invert_mask")
    mask_blur: int = default("mask_blur")
    # the hires pass: generate, upscale by hires_scale, then img2img at the large size (None: off)
    hires_scale: float | None = default("hires_scale")
    hires_steps: int | None = default("hires_steps")  # None: num_inference_steps
    hires_strength: float = default("hires_strength")
    hires_upscaler: str = default("hires_upscaler")  # latent or lanczos
    # prompts as A1111 users write them (sdgen/prompts/)
    loras: tuple[str, ...] = ()  # --lora PATH_OR_ID[:SCALE]; <lora:name:0.8> tags in the prompt add to these
    lora_dir: str | None = default("lora_dir")  # where <lora:name> tags find name.safetensors
    embeddings: tuple[str, ...] = ()  # --embedding PATH[:TOKEN]
    embedding_dir: str | None = default("embedding_dir")  # files used when their name is a word of a prompt
    clip_skip: int = default("clip_skip")  # 1: CLIP's last layer; N: the N-th last (A1111's count)
    weighting: bool = default("weighting")  # A1111 emphasis and BREAK; False: the prompt read literally
    wildcard_dir: str | None = default("wildcard_dir")  # where __name__ finds name.txt
    combinatorial: bool = default("combinatorial")  # every expansion of the wildcards, not one per image
    # limits on the work a prompt may ask for (sdgen/prompts/limits.py)
    max_prompt_length: int = default("max_prompt_length")  # characters of a prompt or negative prompt
    max_nesting: int = default("max_nesting")  # brackets open at once
    max_breaks: int = default("max_breaks")  # BREAKs in one prompt
    max_networks: int = default("max_networks")  # LoRAs and embeddings of one image
    max_wildcards: int = default("max_wildcards")  # wildcard look-ups per image
    # step savers (sdgen/engine/plugins)
    cache_interval: int = default("cache_interval")  # DeepCache: a whole U-Net pass every N-th step
    cfg_end: float = default("cfg_end")  # guidance for the first fraction of the steps only
    # guidance modifiers (sdgen/engine/plugins): each checks its own values
    guidance_rescale: float = default("guidance_rescale")  # 0: off
    freeu: str | None = default("freeu")  # "b1,b2,s1,s2"; None: off
    pag_scale: float = default("pag_scale")  # 0: off
    sag_scale: float = default("sag_scale")  # 0: off
    # filled in by validated() / for_image(): what each image really uses
    default_size: int = DEFAULT_SIZE  # the model's own size (768 for SD 2.x 768-v), used when none is given
    image_prompts: tuple[str, ...] = ()  # the prompt of each image, wildcards expanded
    prompt_template: str | None = None  # an image's prompt before its wildcards were expanded
    lora_refs: tuple[LoraRef, ...] = ()  # the LoRAs found for --lora and the prompt's tags
    embedding_refs: tuple[EmbeddingRef, ...] = ()

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> GenerationRequest:
        """Build from effective settings: the CLI's names (steps, ...) mapped to the diffusers ones."""
        if values.get("prompt") is None:
            raise InvalidRequestError(
                'Missing PROMPT: give a prompt, e.g. sdgen "a cute kitten", or --from IMAGE.', "prompt"
            )
        from sdgen.models.layout import native_size

        model, config, prediction = (values.get(key) for key in ("model", "model_config", "prediction_type"))
        size = native_size(model, config, prediction) or DEFAULT_SIZE
        return cls(prompt=values["prompt"], default_size=size, **fields_for(cls, REQUEST, values))

    @property
    def is_img2img(self) -> bool:
        return self.init_image is not None

    def validated(self) -> GenerationRequest:
        """Check every rule and fill in the seed and size; raises InvalidRequestError naming the value."""
        _check_int("steps", self.num_inference_steps, 1, MAX_STEPS)
        _check_int("num_images", self.num_images, 1, 10_000)
        _check_int("batch_size", self.batch_size, 1, 1024)
        if not isinstance(self.guidance_scale, (int, float)) or not 0 <= self.guidance_scale <= 100:
            raise InvalidRequestError(
                f"Invalid {NAME} {self.guidance_scale!r}: must be between 0 and 100 (7.5 is typical).",
                "guidance_scale",
            )
        self._check_texts()
        scheduler = scheduler_spec(self.scheduler).name
        _check_int("clip_skip", self.clip_skip, 1, 12)
        _check_step_savers(self.cache_interval, self.cfg_end)
        plugins.check_request(self)
        seed = self.seed
        if seed is None:
            seed = secrets.randbelow(2**32)  # A1111-sized, so the seed is easy to retype
        _check_int("seed", seed, 0, MAX_SEED - self.num_images + 1)
        prompts = self._image_prompts(seed)
        _check_int("seed", seed, 0, MAX_SEED - len(prompts) + 1)

        width, height = self.width, self.height
        if self.mask is not None and self.init_image is None:
            raise InvalidRequestError(
                f"Invalid {NAME} {str(self.mask)!r}: a mask says what to repaint of an --init-image; give one.", "mask"
            )
        if self.init_image is not None:
            if not 0 < self.strength <= 1:
                raise InvalidRequestError(
                    f"Invalid {NAME} {self.strength!r}: must be greater than 0 and at most 1.", "strength"
                )
            if int(self.num_inference_steps * self.strength) < 1:
                raise InvalidRequestError(
                    f"Invalid {NAME} {self.strength!r} with {self.num_inference_steps} steps: that runs no "
                    "denoising step; raise the strength or the steps so that steps x strength >= 1.",
                    "strength",
                )
            image_size = checked_image_size(self.init_image, "init_image")  # the whole file, before loading
            if self.mask is not None:
                checked_image_size(self.mask, "mask")
                _check_int("mask_blur", self.mask_blur, 0, 256)
            width, height = sides_from_image(self.init_image, image_size, width, height)
        width = self.default_size if width is None else width
        height = self.default_size if height is None else height
        for key, value in (("width", width), ("height", height)):
            _check_int(key, value, MIN_SIZE, MAX_SIZE)
            if value % 8:
                raise InvalidRequestError(
                    f"Invalid {NAME} {value}: must be a multiple of 8 (the VAE works on 8x8 pixel blocks); "
                    f"try {value // 8 * 8 or 8} or {value // 8 * 8 + 8}.",
                    key,
                )
        self._check_hires(width, height)
        checked = replace(
            self,
            seed=seed,
            scheduler=scheduler,
            width=width,
            height=height,
            num_images=len(prompts),
            loras=tuple(self.loras),
            embeddings=tuple(self.embeddings),
            image_prompts=prompts if prompts != (self.prompt,) * len(prompts) else (),
        )
        for index in {prompt: index for index, prompt in reversed(list(enumerate(prompts)))}.values():
            checked.for_image(index)  # every LoRA and embedding is found now, before any weights load
        return checked

    @property
    def hires_size(self) -> tuple[int, int]:
        """The hires pass's size: the image's times --hires-scale, rounded down to a multiple of 8."""
        assert self.width is not None and self.height is not None and self.hires_scale is not None
        return int(self.width * self.hires_scale) // 8 * 8, int(self.height * self.hires_scale) // 8 * 8

    def _check_hires(self, width: int, height: int) -> None:
        if self.hires_scale is None:
            return
        if not isinstance(self.hires_scale, (int, float)) or not 1 < self.hires_scale <= 8:
            raise InvalidRequestError(
                f"Invalid {NAME} {self.hires_scale!r}: must be more than 1 and at most 8 (2 is typical).", "hires_scale"
            )
        if self.init_image is not None:
            raise InvalidRequestError(
                f"Invalid {NAME} {self.hires_scale!r} with --init-image: the hires pass follows text-to-image; "
                "for image-to-image give the large --width/--height instead.",
                "hires_scale",
            )
        big = max(int(width * self.hires_scale), int(height * self.hires_scale))
        if big > MAX_SIZE:
            raise InvalidRequestError(
                f"Invalid {NAME} {self.hires_scale!r}: {width}x{height} scaled up is {big} pixels on a side, more "
                f"than {MAX_SIZE}; use a smaller scale or size.",
                "hires_scale",
            )
        steps = self.hires_steps if self.hires_steps is not None else self.num_inference_steps
        _check_int("hires_steps", steps, 1, MAX_STEPS)
        if not isinstance(self.hires_strength, (int, float)) or not 0 < self.hires_strength <= 1:
            raise InvalidRequestError(
                f"Invalid {NAME} {self.hires_strength!r}: must be greater than 0 and at most 1.", "hires_strength"
            )
        if int(steps * self.hires_strength) < 1:
            raise InvalidRequestError(
                f"Invalid {NAME} {self.hires_strength!r} with {steps} hires steps: that runs no step; raise one "
                "so that hires steps x strength >= 1.",
                "hires_strength",
            )
        if self.hires_upscaler not in HIRES_UPSCALERS:
            raise InvalidRequestError(
                f"Invalid {NAME} {self.hires_upscaler!r}: choose latent or lanczos.", "hires_upscaler"
            )

    @property
    def prompt_limits(self) -> PromptLimits:
        from sdgen.prompts.limits import PromptLimits

        return PromptLimits(
            self.max_prompt_length, self.max_nesting, self.max_breaks, self.max_networks, self.max_wildcards
        ).checked()

    def _check_texts(self) -> None:
        """The prompt and negative prompt as typed, before wildcards, tokenizer or weights: valid Unicode,
        within the limits, with finite and bounded emphasis weights."""
        from sdgen.prompts.limits import check_text

        limits = self.prompt_limits
        check_text(self.prompt, "prompt", limits, self.weighting)
        check_text(self.negative_prompt, "negative_prompt", limits, self.weighting)

    def _image_prompts(self, seed: int) -> tuple[str, ...]:
        """Each image's prompt: wildcards expanded from the image's seed, or every combination."""
        from sdgen.prompts import wildcards

        if self.image_prompts:  # validated already
            return self.image_prompts
        if not wildcards.has_wildcards(self.prompt):
            return (self.prompt,) * self.num_images
        if self.combinatorial:  # each combination num_images times; image j still has seed + j
            combinations = wildcards.expand_all(self.prompt, self.wildcard_dir, self.max_wildcards)
            self._check_expansions(combinations)
            return tuple(prompt for prompt in combinations for _ in range(self.num_images))
        seeds = [seed + index for index in range(self.num_images)]
        expansions = wildcards.expand_random(self.prompt, seeds, self.wildcard_dir, self.max_wildcards)
        self._check_expansions(expansions)
        return tuple(expansions)

    def _check_expansions(self, prompts: list[str]) -> None:
        """Each expanded prompt within the same limits as a typed one (a wildcard line may add emphasis)."""
        from sdgen.prompts.limits import check_text, quoted

        limits = self.prompt_limits
        for prompt in dict.fromkeys(prompts):
            check_text(prompt, "prompt", limits, self.weighting, f"{quoted(self.prompt)}, expanded to {quoted(prompt)}")

    def for_image(self, index: int) -> GenerationRequest:
        """Image `index`'s own request: its prompt (wildcards expanded, the template kept), and the LoRAs
        and embeddings that prompt names, found on disk (InvalidRequestError naming any that is not)."""
        from sdgen.prompts.limits import check_networks
        from sdgen.prompts.networks import lora_tags, resolve_embeddings, resolve_loras

        request = self
        if self.image_prompts:
            request = replace(self, prompt=self.image_prompts[index], prompt_template=self.prompt, image_prompts=())
        named = len(request.loras) + len(lora_tags(request.prompt)) + len(request.embeddings)
        check_networks(named, self.max_networks, request.prompt)  # before any folder is searched
        request = replace(
            request,
            lora_refs=resolve_loras(request.loras, request.prompt, request.lora_dir),
            embedding_refs=resolve_embeddings(
                request.embeddings, (request.prompt, request.negative_prompt), request.embedding_dir
            ),
        )
        check_networks(len(request.lora_refs) + len(request.embedding_refs), self.max_networks, request.prompt)
        return request

    @property
    def seeds(self) -> list[int]:
        """Image i of a run uses seed + i, so any image can be made again on its own."""
        if self.seed is None:
            raise ValueError("call validated() first: the seed is chosen there")
        return [self.seed + i for i in range(self.num_images)]


def _check_step_savers(cache_interval: object, cfg_end: object) -> None:
    _check_int("cache_interval", cache_interval, 1, MAX_STEPS)
    if isinstance(cfg_end, bool) or not isinstance(cfg_end, (int, float)) or not 0 <= cfg_end <= 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {cfg_end!r}: a fraction of the steps from 0 to 1 (e.g. 0.5; 1 = always).", "cfg_end"
        )


def _check_local_folder(key: str, value: str) -> None:
    """A value written as a path (./x, /x, ~/x) or that exists must be a folder; else it is a Hub id."""
    path = Path(value).expanduser()
    looks_local = value.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "config.json").is_file():
        raise InvalidRequestError(
            f"Invalid {NAME} {value!r}: not a model folder with a config.json; give a folder or a Hub id "
            "(e.g. madebyollin/taesd).",
            key,
        )


def _check_int(key: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(f"Invalid {NAME} {value!r}: must be a whole number from {low} to {high}.", key)


def sides_from_image(image: InitImage, size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """The output size: an unset side follows the image's aspect ratio, rounded down to a multiple of 8. A
    side made so must be one sdgen makes; the message then names the image (its size is what the user chose)."""
    image_width, image_height = size
    if width is not None and height is not None:
        return width, height
    if width is None and height is None:
        width, height = image_width // 8 * 8, image_height // 8 * 8
        derived = (width, height)
        other = f"an image at least {MIN_SIZE}x{MIN_SIZE}" if min(size) < MIN_SIZE else "a smaller image"
    else:
        if width is None:
            width = derived_side = max(8, round(image_width * height / image_height) // 8 * 8)
        else:
            height = derived_side = max(8, round(image_height * width / image_width) // 8 * 8)
        derived, other = (derived_side,), "an image of another shape"
    if not all(MIN_SIZE <= side <= MAX_SIZE for side in derived):  # a side given is checked as given
        shown = f" {image_label(image)}" if isinstance(image, (str, Path)) else ""  # a path, or one in memory
        raise InvalidRequestError(
            f"Invalid {NAME}{shown}: a {image_width}x{image_height} image makes a {width}x{height} one, but each "
            f"side must be from {MIN_SIZE} to {MAX_SIZE} pixels; give the width and height (the image is resized "
            f"to them) or use {other}.",
            "init_image",
        )
    return width, height


@dataclass(frozen=True)
class OutputSpec:
    """Where and how images are written."""

    output: str | None = default("output")  # FILE.png, DIR/, or - for stdout; None: the outputs/ folder
    name: str = default("name")  # file name template of `sdgen PROMPT`
    batch_name: str = default("batch_name")  # file name template of `sdgen batch`
    overwrite: bool = default("overwrite")
    json: bool = default("json")  # one JSON record per image on stdout instead of its path
    metadata: bool = default("metadata")  # A1111 parameters and sdgen's record in each PNG

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> OutputSpec:
        return cls(**fields_for(cls, OUTPUT, values))


PREVIEW_KINDS = ("auto", "approx", "tiny", "full", "none")
ANIMATION_SUFFIXES = (".gif", ".webp")


@dataclass(frozen=True)
class PicturesSpec:
    """The pictures of the process a run makes besides its images: the denoising sequence as a contact
    sheet and an animation, a live preview file, and a grid of the run's images."""

    save_steps: str | None = default("save_steps")  # contact sheet PNG
    every: int | None = default("every")  # a frame every K steps, else `frames` evenly spaced frames
    frames: int = default("frames")
    animation: str | None = default("animation")  # .gif or .webp
    preview: str = default("preview")  # auto, approx, tiny, full or none
    preview_model: str = default("preview_model")  # AutoencoderTiny weights: Hub id or folder
    preview_file: str | None = default("preview_file")  # live preview PNG, rewritten atomically
    preview_every: int = default("preview_every")
    grid: str | None = default("grid")  # the run's images in one labelled PNG

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> PicturesSpec:
        return cls(**fields_for(cls, PICTURES, values))

    @property
    def records_steps(self) -> bool:
        return self.save_steps is not None or self.animation is not None

    def validated(self) -> PicturesSpec:
        """Every check that needs no weights, with paths expanded (a config file's ~ is not a shell's)."""
        if self.preview not in PREVIEW_KINDS:
            choices = ", ".join(PREVIEW_KINDS)
            raise InvalidRequestError(f"Invalid {NAME} {self.preview!r}: choose one of {choices}.", "preview")
        if self.every is not None:
            _check_int("every", self.every, 1, MAX_STEPS)
        _check_int("frames", self.frames, 1, MAX_STEPS)
        _check_int("preview_every", self.preview_every, 1, MAX_STEPS)
        keys = ("save_steps", "animation", "preview_file", "grid")
        paths = {key: str(getattr(self, key)) for key in keys if getattr(self, key) is not None}  # Path from Typer
        for key, path in paths.items():
            suffixes = ANIMATION_SUFFIXES if key == "animation" else (".png",)
            if not path.lower().endswith(suffixes) or path == "-":
                raise InvalidRequestError(
                    f"Invalid {NAME} {path!r}: use a file name ending in {' or '.join(suffixes)}.", key
                )
        expanded = {key: str(Path(path).expanduser()) for key, path in paths.items()}
        return replace(self, **expanded)


def fields_for(cls: type, target: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that feed `target` (a row's target in sdgen/config/options.py), under `cls`'s field names."""
    names = {field.name for field in dataclasses.fields(cls)}
    chosen: dict[str, Any] = {}
    for key, value in values.items():
        option = options.OPTIONS.get(key)
        if option is None or option.target != target:
            continue
        if option.target_field not in names:
            missing = option.target_field
            raise TypeError(f"option {key!r} feeds the {target}, but {cls.__name__} has no field {missing!r}")
        chosen[option.target_field] = value
    return chosen
