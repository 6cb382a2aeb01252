"""The Ray cluster a run uses: what `--ray ADDRESS` means, connecting (or starting one on this machine), and
how many workers fit, with how many threads each. Ray is imported only here and only when connecting;
`sdgen[ray]` is the extra (docs/ray.md)."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sdgen.errors import NAME, InvalidRequestError, SdgenError, UsageError
from sdgen.interrupts import STOP_SIGNALS

LOCAL, AUTO = "local", "auto"
MISSING_EXTRA = 'Ray is not installed: pip install "sdgen[ray]" (Ray Data and Ray Serve)'
THREADS_PER_CPU_WORKER = 4  # a CPU worker's torch threads: more per process scale poorly, fewer waste memory
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


def is_address(text: str) -> bool:
    """Whether a word after `--ray` is its address (else `--ray` stands alone and the word is the next argument)."""
    return text.lower() in (LOCAL, AUTO) or text.startswith("ray://") or _HOST_PORT.match(text) is not None


def parse_address(text: str | None) -> str | None:
    """The address ray.init gets: None starts a local cluster; `auto`, `ray://HOST:PORT` or `HOST:PORT`."""
    if text is None or text.strip().lower() in ("", LOCAL):
        return None
    text = text.strip()
    if text.lower() == AUTO:
        return AUTO
    match = _HOST_PORT.match(text.removeprefix("ray://"))
    if match is None or not 0 < int(match.group(2)) <= 65535:
        raise InvalidRequestError(
            f"Invalid {NAME} {text!r}: write local, auto, ray://HOST:PORT (Ray Client) or HOST:PORT (the head's GCS).",
            "ray",
        )
    return text


def is_loopback(address: str | None) -> bool:
    """A local cluster, or an address on this machine's loopback (then this process joins on 127.0.0.1 too)."""
    if address is None:
        return True
    match = _HOST_PORT.match(address.removeprefix("ray://"))
    if match is None:
        return False
    host = match.group(1).strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_ray() -> None:
    """The extra is installed (Ray is not imported yet: a cluster on loopback must be chosen before)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UsageError(f"{MISSING_EXTRA}.")


def _import_ray(loopback: bool) -> Any:
    """Ray, told to stay on 127.0.0.1 for a cluster on this machine: Ray otherwise swaps a loopback address for
    the machine's outward one (services.resolve_ip_for_localhost) and reaches nothing there. Its documented
    switch for single-machine clusters, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, keeps it on loopback."""
    require_ray()
    if loopback:
        os.environ.setdefault(_SINGLE_MACHINE, "0")
    try:
        import ray
        from ray._private import ray_constants
    except ImportError as error:
        raise UsageError(f"{MISSING_EXTRA} ({error}).") from None
    if loopback and os.environ.get(_SINGLE_MACHINE) == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False  # read when connecting; ray may have been imported before
    return ray


@contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """ray.init for the run, ray.shutdown after (a local cluster stops with it). Yields the ray module."""
    if address is None and os.environ.get("RAY_ADDRESS"):  # Ray's own way to name the cluster to join
        address = os.environ["RAY_ADDRESS"]
    ray = _import_ray(is_loopback(address))
    # stdout carries sdgen's data only: the workers' own output stays in Ray's log files (ray logs, the dashboard)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if address is None:
        kwargs["include_dashboard"] = False
    _messages_to_stderr(ray)
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SdgenError(f"Cannot reach the Ray cluster at {address}: {str(error).splitlines()[0]}") from None
    finally:  # ray.init takes SIGTERM for itself (exit 15); a stopped batch keeps sdgen's 143 and its summary
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)
    try:
        yield ray
    finally:
        ray.shutdown()


def _messages_to_stderr(ray: Any) -> None:
    """Ray prints the cluster's messages to this driver ("(raylet) A worker died ...") on stdout, which carries
    sdgen's data only (image paths, JSON lines): send them to stderr (ray._private.worker.print_to_stdstream)."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "sdgen_stderr", False):
        return

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr.sdgen_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


@dataclass(frozen=True)
class WorkerShape:
    """How many workers, and what each one asks Ray for."""

    workers: int
    num_cpus: float
    num_gpus: float

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))


def worker_shape(nodes: list[dict[str, float]], workers: int | None, key: str = "workers") -> WorkerShape:
    """From the alive nodes' resources: one worker per GPU when the cluster has GPUs, else CPU workers of up to
    four threads (no more than the smallest node has). Refuses more workers than the cluster can hold."""
    if workers is not None and workers < 1:
        raise InvalidRequestError(f"Invalid {NAME} {workers}: 1 or more.", key)
    gpus = sum(int(node.get("GPU", 0)) for node in nodes)
    if gpus:
        if workers is not None and workers > gpus:
            raise InvalidRequestError(
                f"Invalid {NAME} {workers}: the cluster has {gpus} GPUs, one worker each; give at most {gpus}.",
                key,
            )
        return WorkerShape(workers or gpus, 1.0, 1.0)
    cpus = [int(node.get("CPU", 0)) for node in nodes if node.get("CPU", 0) >= 1]
    if not cpus:
        raise SdgenError("The Ray cluster has no CPU or GPU to run a worker on.")
    total = sum(cpus)
    if workers is not None and workers > total:
        raise InvalidRequestError(
            f"Invalid {NAME} {workers}: the cluster has {total} CPUs, at least one per worker; give at most {total}.",
            key,
        )
    threads = min(THREADS_PER_CPU_WORKER, min(cpus)) if workers is None else max(1, min(min(cpus), total // workers))
    count = workers or max(1, sum(n // threads for n in cpus))
    return WorkerShape(count, float(threads), 0.0)


def alive_nodes(ray: Any) -> list[dict[str, float]]:
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
