"""What is checked before a request reaches the app, as plain ASGI middleware: HTTP Basic auth (every route,
the docs and the schema included; the OpenAI routes under /v1/ take the same user:password as a Bearer API
key), then the body's size. Neither parses the body, so a client without the
password gets its 401 before a byte of JSON is read, and an oversized body gets a 413 that the client reads."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sdgen.serve.openai_api import is_openai, openai_error

ASGIApp = Callable[..., Awaitable[None]]
DRAIN_FACTOR = 4  # an oversized body is read (and dropped) up to this many times the limit, so the client reads the 413


async def send_error(send: Callable[..., Any], status: int, kind: str, detail: str,
                     headers: list[tuple[bytes, bytes]] | None = None, close: bool = False, path: str = "") -> None:
    """An ErrorBody answer from middleware (OpenAI's error under /v1/). `close`: the body was not read to its
    end, so the connection ends."""
    shaped = openai_error(status, kind, detail, None) if is_openai(path) else {"error": kind, "detail": detail,
                                                                               "field": None}
    body = json.dumps(shaped).encode()
    extra = [(b"connection", b"close")] if close else []
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or []), *extra]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value
    return None


def _declared_length(scope: Mapping[str, Any]) -> int | None:
    """The Content-Length a request declares (0 for none and no chunked body); None: chunked, size unknown."""
    length = _header(scope, b"content-length")
    if length is not None and length.strip().isdigit():
        return int(length)
    return None if _header(scope, b"transfer-encoding") else 0


class BasicAuth:
    """401 unless the request carries one of `users`' name and password (HTTP Basic, as A1111's --api-auth)."""

    def __init__(self, app: ASGIApp, users: Mapping[str, str], max_body: int) -> None:
        self.app, self.users, self.max_body = app, dict(users), max_body

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        openai = scope["type"] == "http" and is_openai(scope.get("path", ""))
        if scope["type"] != "http" or self.allowed(_header(scope, b"authorization"), bearer=openai):
            return await self.app(scope, receive, send)
        length = _declared_length(scope)  # a small body is read and dropped by the server; a large one is not
        how = ("Wrong or missing API key: send --api-auth's user:password as the key (Authorization: Bearer "
               "user:password)." if openai else "Wrong or missing user name or password (HTTP Basic).")
        challenge = b'Bearer realm="sdgen"' if openai else b'Basic realm="sdgen"'
        await send_error(send, 401, "Unauthorized", how, [(b"www-authenticate", challenge)],
                         close=length is None or length > self.max_body, path=scope.get("path", ""))

    def allowed(self, header: bytes | None, bearer: bool = False) -> bool:
        """Constant-time check of an `Authorization: Basic ...` header (or, where `bearer`, also `Bearer
        user:password`, an OpenAI client's API key) against every user."""
        scheme, _, encoded = (header or b"").partition(b" ")
        try:
            if bearer and scheme.lower() == b"bearer":
                name, sep, password = encoded.strip().decode("utf-8").partition(":")
            elif scheme.lower() == b"basic":
                name, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            else:
                return False
        except (binascii.Error, ValueError):
            return False
        expected = self.users.get(name)
        right = secrets.compare_digest(password.encode(), (expected or "").encode())
        return bool(sep) and expected is not None and right


class BodyLimit:
    """413 for a body past `max_body` bytes: at once by its Content-Length, or once that many bytes of a chunked
    body have come. The rest is read and dropped (up to DRAIN_FACTOR x the limit), so the client, which sends
    its whole body before it reads, gets the 413 instead of a reset connection. A body within the limit is read
    here and handed on whole."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length, path = _declared_length(scope), scope.get("path", "")
        if length is not None and length > self.max_body:
            if length > self.max_body * DRAIN_FACTOR:
                return await self._refuse(send, close=True, path=path)
            return await self._drain(receive, send, 0, path)
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left while sending: nobody to answer
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.max_body:
                return await self._drain(receive, send, seen, path) if more else await self._refuse(send, path=path)
        body, replayed = b"".join(chunks), False
        del chunks

        async def replay() -> dict[str, Any]:
            nonlocal replayed, body
            if replayed:
                return await receive()  # after the body: http.disconnect when the client leaves
            replayed, whole, body = True, body, b""
            return {"type": "http.request", "body": whole, "more_body": False}

        await self.app(scope, replay, send)

    async def _drain(self, receive: Callable[..., Any], send: Callable[..., Any], seen: int, path: str) -> None:
        """Read and drop the rest of an oversized body (bounded), then answer 413."""
        more = True
        while more and seen <= self.max_body * DRAIN_FACTOR:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            seen += len(message.get("body", b""))
            more = message.get("more_body", False)
        await self._refuse(send, close=more, path=path)

    async def _refuse(self, send: Callable[..., Any], close: bool = False, path: str = "") -> None:
        mib = self.max_body / 1024 / 1024
        await send_error(send, 413, "TooLarge", f"The body is larger than this server's limit of {self.max_body} "
                         f"bytes ({mib:g} MiB); send a smaller image.", close=close, path=path)
