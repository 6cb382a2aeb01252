"""The request bodies of A1111's txt2img, img2img and options, with its field names, and the one error body
every 4xx and 5xx answer has.

None means "not given": the server's own settings (sdgen serve's flags, preset and config) fill it in.
Fields A1111 has and sdgen does not use (scripts ...) are accepted and ignored, as A1111
ignores fields it does not know; so are fields nobody knows.

Types are strict, as the JSON that A1111 clients send: a whole number is a JSON integer (or a number with no
fraction, `5.0`, as JSON Schema counts it; not `true` or `"5"`), a number is a finite JSON number (an integer is
fine: `"cfg_scale": 7`), text is a JSON string of valid Unicode (no lone surrogates, which no tokenizer or UTF-8
response can carry).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


def _valid_unicode(text: str) -> str:
    """Refuse lone surrogates (JSON's `"\\ud800"`): they cannot be tokenized, written to a PNG or sent back."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PydanticCustomError(
            "unicode", "must be valid Unicode text (character {position} is a lone surrogate)",
            {"position": error.start + 1},  # counted from 1, as the CLI counts
        ) from None
    return text


def _whole_float(value: Any) -> Any:
    """5.0 -> 5: JSON Schema's integer is any number without a fraction (JavaScript cannot tell 5 from 5.0)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Text = Annotated[str, AfterValidator(_valid_unicode)]
Whole = Annotated[int, BeforeValidator(_whole_float)]  # then strict: no bool, no string, no fraction


def _no_default(schema: dict[str, Any]) -> None:
    """A field that may be left out but not sent as null: no `default: null` in its JSON schema."""
    schema.pop("default", None)


class OverrideSettings(BaseModel):
    """A1111 settings for one request. null: the server's. Others A1111 has are accepted and ignored."""

    model_config = STRICT

    sd_model_checkpoint: Text | None = Field(None, description="A title of GET /sdapi/v1/sd-models.")
    sd_vae: Text | None = Field(None, description="Automatic (the server's --vae), None (the model's own), or "
                                                  "a name of GET /sdapi/v1/sd-vae.")
    CLIP_stop_at_last_layers: Whole | None = Field(None, ge=1, le=12, description="Clip skip, 1 to 12.")
    eta_noise_seed_delta: Whole | None = Field(None, ge=0, description="ENSD: the sampler's noise from seed + this.")
    samples_format: Text | None = Field(None, description="png, jpg or webp for this request's images.")
    jpeg_quality: Whole | None = Field(None, ge=1, le=100, description="jpg and webp quality.")
    webp_lossless: bool | None = None
    enable_pnginfo: bool | None = Field(None, description="false: images without parameters.")


class OptionsChanges(BaseModel):
    """POST /sdapi/v1/options: the keys sdgen acts on, typed (null refused); every other key (A1111's, or
    anyone's) is kept as sent and sent back by GET, so a client may send back the whole dict it read."""

    model_config = STRICT | ConfigDict(extra="allow")

    sd_model_checkpoint: Text = Field(None, min_length=1, description="A title of GET /sdapi/v1/sd-models: "
                                      "loads that model (after the running request).", json_schema_extra=_no_default)
    sd_vae: Text = Field(None, description="Automatic, None, or a name of GET /sdapi/v1/sd-vae.",
                         json_schema_extra=_no_default)
    CLIP_stop_at_last_layers: Whole = Field(None, ge=1, le=12, description="Clip skip, 1 to 12.",
                                          json_schema_extra=_no_default)
    samples_format: Text = Field(None, description="png, jpg (or jpeg) or webp: the images' format, as A1111 "
                                 "writes them (jpg and webp: parameters in EXIF).", json_schema_extra=_no_default)
    jpeg_quality: Whole = Field(None, ge=1, le=100, description="jpg and webp quality, 1 to 100.",
                                json_schema_extra=_no_default)
    webp_lossless: bool = Field(None, description="Lossless webp.", json_schema_extra=_no_default)
    enable_pnginfo: bool = Field(None, description="false: images without parameters.",
                                 json_schema_extra=_no_default)
    eta_noise_seed_delta: Whole = Field(None, ge=0, description="ENSD: the sampler's own noise from seed + this.",
                                        json_schema_extra=_no_default)
    randn_source: Text = Field(None, description="CPU (sdgen's default) or GPU/NV (noise drawn on the CUDA "
                               "device; reloads the model).", json_schema_extra=_no_default)


class PngInfoBody(BaseModel):
    """POST /sdapi/v1/png-info."""

    model_config = STRICT

    image: Text = Field("", description="A base64 image (PNG, JPEG, WebP ...; a data: prefix is fine).")


