"""The FastAPI app: AUTOMATIC1111's /sdapi/v1 routes and OpenAI's images API under /v1 (openai_api.py) over an
Engine, with the server owner's limits (body size, queue, pixels, steps, images) and optional HTTP Basic auth
over every route, the docs at /docs and the schema at /openapi.json included. Every error is an ErrorBody
(schema.py), declared for each route; under /v1 it has OpenAI's shape."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBasic

from sdgen.config.schedulers import SCHEDULE_TYPES
from sdgen.errors import InvalidRequestError, UsageError
from sdgen.prompts.styles import styles_listing
from sdgen.serve import controlnet, listings, pnginfo, replies
from sdgen.serve.engine import Engine, ShuttingDown
from sdgen.serve.extras import extras_routes
from sdgen.serve.guards import BasicAuth, BodyLimit
from sdgen.serve.openai_api import openai_router
from sdgen.serve.schema import (
    GenerationBody,
    Img2ImgBody,
    OptionsChanges,
    PngInfoBody,
    Txt2ImgBody,
    error_responses,
)
from sdgen.serve.translate import samplers
from sdgen.version import __version__

log = logging.getLogger("sdgen")
MAX_BODY_BYTES = 32 * 1024 * 1024  # a 4096x4096 PNG in base64 fits; a 50 MB body does not
CLIENT_GONE = 499  # nginx's code for "the client closed the request"


def create_app(engine: Engine, users: dict[str, str] | None = None, max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The app over a started engine; `users` (name -> password) turns on HTTP Basic auth for every route."""
    app = FastAPI(title="sdgen", version=__version__, description=_DESCRIPTION,
                  default_response_class=replies.SafeJSONResponse)
    auth = (401,) if users else ()
    guard = [Depends(HTTPBasic(description="--api-auth user:password"))] if users else []  # the schema says so
    api = APIRouter(prefix="/sdapi/v1", dependencies=guard)
    _generation_routes(api, engine, auth)
    _setting_routes(api, engine, auth)
    _list_routes(api, engine, auth)
    extras_routes(api, engine, auth, wait_for)
    app.include_router(api)
    app.include_router(_queue_router(engine, guard, auth))
    app.include_router(_controlnet_router(engine, guard, auth))
    app.include_router(openai_router(engine, bool(users), auth, _generate))
    replies.install(app)
    app.add_middleware(BodyLimit, max_body=max_body)
    if users:
        app.add_middleware(BasicAuth, users=users, max_body=max_body)  # outermost: before the body is read
    return app


_DESCRIPTION = (
    "The AUTOMATIC1111 web API over sdgen's own denoising loop: txt2img, img2img (with masks), options, "
    "the lists clients read, progress with a preview, interrupt and skip. One generation at a time, first come "
    "first served. Every error answer is an ErrorBody: {error, detail, field}."
)


def _generation_routes(api: APIRouter, engine: Engine, auth: tuple[int, ...]) -> None:
    generating = error_responses(*auth, 400, 413, 422, 499, 500, 503)

    @api.post("/txt2img", responses=generating)
    async def txt2img(body: Txt2ImgBody, request: Request) -> dict[str, Any]:
        return await _generate(engine, body, request)

    @api.post("/img2img", responses=generating)
    async def img2img(body: Img2ImgBody, request: Request) -> dict[str, Any]:
        return await _generate(engine, body, request)

    @api.get("/progress", responses=error_responses(*auth, 422))
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

    @api.post("/interrupt", responses=error_responses(*auth))
    def interrupt() -> None:
        engine.interrupt()

    @api.post("/skip", responses=error_responses(*auth))
    def skip() -> None:
        engine.skip()


async def _generate(engine: Engine, body: GenerationBody, request: Request) -> dict[str, Any]:
    """Check, queue, wait, answer."""
    job = await run_in_threadpool(_prepare, engine, body)  # decoding images takes a moment: off the event loop
    return await wait_for(engine, engine.submit(lambda: engine.run(job)), request)


def _prepare(engine: Engine, body: GenerationBody) -> Any:
    """engine.prepare, where any failure is the body's: 422, never 500 (a bug shows in the server's log)."""
    try:
        return engine.prepare(body)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 (whatever a check raises, the client gets a 422)
        log.warning("Checking a request failed unexpectedly (%s: %s)", type(error).__name__, error, exc_info=True)
        reason = replies.one_line(str(error), 200)
        raise InvalidRequestError(f"Invalid request: it could not be checked ({type(error).__name__}: {reason}).",
                                  "body") from None


async def wait_for(engine: Engine, future: concurrent.futures.Future[Any], request: Request) -> Any:
    """A queued job's result. 503 when the server stops first: at once for a job that had not started, after
    the engine's grace for a running one that has not reached its next step; 499 (dropped) when the client
    leaves before its job starts."""
    waiting = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=0.25)
        if done:
            if future.cancelled():
                raise ShuttingDown("The server is shutting down: this request had not started; send it again "
                                   "when the server is back.")
            return waiting.result()
        if engine.past_grace():
            raise ShuttingDown(f"The server is shutting down: the running request did not reach its next step "
                               f"within {engine.shutdown_grace:g} s.")
        if await request.is_disconnected() and future.cancel():
            log.info("A client left before its request started; dropped it.")
            raise HTTPException(CLIENT_GONE, "The client closed the request before it started.")


