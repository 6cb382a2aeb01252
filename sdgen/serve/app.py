"""The FastAPI app: AUTOMATIC1111's /sdapi/v1 routes over an Engine, with the server owner's limits (body
size, queue, pixels, steps, images) and optional HTTP Basic auth. OpenAPI docs at /docs."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

import sdgen
from sdgen.errors import SdgenError, UsageError
from sdgen.schedulers import A1111_SCHEDULES
from sdgen.serve import listings
from sdgen.serve.engine import Engine, QueueFull, ShuttingDown
from sdgen.serve.schema import GenerationBody, Img2ImgBody, Txt2ImgBody
from sdgen.serve.translate import named, samplers

log = logging.getLogger("sdgen")
MAX_BODY_BYTES = 32 * 1024 * 1024  # a 4096x4096 PNG in base64 fits; a 50 MB body does not
CLIENT_GONE = 499  # nginx's code for "the client closed the request"


def create_app(engine: Engine, users: dict[str, str] | None = None, max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The app over a started engine; `users` (name -> password) turns on HTTP Basic auth."""
    app = FastAPI(title="sdgen", version=sdgen.__version__, description=_DESCRIPTION)
    guard = [Depends(_basic_auth(users))] if users else []
    api = APIRouter(prefix="/sdapi/v1", dependencies=guard)
    _generation_routes(api, engine)
    _setting_routes(api, engine)
    _list_routes(api, engine)
    app.include_router(api)
    app.include_router(_queue_router(engine, guard))
    _error_handlers(app)
    app.add_middleware(BodyLimit, max_body=max_body)
    return app


_DESCRIPTION = (
    "The AUTOMATIC1111 web API over sdgen's own denoising loop: txt2img, img2img (with masks), options, "
    "the lists clients read, progress with a preview, interrupt and skip. One generation at a time, first come "
    "first served."
)


def _generation_routes(api: APIRouter, engine: Engine) -> None:
    @api.post("/txt2img")
    async def txt2img(body: Txt2ImgBody, request: Request) -> dict[str, Any]:
        return await _generate(engine, body, request)

    @api.post("/img2img")
    async def img2img(body: Img2ImgBody, request: Request) -> dict[str, Any]:
        return await _generate(engine, body, request)

    @api.get("/progress")
    def progress(skip_current_image: bool = False) -> dict[str, Any]:
        state = engine.progress
        fraction = state.fraction()
        eta = 0.0
        if fraction > 0 and state.started:
            elapsed = max(0.0, time.time() - state.started)
            eta = elapsed / fraction - elapsed
        preview = None if skip_current_image else engine.preview()
        return {
            "progress": fraction, "eta_relative": eta, "state": state.state(),
            "current_image": base64.b64encode(preview).decode("ascii") if preview else None,
            "textinfo": f"Step {state.sampling_step}/{state.sampling_steps}" if state.job_count else None,
        }

    @api.post("/interrupt")
    def interrupt() -> None:
        engine.interrupt()

    @api.post("/skip")
    def skip() -> None:
        engine.skip()


async def _generate(engine: Engine, body: GenerationBody, request: Request) -> dict[str, Any]:
    """Check, queue, wait (dropping the job if the client leaves before it starts), answer."""
    job = await run_in_threadpool(engine.prepare, body)  # decoding images takes a moment: off the event loop
    future = engine.submit(lambda: engine.run(job))
    waiting = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=0.25)
        if done:
            return waiting.result()
        if await request.is_disconnected() and future.cancel():
            log.info("A client left before its request started; dropped it.")
            raise HTTPException(CLIENT_GONE, "The client closed the request before it started.")


def _setting_routes(api: APIRouter, engine: Engine) -> None:
    @api.get("/options")
    def get_options() -> dict[str, Any]:
        return dict(engine.options)

    @api.post("/options")
    def set_options(changes: dict[str, Any]) -> None:
        engine.set_options(changes)  # loads a new model in the queue and waits: a worker thread, not the loop

    @api.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return {"api": True, "nowebui": True, "listen": False}


