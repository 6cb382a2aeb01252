"""OpenAI's images API over the same engine, queue and limits as the A1111 routes: POST /v1/images/generations
and GET /v1/models, for LLM front-ends (Open WebUI, LibreChat ...) and the `openai` client.

A body is OpenAI's (prompt, n, size "WxH", response_format, model, output_format) plus, as extensions, any field
of /sdapi/v1/txt2img's body (negative_prompt, seed, steps, cfg_scale, sampler_name, alwayson_scripts ...): it
becomes a Txt2ImgBody and goes through the A1111 translation, so every option the server takes works here too.
Images come back as base64 only (`b64_json`): `url` is refused, as the server keeps no images to link to.
Errors have OpenAI's shape, {"error": {"message", "type", "param", "code"}} (sdgen/serve/replies.py writes
them for every path under /v1/); the auth is the server's --api-auth, sent as the API key `user:password`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdgen.errors import NAME, InvalidRequestError
from sdgen.serve import listings
from sdgen.serve.schema import STRICT, Text, Txt2ImgBody, Whole, error_responses

PREFIX = "/v1"
# OpenAI's model names a client may send for "the server's model"; any other name must be one of GET /v1/models
OPENAI_MODELS = re.compile(r"^(dall-e|gpt-image)", re.IGNORECASE)
# sdgen's setting -> the field of an OpenAI body that sets it (the rest keep their A1111 names)
OPENAI_FIELDS = {"width": "size", "height": "size", "num_images": "n", "model": "model", "prompt": "prompt"}
_FORMATS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp"}
_OWNED = {"width": "size", "height": "size", "n_iter": "n", "send_images": "response_format"}
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
_TYPES = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error", 499: "client_closed",
          503: "server_error"}
_CODES = {"Unauthorized": "invalid_api_key", "TooLarge": "body_too_large"}


def is_openai(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def openai_error(status: int, kind: str, message: str, field: str | None) -> dict[str, Any]:
    """OpenAI's error body: type from the status (invalid_request_error for bad input, server_error for 5xx),
    code from sdgen's kind (InvalidRequest -> invalid_request, QueueFull -> queue_full)."""
    kind_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = _CODES.get(kind) or re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    return {"error": {"message": message, "type": kind_type, "param": field, "code": code}}


class OpenAIError(BaseModel):
    message: str = Field(description="One line for a person: the field, the value and what is allowed.")
    type: str = Field(description="invalid_request_error (bad input), authentication_error, not_found_error, "
                                  "server_error ...")
    param: str | None = Field(None, description="The request field it is about, as the client named it.")
    code: str | None = Field(None, description="sdgen's kind: invalid_request, invalid_api_key, queue_full ...")


class OpenAIErrorBody(BaseModel):
    """Every error answer under /v1, in OpenAI's shape."""

    error: OpenAIError


def openai_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A /v1 route's OpenAPI `responses`: each error code answered with OpenAIErrorBody."""
    return {code: {**entry, "model": OpenAIErrorBody} for code, entry in error_responses(*codes).items()}


class ImageGenerationBody(BaseModel):
    """POST /v1/images/generations: OpenAI's fields; every other field is one of /sdapi/v1/txt2img's body."""

    model_config = STRICT | ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"prompt": "a red fox in the snow", "n": 1, "size": "512x512", "response_format": "b64_json",
         "negative_prompt": "blurry", "seed": 42, "steps": 20, "sampler_name": "Euler a"}]})

    prompt: Text = Field(min_length=1, description="The prompt, as A1111 users write it (emphasis, <lora:> ...).")
    n: Whole = Field(1, ge=1, description="How many images (seed + i each); the server's --max-batch limits it.")
    size: Text | None = Field(None, description="WIDTHxHEIGHT, e.g. 512x512; auto or null: the server's size.")
    response_format: Text | None = Field(None, description="b64_json (the default); url is refused: the server "
                                                           "keeps no images to link to.")
    model: Text | None = Field(None, description="An id of GET /v1/models; dall-e-* or gpt-image-* or null: the "
                                                 "server's model.")
    output_format: Text | None = Field(None, description="png (the default), jpeg or webp.")


