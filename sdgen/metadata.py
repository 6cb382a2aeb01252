"""What an image remembers of how it was made: A1111's `parameters` text and sdgen's own JSON chunk.

The A1111 text is what A1111, sd-parsers and sd-prompt-reader read; the JSON chunk is lossless and is
what sdgen replays first.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sdgen
from sdgen import plugins
from sdgen.errors import InvalidRequestError
from sdgen.models import StableDiffusionParts
from sdgen.options import OPTIONS
from sdgen.pipeline import GeneratedImage
from sdgen.prompts.networks import short_hash
from sdgen.request import HIRES_UPSCALERS, IMAGE_KEYS, GenerationRequest
from sdgen.schedulers import from_a1111, scheduler_spec
from sdgen.settings import as_kind, kind_name

if TYPE_CHECKING:  # pragma: no cover
    from PIL.PngImagePlugin import PngInfo

log = logging.getLogger("sdgen")

A1111_KEY = "parameters"
SDGEN_KEY = "sdgen"


def _quote(value: object) -> str:
    """A1111 quotes values holding `,` `:` or a newline as JSON strings, so its parser can split them."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


def a1111_parameters(result: GeneratedImage, parts: StableDiffusionParts) -> str:
    """`prompt \\n Negative prompt: ... \\n Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, ...`"""
    request = result.request
    spec = scheduler_spec(request.scheduler)
    fields: list[tuple[str, object]] = [
        ("Steps", request.num_inference_steps),
        ("Sampler", spec.a1111_sampler),
    ]
    if spec.a1111_schedule_type:
        fields.append(("Schedule type", spec.a1111_schedule_type))
    fields += [
        ("CFG scale", _number(request.guidance_scale)),
        ("Seed", result.seed),
        ("Size", f"{request.width}x{request.height}"),
        ("Model", _model_name(parts.source.model)),
    ]
    if parts.vae_name is not None:  # --vae
        fields.append(("VAE", parts.vae_name))
        if parts.vae_hash:
            fields.append(("VAE hash", parts.vae_hash))
    if request.is_img2img:
        fields.append(("Denoising strength", _number(request.strength)))
    if request.mask is not None:
        fields.append(("Mask blur", request.mask_blur))
    if request.hires_scale is not None:  # A1111's hires fix fields; Size stays the first pass's size
        fields.append(("Denoising strength", _number(request.hires_strength)))
        fields.append(("Hires upscale", _number(request.hires_scale)))
        if request.hires_steps is not None:
            fields.append(("Hires steps", request.hires_steps))
        fields.append(("Hires upscaler", HIRES_UPSCALERS[request.hires_upscaler]))
    fields += _prompt_fields(request)
    fields.append(("Version", f"sdgen {sdgen.__version__}"))
    lines = [request.prompt.replace("\n", " ")]
    if request.negative_prompt:
        lines.append("Negative prompt: " + request.negative_prompt.replace("\n", " "))
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields))
    return "\n".join(lines)


def _model_name(model: str) -> str:
    """A1111's `Model`: a checkpoint file's name without its extension, a Hub id's or folder's last part."""
    last = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[0] if last.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin")) else last


def _prompt_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """A1111's fields for clip skip, emphasis off, LoRAs and embeddings (with its short hashes), and the
    Dynamic Prompts extension's `Template`."""
    fields: list[tuple[str, object]] = []
    if request.clip_skip > 1:
        fields.append(("Clip skip", request.clip_skip))
    if not request.weighting:
        fields.append(("Emphasis", "None"))
    hashed = [(lora.name, short_hash(lora.source)) for lora in request.lora_refs]
    if hashed:
        fields.append(("Lora hashes", ", ".join(f"{name}: {digest}" for name, digest in hashed if digest)))
    embedded = [(ref.token, short_hash(ref.path)) for ref in request.embedding_refs]
    if embedded:
        fields.append(("TI hashes", ", ".join(f"{token}: {digest}" for token, digest in embedded)))
    if request.prompt_template is not None:
        fields.append(("Template", request.prompt_template.replace("\n", " ")))
    return [(key, value) for key, value in fields if value != ""]