def _setting_routes(api: APIRouter, engine: Engine, auth: tuple[int, ...]) -> None:
    @api.get("/options", responses=error_responses(*auth))
    def get_options() -> dict[str, Any]:
        return dict(engine.options)

    @api.post("/options", responses=error_responses(*auth, 400, 413, 422, 503))
    async def set_options(changes: OptionsChanges, request: Request) -> None:
        """Checked (listings read from disk: a worker thread); a new model loads in the queue, and this waits."""
        spec, known = await run_in_threadpool(engine.check_options, changes.model_dump(exclude_unset=True))
        if spec != engine.spec:
            await wait_for(engine, engine.load_later(spec), request)
        engine.apply_options(spec, known)

    @api.post("/png-info", responses=error_responses(*auth, 400, 413, 422))
    async def png_info(body: PngInfoBody) -> dict[str, Any]:
        """The parameters of any image, as A1111 reads them: info (the text), items, parameters (split)."""
        return await run_in_threadpool(pnginfo.png_info, body.image)

    @api.get("/cmd-flags", responses=error_responses(*auth))
    def cmd_flags() -> dict[str, Any]:
        return {"api": True, "nowebui": True, "listen": False}


def _list_routes(api: APIRouter, engine: Engine, auth: tuple[int, ...]) -> None:
    settings = engine.settings
    empty: dict[str, Callable[[], Any]] = {
        "/face-restorers": lambda: listings.face_restorers(settings), "/hypernetworks": list,
        "/realesrgan-models": list,
        "/prompt-styles": lambda: styles_listing(settings.get("styles_file")),
        "/scripts": lambda: {"txt2img": [], "img2img": []},
        "/upscalers": lambda: listings.upscalers(settings),
        "/latent-upscale-modes": lambda: [{"name": "Latent"}],
        "/schedulers": lambda: [{"name": s.key, "label": s.label, "aliases": list(s.aliases) or None,
                                 "default_rho": s.default_rho, "need_inner_model": s.need_inner_model}
                                for s in SCHEDULE_TYPES.values()],
        "/samplers": samplers,
        "/loras": lambda: listings.loras(settings),
        "/embeddings": lambda: listings.embeddings(settings),
        "/sd-vae": lambda: listings.vaes(engine.spec, settings),
        "/sd-models": lambda: [checkpoint.record() for checkpoint in listings.checkpoints(
            engine.spec, settings, engine.served_sha256())],
    }
    for path, answer in empty.items():
        api.add_api_route(path, _getter(answer), methods=["GET"], name=path.strip("/"),
                          responses=error_responses(*auth))

    @api.post("/refresh-checkpoints", responses=error_responses(*auth))
    def refresh_checkpoints() -> None:
        """Listings are read from disk on every request: nothing to refresh."""


def _getter(answer: Callable[[], Any]) -> Callable[[], Any]:
    def get() -> Any:
        return answer()

    return get


def _queue_router(engine: Engine, guard: list[Any], auth: tuple[int, ...]) -> APIRouter:
    router = APIRouter(dependencies=guard)

    @router.get("/queue/status", responses=error_responses(*auth))
    def queue_status() -> dict[str, Any]:
        waiting = engine.waiting()
        return {"msg": "estimation", "rank": None, "queue_size": waiting, "running": engine.running(),
                "avg_event_process_time": engine.mean_seconds(), "avg_event_concurrent_process_time": None,
                "rank_eta": None, "queue_eta": engine.mean_seconds() * waiting}

    return router


def _controlnet_router(engine: Engine, guard: list[Any], auth: tuple[int, ...]) -> APIRouter:
    """The ControlNet extension's routes (sdgen/serve/controlnet.py); its units come in txt2img/img2img bodies."""
    router = APIRouter(prefix="/controlnet", dependencies=guard)

    @router.get("/version", responses=error_responses(*auth))
    def version() -> dict[str, Any]:
        return {"version": controlnet.API_VERSION}

    @router.get("/settings", responses=error_responses(*auth))
    def unit_count() -> dict[str, Any]:
        return {"control_net_unit_count": controlnet.MAX_UNITS}  # how many units a request may send

    @router.get("/model_list", responses=error_responses(*auth, 422))
    def model_list(update: bool = True) -> dict[str, Any]:
        """The ControlNets of --control-dir and the Hugging Face cache, read from disk each time (`update`
        changes nothing)."""
        return {"model_list": [listed.title for listed in controlnet.controlnets(engine.settings)]}

    @router.get("/module_list", responses=error_responses(*auth, 422))
    def module_list(alias_names: bool = False) -> dict[str, Any]:
        return {"module_list": controlnet.module_list(alias_names),
                "module_detail": controlnet.module_detail(alias_names)}

    @router.post("/detect", responses=error_responses(*auth, 400, 413, 422, 499, 503))
    async def detect(body: controlnet.DetectBody, request: Request) -> dict[str, Any]:
        """A preprocessor's maps; decoded off the event loop, made on the worker (detectors are torch work)."""
        inputs = await run_in_threadpool(controlnet.detect_inputs, body)
        return await wait_for(engine, engine.submit(lambda: controlnet.detect(*inputs)), request)

    return router