def txt2img_body(body: ImageGenerationBody) -> Txt2ImgBody:
    """The A1111 body an OpenAI body means: size, n, model and output_format in A1111's fields, the
    extensions as they are. InvalidRequestError or RequestValidationError (422) for a bad field."""
    extensions = dict(body.model_extra or {})
    owned = [key for key in _OWNED if key in extensions]
    if owned:  # named as the client sent it (the usage errors of width and height name `size`)
        raise RequestValidationError([{"type": "owned", "loc": ("body", key), "input": extensions[key],
                                       "msg": f"this route takes {_OWNED[key]} instead; leave {key} out"}
                                      for key in owned])
    fields: dict[str, Any] = {**extensions, "prompt": body.prompt, "send_images": True}
    fields |= _size(body.size)
    batch = extensions.get("batch_size", 1)
    batch = int(batch) if isinstance(batch, float) and batch.is_integer() else batch  # 2.0 is 2, as elsewhere
    if isinstance(batch, int) and batch >= 1 and body.n % batch:
        raise InvalidRequestError(f"Invalid {NAME} {batch}: n ({body.n}) must be a multiple of it.", "batch_size")
    fields["n_iter"] = body.n // batch if isinstance(batch, int) and batch >= 1 else body.n
    overrides = extensions.get("override_settings", {})
    if isinstance(overrides, dict):  # anything else: the validation below names it
        overrides = dict(overrides)
        if body.model and not OPENAI_MODELS.match(body.model):
            overrides["sd_model_checkpoint"] = body.model
        if body.output_format is not None:
            overrides["samples_format"] = _format(body.output_format)
        fields["override_settings"] = overrides
    _check_response_format(body.response_format)
    try:
        return Txt2ImgBody.model_validate(fields)
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None


def _size(size: str | None) -> dict[str, int]:
    if size is None or size.strip().lower() == "auto":
        return {}
    match = _SIZE.match(size)
    if not match:
        raise InvalidRequestError(f"Invalid {NAME} {size[:40]!r}: write WIDTHxHEIGHT, e.g. 512x512 (or auto).", "size")
    return {"width": int(match[1]), "height": int(match[2])}


def _format(value: str) -> str:
    if value.lower() not in _FORMATS:
        raise InvalidRequestError(f"Invalid {NAME} {value[:40]!r}: png, jpeg or webp.", "output_format")
    return _FORMATS[value.lower()]


def _check_response_format(value: str | None) -> None:
    if value is None or value == "b64_json":
        return
    if value == "url":
        raise InvalidRequestError(f"Invalid {NAME} 'url': this server sends images in the answer only and keeps "
                                  "none to link to; send response_format b64_json.", "response_format")
    raise InvalidRequestError(f"Invalid {NAME} {value[:40]!r}: b64_json is the one this server sends.",
                              "response_format")


def openai_answer(answer: dict[str, Any], output_format: str | None) -> dict[str, Any]:
    """An A1111 answer (images, info as JSON text) as OpenAI's: created, data [{b64_json, revised_prompt}];
    each image's seed and infotext go with it (OpenAI's clients ignore fields they do not know)."""
    import json

    info = json.loads(answer["info"])
    data = [{"b64_json": image, "revised_prompt": info["all_prompts"][i], "seed": info["all_seeds"][i],
             "infotext": info["infotexts"][i]} for i, image in enumerate(answer["images"])]
    kind = {"jpg": "jpeg"}.get(_FORMATS.get((output_format or "png").lower(), "png"), "png")
    return {"created": int(time.time()), "data": data, "output_format": kind}


def openai_router(engine: Any, users: bool, auth: tuple[int, ...],
                  generate: Callable[[Any, Txt2ImgBody, Request], Awaitable[dict[str, Any]]]) -> APIRouter:
    """/v1's routes. `generate` is the A1111 routes' own: the same checks, limits and queue."""
    bearer = [Depends(HTTPBearer(auto_error=False, description="--api-auth's user:password as the API key"))]
    router = APIRouter(prefix=PREFIX, dependencies=bearer if users else [], tags=["OpenAI"])

    @router.post("/images/generations", responses=openai_responses(*auth, 400, 413, 422, 499, 500, 503))
    async def generations(body: ImageGenerationBody, request: Request) -> dict[str, Any]:
        """Text to image; OpenAI's fields plus any of /sdapi/v1/txt2img's (docs/server.md)."""
        answer = await generate(engine, txt2img_body(body), request)
        return openai_answer(answer, body.output_format)

    @router.get("/models", responses=openai_responses(*auth))
    def models() -> dict[str, Any]:
        """The models a body's `model` may name: the served one first (GET /sdapi/v1/sd-models' titles)."""
        found = listings.checkpoints(engine.spec, engine.settings, engine.served_sha256())
        ids = list(dict.fromkeys(checkpoint.title for checkpoint in found))
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "sdgen"}
                                           for name in ids]}

    return router
