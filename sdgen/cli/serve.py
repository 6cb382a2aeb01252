"""`sdgen serve`: load the model once and answer the AUTOMATIC1111 web API (sdgen/serve/)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from sdgen import interrupts
from sdgen.cli.common import CliErrors, effective_settings, fresh, setup_logging, with_options
from sdgen.config.options import SERVE
from sdgen.config.settings import ENV_API_AUTH
from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import NAME, InvalidRequestError, UsageError
from sdgen.hardware import ray_cluster

log = logging.getLogger("sdgen")

SERVE_HELP = (
    "Keep the model loaded and answer the AUTOMATIC1111 web API (/sdapi/v1/txt2img, img2img, options, "
    "progress ...), so webuiapi scripts, SillyTavern, Open WebUI and other A1111 clients can use sdgen. "
    "One generation at a time, first come first served. API docs at http://HOST:PORT/docs. "
    'Needs the serve extra: pip install "sdgen[serve]".\n\n'
    "\b\nExamples:\n"
    "  sdgen serve\n"
    "  sdgen serve --preset turbo --port 7861\n"
    "  sdgen serve --listen --api-auth alice:secret --max-pixels 1048576\n"
    "  sdgen serve --models-dir ~/sd/models --lora-dir ~/sd/loras --outdir ~/sd/api-images"
)
MISSING_EXTRA = 'sdgen serve needs FastAPI and uvicorn: pip install "sdgen[serve]"'


def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (A1111's is 7860).")] = 7860,
    listen: Annotated[bool, typer.Option("--listen", help="Listen on every interface (0.0.0.0), as A1111's.")] = False,
    api_auth: Annotated[str | None, typer.Option(
        help="HTTP Basic users, user:password[,user2:password2] (or env SDGEN_API_AUTH, kept out of `ps`).",
        envvar=ENV_API_AUTH, show_default=False)] = None,
    max_queue: Annotated[int, typer.Option(
        help="Requests that may wait; more get 503 + Retry-After. 0: no limit.")] = 32,
    max_pixels: Annotated[int, typer.Option(help="Largest width x height a request may ask (after its hires "
                                                  "pass); more gets 422. 0: no limit.")] = 2048 * 2048,
    max_steps: Annotated[int, typer.Option(help="Most steps a request may ask. 0: no limit.")] = 150,
    max_batch: Annotated[int, typer.Option(help="Most images (batch_size x n_iter) per request. 0: no limit.")] = 16,
    outdir: Annotated[Path | None, typer.Option(
        help="Save the images of requests that send save_images=true here, named and tagged as `sdgen PROMPT` "
        "names them. [default: off: nothing is written]", show_default=False)] = None,
    **values: Any,
) -> None:
    setup_logging(values["verbose"], values["quiet"])
    with CliErrors(values["verbose"]) as errors:
        try:
            from sdgen.serve.app import create_app
            from sdgen.serve.engine import Engine, Limits
            from sdgen.serve.ray_serve import Replicas, serve_replicas
            from sdgen.serve.server import serve
        except ImportError as error:
            raise UsageError(f"{MISSING_EXTRA} ({error}).") from None
        chosen = errors.knows(effective_settings(ctx, values))
        replicas = Replicas.from_values(values)
        if replicas is not None:
            ray_cluster.require_ray()
        spec = ModelSpec.from_settings(chosen).checked()
        defaults = check_request(GenerationRequest.from_settings({**chosen, "prompt": "a check"}), spec)  # now
        users = parse_users(api_auth)
        host = "0.0.0.0" if listen else host
        for key, value in (("max_queue", max_queue), ("max_pixels", max_pixels), ("max_steps", max_steps),
                           ("max_batch", max_batch)):
            if value < 0:
                raise InvalidRequestError(f"Invalid {NAME} {value}: 0 (no limit) or more.", key)
        limits = Limits(max_pixels or None, max_steps or None, max_batch or None, max_queue or None)
        limits.check_defaults(defaults)  # --max-steps 8 with the default 25 steps would refuse every request
        if outdir is not None:
            from sdgen.record.output import check_writable_folder

            outdir = outdir.expanduser()
            check_writable_folder(outdir)
        sock = bind(host, port)
        if not is_loopback(host) and not users:
            log.warning("Warning: listening on %s without --api-auth: anyone who can reach this machine can use "
                        "it; set --api-auth user:password.", host)
        if replicas is not None:  # Ray Serve's proxy listens instead: the port was free a moment ago
            sock.close()
            with interrupts.handled():  # Ctrl-C, SIGTERM or SIGHUP: the replicas shut down (inherited SIG_IGN too)
                serve_replicas(replicas, chosen, ModelSpec.from_settings(chosen), limits, outdir, users, host, port)
            return
        engine = Engine(chosen, spec, limits, outdir)
        engine.start()  # loads the model: its errors come before the server answers anyone
        shown = f"[{host}]" if ":" in host else host
        log.info("sdgen serve: http://%s:%d/sdapi/v1 (API docs at /docs); Ctrl-C stops.", shown, port)
        serve(create_app(engine, users), engine, sock)


def parse_users(text: str | None) -> dict[str, str] | None:
    """'alice:pw1,bob:pw2' -> {'alice': 'pw1', 'bob': 'pw2'} (a password may hold ':', not ',')."""
    if not text:
        return None
    users = {}
    for entry in text.split(","):
        name, sep, password = entry.strip().partition(":")
        if not sep or not name or not password:
            raise InvalidRequestError(
                f"Invalid {NAME} entry {entry.strip().split(':')[0]!r}: write user:password[,user2:password2].",
                "api_auth",
            )
        users[name] = password
    return users


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is an error before the model loads."""
    if not 0 <= port <= 65535:
        raise InvalidRequestError(f"Invalid {NAME} {port}: a TCP port from 1 to 65535.", "port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InvalidRequestError(
            f"Cannot listen on {host}:{port} ({error.strerror or error}); choose another --port or --host.", "port"
        ) from None
    return sock


def register(app: typer.Typer) -> None:
    app.command(SERVE, help=SERVE_HELP)(with_options(SERVE)(fresh(serve_command)))
