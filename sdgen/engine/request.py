"""What a run is asked to do: GenerationRequest as given, CheckedRequest once every check passed, and the
ImageJob of each image. The checks themselves are in sdgen/engine/checking.py.

Their defaults and the mapping from settings keys to their fields come from the table of options in
sdgen/config/options.py; messages name each setting as `{name}` (see sdgen.errors.UsageError).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from sdgen.config.images import load_checked_image as load_checked_image  # the server's name for it
from sdgen.config.options import REQUEST, default
from sdgen.config.specs import MAX_STEPS as MAX_STEPS
from sdgen.config.specs import OutputSpec as OutputSpec
from sdgen.config.specs import PicturesSpec as PicturesSpec
from sdgen.config.specs import fields_for
from sdgen.engine.model_spec import DEFAULT_SIZE
from sdgen.engine.model_spec import ModelSpec as ModelSpec
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.config.images import UserImage
    from sdgen.prompts.limits import PromptLimits
    from sdgen.prompts.networks import EmbeddingRef, LoraRef

MIN_SIZE, MAX_SIZE = 64, 4096
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed accepts any 64-bit value; keep S+i positive and signed
HIRES_UPSCALERS = {"latent": "Latent", "lanczos": "Lanczos"}  # sdgen name -> A1111's

InitImage = Union[str, Path, "Image.Image"]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt's worth of work as given: the diffusers names, one field per option row. None means "not
    given": check_request (sdgen/engine/checking.py) decides it and returns a CheckedRequest."""

    prompt: str
    negative_prompt: str = default("negative_prompt")
    num_inference_steps: int = default("steps")
    guidance_scale: float = default("guidance_scale")
    seed: int | None = None  # None: a random seed, chosen once and reported
    eta_noise_seed_delta: int = default("eta_noise_seed_delta")  # A1111's ENSD: the sampler's noise seed + this
    tcd_eta: float = default("tcd_eta")  # TCD's gamma: the fresh noise of each --scheduler tcd step
    # variation seeds (sdgen/engine/variation.py); with a strength every image keeps the seed, as in A1111
    subseed: int | None = default("subseed")  # None: random when subseed_strength is set; image i: subseed + i
    subseed_strength: float = default("subseed_strength")  # 0: off
    seed_resize_from: str | None = default("seed_resize_from")  # "WxH": the size the noise is drawn at
    tiling: str | None = default("tiling")  # seamless tiling (sdgen/engine/tiling.py): None, both, x or y
    scheduler: str = default("scheduler")
    schedule: str = default("schedule")  # A1111's schedule type; "automatic": the scheduler's own
    width: int | None = None  # None: the model's size (512 for SD 1.x), or the init image's for image-to-image
    height: int | None = None
    num_images: int = default("num_images")
    batch_size: int = default("batch_size")  # images per U-Net call; does not change the pictures
    init_image: InitImage | None = None  # image-to-image when set
    strength: float = default("strength")  # img2img: how much of the schedule to run (1.0 = ignore the image)
    # inpainting (sdgen/engine/inpaint.py): repaint where the mask is white
    mask: InitImage | None = None
    invert_mask: bool = default("invert_mask")
    mask_blur: int = default("mask_blur")
    outpaint: str | None = default("outpaint")  # left=128,top=64: a larger canvas (sdgen/engine/outpaint.py)
    inpaint_fill: str = default("inpaint_fill")  # what the masked region starts from: original, fill, noise, nothing
    # the hires pass: generate, upscale by hires_scale, then img2img at the large size (None: off)
    hires_scale: float | None = default("hires_scale")
    hires_steps: int | None = default("hires_steps")  # None: num_inference_steps
    hires_strength: float = default("hires_strength")
    hires_upscaler: str = default("hires_upscaler")  # latent, lanczos or an upscaler model (sdgen/models/upscalers.py)
    upscaler_dir: str | None = default("upscaler_dir")  # where an upscaler given by name is found
    sd_upscale: float | None = default("sd_upscale")  # enlarge the init image, repaint it tile by tile
    sd_upscale_upscaler: str = default("sd_upscale_upscaler")  # lanczos or an upscaler model
    sd_upscale_overlap: int = default("sd_upscale_overlap")  # pixels the tiles overlap by
    sd_upscale_seam_fix: int = default("sd_upscale_seam_fix")  # band width repainted over each seam; 0: off
    sd_upscale_seam_strength: float = default("sd_upscale_seam_strength")
    details: tuple[str, ...] = ()  # --detail DETECTOR: regions found and inpainted again (sdgen/engine/detail.py)
    detail_prompt: str | None = default("detail_prompt")  # None: the image's prompt
    detail_strength: float = default("detail_strength")
    detail_steps: int | None = default("detail_steps")  # None: num_inference_steps
    detail_padding: int = default("detail_padding")
    detail_blur: int = default("detail_blur")
    restore_faces: str | None = default("restore_faces")  # a face restoration model (sdgen/engine/face_restore.py)
    restore_faces_visibility: float = default("restore_faces_visibility")
    # prompts as A1111 users write them (sdgen/prompts/)
    loras: tuple[str, ...] = ()  # --lora PATH_OR_ID[:SCALE]; <lora:name:0.8> tags in the prompt add to these
    lora_dir: str | None = default("lora_dir")  # where <lora:name> tags find name.safetensors
    embeddings: tuple[str, ...] = ()  # --embedding PATH[:TOKEN]
    embedding_dir: str | None = default("embedding_dir")  # files used when their name is a word of a prompt
    clip_skip: int = default("clip_skip")  # 1: CLIP's last layer; N: the N-th last (A1111's count)
    weighting: bool = default("weighting")  # A1111 emphasis and BREAK; False: the prompt read literally
    wildcard_dir: str | None = default("wildcard_dir")  # where __name__ finds name.txt
    styles: tuple[str, ...] = ()  # --style NAME: A1111 styles, applied to the prompts by check_request
    styles_file: str | None = default("styles_file")  # the styles CSV; None: styles.csv beside the config file
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
    # steering with images (sdgen/engine/plugins/controlnet.py)
    controls: tuple[str, ...] = ()  # --control MODEL=IMAGE[:WEIGHT[:START[:END]]][:MODE][:RESIZE][:PREPROCESSOR]
    control_dir: str | None = default("control_dir")  # where --control NAME=... finds NAME's file
    adapters: tuple[str, ...] = ()  # --adapter MODEL=IMAGE[:WEIGHT][:RESIZE][:PREPROCESSOR] (plugins/t2i_adapter.py)
    adapter_dir: str | None = default("adapter_dir")  # where --adapter NAME=... finds NAME's folder
    ip_adapter: str | None = default("ip_adapter")  # IP-Adapter file, folder or Hub id (plugins/ip_adapter.py)
    ip_images: tuple[str, ...] = ()  # --ip-image: the pictures it follows
    ip_scale: float = default("ip_scale")  # diffusers' set_ip_adapter_scale
    ip_encoder: str | None = default("ip_encoder")  # None: image_encoder beside the adapter's file

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> GenerationRequest:
        """Build from effective settings: the CLI's names (steps, ...) mapped to the diffusers ones."""
        if values.get("prompt") is None:
            raise InvalidRequestError(
                'Missing PROMPT: give a prompt, e.g. sdgen "a cute kitten", or --from IMAGE.', "prompt"
            )
        return cls(prompt=values["prompt"], **fields_for(cls, REQUEST, values))

    @property
    def is_img2img(self) -> bool:
        return self.init_image is not None

    @property
    def prompt_limits(self) -> PromptLimits:
        from sdgen.prompts.limits import PromptLimits

        return PromptLimits(
            self.max_prompt_length, self.max_nesting, self.max_breaks, self.max_networks, self.max_wildcards
        ).checked()