class GenerationBody(BaseModel):
    """The fields txt2img and img2img share."""

    model_config = STRICT

    prompt: Text = ""
    negative_prompt: Text | None = None
    seed: Whole = Field(-1, description="-1: a random seed; image i of the request uses seed + i.")
    steps: Whole | None = None
    cfg_scale: float | None = None
    width: Whole | None = None
    height: Whole | None = None
    sampler_name: Text | None = Field(None, description="A1111's name (Euler a, DPM++ 2M ...) or sdgen's.")
    sampler_index: Text | None = Field(None, description="Old name of sampler_name.")
    scheduler: Text | None = Field(None, description="Schedule type: Automatic, Karras, ... (/sdapi/v1/schedulers).")
    batch_size: Whole = Field(1, description="Images per U-Net call.")
    n_iter: Whole = Field(1, description="How many batches.")
    denoising_strength: float | None = None
    override_settings: OverrideSettings = Field(
        default_factory=OverrideSettings, description="sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers for "
        "this request."
    )
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = Field(False, description="Save into the server's --outdir (when it has one).")
    subseed: Whole = Field(-1, description="Variation seed; -1: a random one. Image i uses subseed + i.")
    subseed_strength: float = Field(0.0, description="How far towards the variation seed's noise (0 to 1).")
    seed_resize_from_h: Whole = Field(-1, description="Draw the noise at this height (with seed_resize_from_w).")
    seed_resize_from_w: Whole = Field(-1, description="Draw the noise at this width; -1 or 0: the image's size.")
    tiling: bool | None = Field(None, description="Seamless tiling on both axes.")
    eta: float | None = Field(None, description="With sampler TCD: its eta (gamma), 0 to 1 (--tcd-eta); A1111's "
                              "eta of other samplers is ignored.")
    styles: list[Text] = Field(default_factory=list, description="Names of GET /sdapi/v1/prompt-styles, in order.")
    alwayson_scripts: dict[str, Any] = Field(
        default_factory=dict, description="Extension settings, {title: {\"args\": [...]}}: Forge's FreeU Integrated, "
        "Perturbed Attention Guidance Integrated, SelfAttentionGuidance Integrated and CFG Rescale (docs/guidance.md), "
        "and the ControlNet extension's units (docs/controlnet.md); others are ignored.",
    )
    # accepted and ignored (A1111 features sdgen does not have)
    restore_faces: bool | None = Field(None, description="Restore faces with the server's --restore-faces model.")


# A 64x64 orange PNG: an init image the docs' "Try it out" (and the fuzz test) can send as it is.
EXAMPLE_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAAUUlEQVR42u3PMQ0AMAgAMJgaNKEYWVPBQdI6aE5XXPbiOAEBAQ"
               "EBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAYF9H3UiAcpo8wskAAAAAElFTkSuQmCC")


class Txt2ImgBody(GenerationBody):
    model_config = STRICT | ConfigDict(json_schema_extra={"examples": [
        {"prompt": "a red fox in the snow", "negative_prompt": "blurry", "seed": 42, "cfg_scale": 7,
         "sampler_name": "Euler a"}]})

    enable_hr: bool = Field(False, description="The hires pass: hr_scale, hr_upscaler, hr_second_pass_steps.")
    hr_scale: float = 2.0
    hr_upscaler: Text | None = Field(None, description="Latent or Lanczos.")
    hr_second_pass_steps: Whole = 0
    hr_resize_x: Whole = 0
    hr_resize_y: Whole = 0


class Img2ImgBody(GenerationBody):
    model_config = STRICT | ConfigDict(json_schema_extra={"examples": [
        {"prompt": "a red fox in the snow, oil painting", "init_images": [EXAMPLE_PNG], "denoising_strength": 0.6,
         "seed": 42}]})

    init_images: list[Text] = Field(default_factory=list, description="One base64 image (a data: prefix is fine).")
    mask: Text | None = Field(None, description="Inpainting: base64 mask, white = repaint.")
    mask_blur: Whole | None = None
    inpainting_mask_invert: Whole = Field(0, description="1: repaint where the mask is black.")
    inpainting_fill: Whole | None = Field(None, ge=0, le=3, description="Masked content: 0 fill, 1 original, "
                                          "2 latent noise, 3 latent nothing. null: the server's (original).")
    include_init_images: bool = False


class ErrorBody(BaseModel):
    """Every error answer, sdgen's own and the web framework's alike (A1111's `error` and `detail`)."""

    error: str = Field(description="The kind: InvalidRequest, Unauthorized, TooLarge, QueueFull, ShuttingDown, "
                                   "NotFound, ... (a failure on the server: the error's class).")
    detail: str = Field(description="One line for a person: the field, the value and what is allowed.")
    field: str | None = Field(None, description="The request field it is about, as the client named it, if any.")


ERROR_KINDS = {
    400: "the body could not be read", 401: "wrong or missing credentials (--api-auth)",
    404: "no such route", 413: "the body is larger than the server allows", 422: "a field breaks a rule or "
    "a limit of this server (the field, its value and the rule are named)", 499: "the client left before it ran",
    500: "the generation failed on the server (out of memory ...)", 503: "the queue is full (Retry-After) or "
    "the server is shutting down",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route: each of its error codes answered with ErrorBody."""
    return {code: {"model": ErrorBody, "description": ERROR_KINDS[code]} for code in codes}