def _list_routes(api: APIRouter, engine: Engine) -> None:
    settings = engine.settings
    empty: dict[str, Callable[[], Any]] = {
        "/face-restorers": list, "/prompt-styles": list, "/hypernetworks": list, "/realesrgan-models": list,
        "/scripts": lambda: {"txt2img": [], "img2img": []},
        "/upscalers": lambda: [{"name": name, "model_name": None, "model_path": None, "model_url": None,
                                "scale": 4} for name in ("None", "Lanczos")],
        "/latent-upscale-modes": lambda: [{"name": "Latent"}],
        "/schedulers": lambda: [{"name": key, "label": label, "aliases": None, "default_rho": -1,
                                 "need_inner_model": False} for key, label in A1111_SCHEDULES.items()],
        "/samplers": samplers,
        "/loras": lambda: listings.loras(settings),
        "/embeddings": lambda: listings.embeddings(settings),
        "/sd-vae": lambda: listings.vaes(engine.spec, settings),
        "/sd-models": lambda: [checkpoint.record() for checkpoint in listings.checkpoints(
            engine.spec, settings, engine.served_sha256())],
    }
    for path, answer in empty.items():
        api.add_api_route(path, _getter(answer), methods=["GET"], name=path.strip("/"))

    @api.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        """Listings are read from disk on every request: nothing to refresh."""


def _getter(answer: Callable[[], Any]) -> Callable[[], Any]:
    def get() -> Any:
        return answer()

    return get


def _queue_router(engine: Engine, guard: list[Any]) -> APIRouter:
    router = APIRouter(dependencies=guard)

    @router.get("/queue/status")
    def queue_status() -> dict[str, Any]:
        waiting = engine.waiting()
        return {"msg": "estimation", "rank": None, "queue_size": waiting, "running": engine.running(),
                "avg_event_process_time": engine.mean_seconds(), "avg_event_concurrent_process_time": None,
                "rank_eta": None, "queue_eta": engine.mean_seconds() * waiting}

    return router


def _basic_auth(users: dict[str, str]) -> Callable[[HTTPBasicCredentials], None]:
    basic = HTTPBasic()

    def check(credentials: HTTPBasicCredentials = Depends(basic)) -> None:  # noqa: B008
        expected = users.get(credentials.username)
        right = secrets.compare_digest(credentials.password.encode(), (expected or "").encode())
        if expected is None or not right:
            raise HTTPException(401, "Wrong user name or password.", headers={"WWW-Authenticate": "Basic"})

    return check


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UsageError)
    async def usage(request: Request, error: UsageError) -> JSONResponse:
        return JSONResponse({"error": "InvalidRequest", "detail": named(error)}, status_code=422)

    @app.exception_handler(QueueFull)
    async def full(request: Request, error: QueueFull) -> JSONResponse:
        headers = {"Retry-After": str(error.retry_after)}
        return JSONResponse({"error": "QueueFull", "detail": str(error)}, status_code=503, headers=headers)

    @app.exception_handler(ShuttingDown)
    async def closing(request: Request, error: ShuttingDown) -> JSONResponse:
        return JSONResponse({"error": "ShuttingDown", "detail": str(error)}, status_code=503)

    @app.exception_handler(SdgenError)
    async def failed(request: Request, error: SdgenError) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, error)
        return JSONResponse({"error": type(error).__name__, "detail": str(error)}, status_code=500)


class BodyLimit:
    """413 for a body past `max_body` bytes, by its Content-Length or as it streams in, before it is parsed."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await self._refuse(send)
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Callable[..., Any]) -> None:
        detail = f'{{"error": "TooLarge", "detail": "The body is larger than {self.max_body} bytes."}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": detail})


class _TooLarge(Exception):
    pass