@dataclass(frozen=True)
class ImageJob:
    """One image of a checked request: what may differ from image to image of one request."""

    index: int  # its place in the request
    seed: int  # the request's seed + index (the seed itself with a variation strength, as A1111): check_request
    # A job's fields replace the request's fields of the same name for its image (seed, subseed)
    prompt: str  # wildcards expanded
    template: str  # the prompt as typed (different from `prompt` when wildcards were expanded)
    lora_refs: tuple[LoraRef, ...] = ()  # the LoRAs found for --lora and the prompt's tags
    embedding_refs: tuple[EmbeddingRef, ...] = ()  # the embeddings found for --embedding and --embedding-dir
    subseed: int | None = None  # its variation seed: the request's subseed + index (None: no variation)

    @property
    def expanded(self) -> bool:
        """Whether wildcards made this image's prompt (then the record keeps the template too)."""
        return self.prompt != self.template


@dataclass(frozen=True)
class CheckedRequest(GenerationRequest):
    """A request that passed every check, with nothing left to decide: the seed drawn, the size chosen, the
    init image and mask decoded (once), and one ImageJob per image with its prompt, seed, LoRAs and
    embeddings found. Optional fields remain only where absence is the meaning (no init image, no mask, no
    hires pass, hires steps = the steps)."""

    seed: int = 0
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    applied_styles: tuple[str, ...] = ()  # the --style names whose texts are now in the prompts
    init_pixels: UserImage | None = field(default=None, compare=False, repr=False)
    mask_pixels: UserImage | None = field(default=None, compare=False, repr=False)
    jobs: tuple[ImageJob, ...] = ()

    @property
    def seeds(self) -> list[int]:
        return [job.seed for job in self.jobs]

    @property
    def hires_size(self) -> tuple[int, int]:
        """The hires pass's size: the image's times --hires-scale, rounded down to a multiple of 8."""
        scale = self.hires_scale or 1.0
        return int(self.width * scale) // 8 * 8, int(self.height * scale) // 8 * 8
