"""The request bodies of A1111's txt2img and img2img, with its field names and types.

None means "not given": the server's own settings (sdgen serve's flags, preset and config) fill it in.
Fields A1111 has and sdgen does not use (subseed, restore_faces, tiling, styles, scripts ...) are accepted
and ignored, as A1111 ignores fields it does not know; so are fields nobody knows.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerationBody(BaseModel):
    """The fields txt2img and img2img share."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str | None = None
    seed: int = Field(-1, description="-1: a random seed; image i of the request uses seed + i.")
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler_name: str | None = Field(None, description="A1111's name (Euler a, DPM++ 2M ...) or sdgen's.")
    sampler_index: str | None = Field(None, description="Old name of sampler_name.")
    scheduler: str | None = Field(None, description="Schedule type: Automatic, Uniform or Karras.")
    batch_size: int = Field(1, description="Images per U-Net call.")
    n_iter: int = Field(1, description="How many batches.")
    denoising_strength: float | None = None
    override_settings: dict[str, Any] = Field(
        default_factory=dict, description="sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers for this request."
    )
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = Field(False, description="Save into the server's --outdir (when it has one).")
    # accepted and ignored (A1111 features sdgen does not have)
    subseed: int = -1
    subseed_strength: float = 0.0
    restore_faces: bool | None = None
    tiling: bool | None = None
    styles: list[str] = Field(default_factory=list)


class Txt2ImgBody(GenerationBody):
    enable_hr: bool = Field(False, description="The hires pass: hr_scale, hr_upscaler, hr_second_pass_steps.")
    hr_scale: float = 2.0
    hr_upscaler: str | None = Field(None, description="Latent or Lanczos.")
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0


class Img2ImgBody(GenerationBody):
    init_images: list[str] = Field(default_factory=list, description="One base64 image (a data: prefix is fine).")
    mask: str | None = Field(None, description="Inpainting: base64 mask, white = repaint.")
    mask_blur: int | None = None
    inpainting_mask_invert: int = Field(0, description="1: repaint where the mask is black.")
    include_init_images: bool = False