def image_record(
    request: GenerationRequest, seed: int, model: str, parts: StableDiffusionParts | None = None
) -> dict[str, Any]:
    """Everything needed to make an image again, losslessly, under the CLI's names.

    The one record of an image: the PNG's sdgen chunk is this, a `--json` line adds where the file went
    and how long it took, a batch manifest record adds its line, index, path and status. Without `parts`
    (a plan, a failure before loading) it holds what the request alone says.
    """
    spec = scheduler_spec(request.scheduler)
    record: dict[str, Any] = {
        "sdgen_version": sdgen.__version__,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": seed,
        "steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
        "scheduler": request.scheduler,
        "scheduler_class": spec.class_name,
        "scheduler_options": spec.options,
        "width": request.width,
        "height": request.height,
        "strength": request.strength if request.is_img2img else None,
        "init_image": str(request.init_image) if isinstance(request.init_image, (str, Path)) else None,
        "mask": str(request.mask) if isinstance(request.mask, (str, Path)) else None,
        "invert_mask": request.invert_mask if request.mask is not None else None,
        "mask_blur": request.mask_blur if request.mask is not None else None,
        "lora": [str(spec) for spec in request.loras],
        "embedding": [str(spec) for spec in request.embeddings],
        "clip_skip": request.clip_skip,
        "weighting": request.weighting,
        **_hires_record(request),
        **plugins.request_record(request),  # the step savers' options (sdgen/plugins)
        "model": model,
    }
    for key in ("lora_dir", "embedding_dir"):  # where prompt tags and embedding names were found
        if getattr(request, key) is not None:
            record[key] = str(getattr(request, key))
    if request.prompt_template is not None:
        record["prompt_template"] = request.prompt_template
    if request.lora_refs:
        record["loras"] = [
            {"name": lora.name, "source": lora.source, "scale": lora.scale, "hash": short_hash(lora.source)}
            for lora in request.lora_refs
        ]
    if request.embedding_refs:
        record["embeddings"] = [{"token": ref.token, "path": ref.path} for ref in request.embedding_refs]
    if parts is not None:
        for key in ("model_config", "prediction_type"):  # how a single-file model was read
            if parts.model_spec_values.get(key) is not None:
                record[key] = parts.model_spec_values[key]
        if parts.vae_name is not None:
            record.update(vae=parts.vae_source, vae_hash=parts.vae_hash)
        record.update(plugins.model_record(parts))  # the plug-ins switched on at load time
        record.update(
            revision=parts.source.revision,
            commit=parts.source.commit,
            unet_sha256=parts.source.unet_sha256,
            device=parts.placement.device,
            dtype=parts.placement.dtype,
            vae_dtype=parts.placement.vae_dtype,
            rng=parts.placement.rng,
        )
    return record


def _hires_record(request: GenerationRequest) -> dict[str, Any]:
    on = request.hires_scale is not None
    return {
        "hires_scale": request.hires_scale,
        "hires_steps": request.hires_steps if on else None,
        "hires_strength": request.hires_strength if on else None,
        "hires_upscaler": request.hires_upscaler if on else None,
    }


def result_record(result: GeneratedImage, parts: StableDiffusionParts) -> dict[str, Any]:
    """image_record of a generated image, with the VAE dtype that really decoded it."""
    record = image_record(result.request, result.seed, parts.source.model, parts)
    record["vae_dtype"] = result.vae_dtype or record["vae_dtype"]
    return record


def png_info(result: GeneratedImage, parts: StableDiffusionParts) -> PngInfo:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(A1111_KEY, a1111_parameters(result, parts))
    info.add_text(SDGEN_KEY, json.dumps(result_record(result, parts), ensure_ascii=False, sort_keys=True))
    return info


def _number(value: float) -> str:
    """7.5 -> '7.5', 7.0 -> '7': A1111 writes CFG scale and strength without a trailing .0."""
    return f"{value:g}"


# ---- reading back -------------------------------------------------------------------------------

# A1111's own pattern for `key: value` pairs, where a value may be a JSON-quoted string.
_PARAM = re.compile(r'\s*(\w[\w \-/+]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def read_image_metadata(path: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """(A1111 parameters text, sdgen record) from a PNG's text chunks, a GIF's comment or a JPEG/WebP's EXIF
    UserComment."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            info = dict(image.info)
            exif = image.getexif()
    except (OSError, UnidentifiedImageError) as error:
        raise InvalidRequestError(f"Cannot read {str(path)!r}: not an image Pillow can open ({error}).") from None
    parameters = info.get(A1111_KEY) or info.get("comment")  # PNG text chunk; a GIF's comment
    if parameters is None:
        comment = exif.get_ifd(0x8769).get(0x9286)  # Exif IFD -> UserComment, where A1111 puts it in JPEG/WebP
        parameters = _decode_user_comment(comment) if comment else None
    record = None
    if SDGEN_KEY in info:
        try:
            record = json.loads(info[SDGEN_KEY])
        except json.JSONDecodeError:
            record = None
    if isinstance(parameters, bytes):
        parameters = parameters.decode("utf-8", "replace")
    return parameters, record


def _decode_user_comment(comment: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UNICODE, i.e. UTF-16)."""
    if isinstance(comment, str):
        return comment
    prefix, body = comment[:8], comment[8:]
    if prefix.startswith(b"UNICODE"):
        big, little = body.decode("utf-16-be", "replace"), body.decode("utf-16-le", "replace")
        return big if big.isprintable() or "\n" in big and big.replace("\n", "").isprintable() else little
    return body.decode("utf-8", "replace").rstrip("\x00") or None


def parse_a1111(text: str) -> dict[str, Any]:
    """Split A1111 `parameters` text into prompt, negative prompt and its `key: value` fields."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        fields = {key.strip(): _unquote(value) for key, value in _PARAM.findall(lines.pop())}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:") or negative_lines:
            negative_lines.append(line.removeprefix("Negative prompt:").strip() if not negative_lines else line)
        else:
            prompt_lines.append(line)
    return {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines), "fields": fields}


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


