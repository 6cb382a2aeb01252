"""`sdgen serve --replicas N`: the same FastAPI app (sdgen/serve/app.py: the A1111 API and every route mounted
on it) served by N model replicas on Ray Serve. Each replica is a Ray actor holding its own Engine (one loaded
model, one worker thread, its own FIFO queue and limits); Ray Serve's proxy on this machine routes each request
to a replica (fewest requests under way). What a replica answers is about itself: /progress is the progress of
the replica that answers that request (not the one running your job), /interrupt and /skip stop that replica's
current job, POST /options changes that replica's settings only. docs/ray.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.engine.model_spec import ModelSpec
from sdgen.errors import NAME, InvalidRequestError, SdgenError
from sdgen.hardware import ray_cluster
from sdgen.serve.engine import Limits

log = logging.getLogger("sdgen")
APP_NAME = "sdgen"


@dataclass(frozen=True)
class Replicas:
    """--replicas, --min-replicas, --max-replicas, checked (no Ray imported)."""

    replicas: int
    min_replicas: int | None = None
    max_replicas: int | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Replicas | None:
        """None: the single-process server. Bounds without --replicas, or out of order, are refused."""
        count, low, high = values.get("replicas"), values.get("min_replicas"), values.get("max_replicas")
        if count is None:
            for key, value in (("min_replicas", low), ("max_replicas", high)):
                if value is not None:
                    raise InvalidRequestError(f"{NAME} needs --replicas N (the replicas to start with).", key)
            return None
        for key, value, least in (("replicas", count, 1), ("min_replicas", low, 0), ("max_replicas", high, 1)):
            if value is not None and value < least:
                raise InvalidRequestError(f"Invalid {NAME} {value}: {least} or more.", key)
        if (low is None) != (high is None):
            raise InvalidRequestError(f"{NAME} needs both --min-replicas and --max-replicas (autoscaling bounds).",
                                      "min_replicas" if low is None else "max_replicas")
        if low is not None and not low <= count <= high:
            raise InvalidRequestError(
                f"Invalid {NAME} {count}: autoscaling starts within --min-replicas {low} .. --max-replicas {high}.",
                "replicas",
            )
        return cls(count, low, high)

    def deployment_options(self, max_queue: int | None) -> dict[str, Any]:
        """Ray Serve's options: a fixed count, or autoscaling on requests under way (one runs per replica)."""
        ongoing = (max_queue or 1000) + 1  # the engine's own queue limit answers 503, as without Ray
        if self.min_replicas is None:
            return {"num_replicas": self.replicas, "max_ongoing_requests": ongoing}
        scaling = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                   "initial_replicas": self.replicas, "target_ongoing_requests": 2}
        return {"autoscaling_config": scaling, "max_ongoing_requests": ongoing}


class SdgenReplica:
    """One replica (a Ray actor): an Engine and the app over it."""

    def __init__(self, settings: dict[str, Any], spec: ModelSpec, limits: Limits, outdir: Path | None,
                 users: dict[str, str] | None, threads: int) -> None:
        import torch

        from sdgen.serve.app import create_app
        from sdgen.serve.engine import Engine

        if threads:
            torch.set_num_threads(threads)
        self.engine = Engine(settings, spec, limits, outdir)
        self.engine.start()  # the model loads before the replica counts as ready
        self.asgi = create_app(self.engine, users)

    def __serve_build_asgi_app__(self) -> Any:
        return self.asgi

    def __del__(self) -> None:
        self.engine.close()


def serve_replicas(replicas: Replicas, settings: dict[str, Any], spec: ModelSpec, limits: Limits,
                   outdir: Path | None, users: dict[str, str] | None, host: str, port: int,
                   ready: threading.Event | None = None, stop: threading.Event | None = None) -> None:
    """Start a local Ray cluster (loopback unless host says otherwise), deploy the replicas behind Ray Serve's
    proxy on host:port, block until `stop` is set (or Ctrl-C), then tear it all down."""
    with ray_cluster.connected(None) as ray:
        from ray import serve

        most = replicas.max_replicas or replicas.replicas
        shape = ray_cluster.worker_shape(ray_cluster.alive_nodes(ray), most, "max_replicas" if
                                         replicas.max_replicas else "replicas")
        options = replicas.deployment_options(limits.max_queue)
        actor = {"num_cpus": shape.num_cpus, "num_gpus": shape.num_gpus}
        deployment = serve.deployment(serve.ingress()(SdgenReplica), name="sdgen", ray_actor_options=actor,
                                      **options)
        serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
        try:
            try:
                serve.run(deployment.bind(settings, spec, limits, outdir, users, shape.threads),
                          name=APP_NAME, route_prefix="/")
            except RuntimeError as error:  # a replica failed to start: its reason is in Ray's logs
                raise SdgenError(f"The replicas did not start: {str(error).splitlines()[0]} "
                                 "(Ray's logs: /tmp/ray/session_latest/logs/serve).") from None
            log.info("sdgen serve: %s replicas on Ray Serve at http://%s:%d/sdapi/v1; Ctrl-C stops.",
                     replicas.replicas, host, port)
            if ready is not None:
                ready.set()
            wait_until_stopped(stop or threading.Event())
        finally:
            serve.shutdown()


def wait_until_stopped(stop: threading.Event, every_s: float = 0.5) -> None:
    """Block until `stop` is set or Ctrl-C. Never one untimed wait: a signal that one of Ray's threads takes
    (not the main thread) runs Python's handler only when the main thread next wakes, and an untimed wait
    never does. (The handler itself is sdgen's: sdgen/cli/serve.py installs it, even over an inherited
    SIG_IGN.)"""
    while not stop.wait(every_s):
        pass


__all__ = ["Replicas", "serve_replicas", "wait_until_stopped"]
