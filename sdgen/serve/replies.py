"""Every error as one ErrorBody (schema.py) with its status: sdgen's own errors, FastAPI's validation errors,
Starlette's 404/405, and anything unexpected. No traceback reaches a client; each message is one line that
names the field and shows its value, whatever the value is (NaN, Infinity, a lone surrogate, bytes, a
megabyte of text): the answer is always valid JSON."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sdgen.errors import SdgenError, UsageError
from sdgen.serve.engine import QueueFull, ShuttingDown
from sdgen.serve.openai_api import OPENAI_FIELDS, is_openai, openai_error
from sdgen.serve.translate import A1111_FIELDS, named

log = logging.getLogger("sdgen")
MAX_DETAIL = 400  # characters of a message a client gets
MAX_SHOWN = 40  # characters of a value a message shows
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: a lone surrogate the response echoes is sent escaped, not a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def one_line(text: str, limit: int = MAX_DETAIL) -> str:
    """A message as one line of valid UTF-8 without memory addresses (`<... object at 0x7f...>`), cut at
    `limit` characters."""
    text = " ".join(_ADDRESS.sub("", text).split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_reply(status: int, kind: str, detail: str, field: str | None = None,
                headers: Mapping[str, str] | None = None, path: str = "") -> JSONResponse:
    """An ErrorBody; under /v1/ (the OpenAI routes) OpenAI's {"error": {message, type, param, code}}."""
    body: dict[str, Any] = {"error": kind, "detail": one_line(detail), "field": field}
    if is_openai(path):
        body = openai_error(status, kind, one_line(detail), field)
    return SafeJSONResponse(body, status_code=status, headers=dict(headers or {}))


def shown(value: Any) -> str:
    """A value as a message shows it: JSON-like, short, printable."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity") if math.isinf(value) \
            else repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() < 200 else f"(a number of {int(value.bit_length() * 0.30103)}+ digits)"
    if isinstance(value, (bytes, bytearray)):
        return f"({len(value)} bytes, not JSON)"
    if isinstance(value, str):
        cut = value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "..."
        return json.dumps(cut, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return "an object" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "[]"
    return f"a {type(value).__name__}"


_RULES = {  # pydantic's error types -> what the field must be, for the one-line message
    "int_type": "must be a whole number (a JSON integer)",
    "float_type": "must be a number (a JSON number)",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be text (a JSON string)",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "missing": "is required",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "string_too_short": "must not be empty",
}


def field_name(location: tuple[Any, ...]) -> str:
    """('body', 'init_images', 0) -> 'init_images[0]'; ('body', 'override_settings', 'sd_vae') ->
    'override_settings.sd_vae'; the body itself -> 'body'."""
    parts = list(location[1:]) if location and location[0] in ("body", "query", "path", "header") else list(location)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def validation_message(error: Mapping[str, Any]) -> tuple[str, str]:
    """One pydantic/FastAPI error -> (field, 'Invalid steps true: must be a whole number (a JSON integer).')."""
    kind = error.get("type", "")
    location = tuple(error.get("loc") or ())
    if kind == "json_invalid":
        context = error.get("ctx") or {}
        position = location[1] if len(location) > 1 else "?"
        return "body", f"Invalid body: not valid JSON ({context.get('error', 'syntax error')} at character {position})."
    field = field_name(location)
    if kind == "missing" and field == "body":
        return field, "Invalid body: send a JSON object (Content-Type: application/json)."
    try:
        rule = _RULES[kind].format_map(error.get("ctx") or {})
    except (KeyError, ValueError):
        rule = str(error.get("msg") or "is invalid")
    rule = rule[:1].lower() + rule[1:] if rule[1:2].islower() else rule  # "Input should ..." -> "input should ..."
    value = error.get("input")
    hint = " (send the body as JSON with Content-Type: application/json)" if isinstance(value, bytes) else ""
    return field, f"Invalid {field} {shown(value)}: {rule}{hint}."


def _unreadable(cause: BaseException) -> str:
    """Why Python's JSON reader gave up on a body, in words."""
    if isinstance(cause, RecursionError):
        return "its JSON is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in it has too many digits"
    if isinstance(cause, UnicodeDecodeError):
        return "it is not UTF-8 text"
    return f"it could not be read ({type(cause).__name__})"


def usage_reply(error: UsageError, path: str = "") -> JSONResponse:
    """422 for an sdgen usage error, its setting named by the field a client sent (A1111's, or OpenAI's)."""
    if is_openai(path):
        field = OPENAI_FIELDS.get(error.key or "") or A1111_FIELDS.get(error.key or "", error.key)
        detail = str(error.named(field or "value")).replace("GET /sdapi/v1/sd-models", "GET /v1/models")
        return error_reply(422, "InvalidRequest", detail, field, path=path)
    return error_reply(422, "InvalidRequest", named(error), A1111_FIELDS.get(error.key or "", error.key))


def install(app: FastAPI) -> None:
    """The exception handlers: every error answered with ErrorBody."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [validation_message(item) for item in error.errors()] or [("body", "Invalid body.")]
        detail = " ".join(message for _, message in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return error_reply(422, "InvalidRequest", detail + more, problems[0][0], path=request.url.path)

    @app.exception_handler(HTTPException)
    async def http(request: Request, error: HTTPException) -> JSONResponse:
        kind = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}.get(
            error.status_code, "HTTPError")
        detail = str(error.detail)
        if error.status_code == 400 and error.__cause__ is not None:  # FastAPI could not read the body
            detail = f"Invalid body: {_unreadable(error.__cause__)}."
        return error_reply(error.status_code, kind, detail, "body" if error.status_code == 400 else None,
                           headers=error.headers, path=request.url.path)

    @app.exception_handler(UsageError)
    async def usage(request: Request, error: UsageError) -> JSONResponse:
        return usage_reply(error, request.url.path)

    @app.exception_handler(QueueFull)
    async def full(request: Request, error: QueueFull) -> JSONResponse:
        return error_reply(503, "QueueFull", str(error), headers={"Retry-After": str(error.retry_after)},
                           path=request.url.path)

    @app.exception_handler(ShuttingDown)
    async def closing(request: Request, error: ShuttingDown) -> JSONResponse:
        return error_reply(503, "ShuttingDown", str(error), path=request.url.path)

    @app.exception_handler(SdgenError)
    async def failed(request: Request, error: SdgenError) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, one_line(str(error)))
        return error_reply(500, type(error).__name__, str(error), path=request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__,
                  one_line(str(error)), exc_info=error)
        return error_reply(500, "ServerError", f"The server failed ({type(error).__name__}); its log has more.",
                           path=request.url.path)