# A1111 fields that are plain numbers: name -> (sdgen setting, type)
_A1111_NUMBERS = {"Steps": ("steps", int), "CFG scale": ("guidance_scale", float), "Seed": ("seed", int),
                  "Clip skip": ("clip_skip", int)}


def request_values_from_image(path: str | Path) -> dict[str, Any]:
    """The generation options an image was made with, under the CLI's names: sdgen's chunk first, else A1111."""
    parameters, record = read_image_metadata(path)
    if isinstance(record, dict) and "picture" in record:  # a strip or grid: its first image
        images = record.get("images") or record.get("cells")
        record = images[0] if isinstance(images, list) and images else None
    if record is not None:
        return _typed_record(path, record)
    if not parameters:
        raise InvalidRequestError(
            f"{str(path)!r} holds no generation parameters (no sdgen chunk, no A1111 `parameters`); "
            "give the prompt and options on the command line instead."
        )
    parsed = parse_a1111(parameters)
    fields = parsed["fields"]
    values: dict[str, Any] = {"prompt": parsed["prompt"], "negative_prompt": parsed["negative_prompt"]}
    try:
        numbers = dict(_A1111_NUMBERS)
        if "Hires upscale" in fields:  # then the strength is the hires pass's
            numbers |= {"Hires upscale": ("hires_scale", float), "Hires steps": ("hires_steps", int),
                        "Denoising strength": ("hires_strength", float)}
        values |= {key: kind(fields[name]) for name, (key, kind) in numbers.items() if name in fields}
        if fields.get("Emphasis") == "None":
            values["weighting"] = False
        if "Hires upscale" in fields:
            upscaler = fields.get("Hires upscaler", "Latent")
            known = {a1111.lower(): name for name, a1111 in HIRES_UPSCALERS.items()}
            if upscaler.lower() not in known:
                raise InvalidRequestError(
                    f"{str(path)!r} was made with hires upscaler {upscaler!r}, which sdgen does not have; "
                    "pass --hires-upscaler latent or lanczos."
                )
            values["hires_upscaler"] = known[upscaler.lower()]
        if "Size" in fields:
            width, height = fields["Size"].lower().split("x")
            values["width"], values["height"] = int(width), int(height)
    except ValueError as error:
        raise InvalidRequestError(f"{str(path)!r} has unreadable A1111 parameters ({error}).") from None
    sampler = fields.get("Sampler")
    if sampler:
        # In an infotext no "Schedule type" means the sampler's plain schedule (A1111 before 1.9)
        schedule = "karras" if fields.get("Schedule type") == "Karras" else "uniform"
        try:
            values["scheduler"] = from_a1111(sampler, schedule)
        except InvalidRequestError:
            raise InvalidRequestError(
                f"{str(path)!r} was made with sampler {sampler!r}, which sdgen does not have; pass --scheduler."
            ) from None
    return values


def _typed_record(path: str | Path, record: Any) -> dict[str, Any]:
    """The replayable values of an sdgen chunk, each checked for its type: an image is input like any
    other, and one made (or edited) to break sdgen gets a one-line error, not a traceback."""
    if not isinstance(record, dict):
        raise InvalidRequestError(f"{str(path)!r} has an sdgen record that is not a JSON object; pass the options.")
    values = {}
    keys = (*IMAGE_KEYS, "model", "revision", "dtype", "rng", "lora_dir", "embedding_dir", "vae",
            "model_config", "prediction_type", *plugins.option_keys())
    for key in dict.fromkeys(keys):
        if record.get(key) is None:
            continue
        kind = str if key == "prompt" else OPTIONS[key].kind
        try:
            values[key] = as_kind(record[key], kind)
        except TypeError:
            raise InvalidRequestError(
                f"{str(path)!r} records {key} = {record[key]!r}, which is not {kind_name(kind)}; "
                f"pass --{key.replace('_', '-')} yourself."
            ) from None
    return values


def replay_values(path: str | Path, given: set[str]) -> dict[str, Any]:
    """The --from layer: an image's values for every option not typed beside --from."""
    recorded = {key: value for key, value in request_values_from_image(path).items() if key not in given}
    if recorded.get("mask") and not Path(recorded["mask"]).is_file():
        raise InvalidRequestError(f"{str(path)!r} was made with mask {recorded['mask']!r}, which is gone; pass --mask.")
    if recorded.get("init_image") and not Path(recorded["init_image"]).is_file():
        raise InvalidRequestError(
            f"{str(path)!r} was made from init image {recorded['init_image']!r}, which is gone; pass --init-image."
        )
    if recorded.get("dtype") == "float16" and "device" not in given:
        recorded.pop("dtype")  # float16 was a CUDA choice; let auto pick again on this machine
    if "model" in recorded:  # say which weights an image is about to make sdgen load (or download)
        model = recorded["model"]
        log.warning("Note: %s was made with model %r; using it (pass --model to choose another).", path, model)
    return recorded
