"""The loaded model and the one worker that uses it: requests wait in a first-come-first-served queue and
run one at a time; /progress reads the running one's state; interrupt and skip stop its loop at the next step.

The HTTP side turns a body into a checked GenerationRequest (`prepare`, before anything is queued), submits
the job and waits; the worker thread loads the model a job needs (the served one, or an override), generates,
saves to --outdir when asked, and encodes the response.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sdgen.config.specs import OutputSpec
from sdgen.engine.checking import check_request
from sdgen.engine.denoise import StepInfo, StopDenoising
from sdgen.engine.model_spec import CheckedModelSpec, ModelSpec
from sdgen.engine.pipeline import iter_generate
from sdgen.engine.prologue import load, prepare
from sdgen.engine.request import CheckedRequest, GenerationRequest
from sdgen.errors import NAME, InvalidRequestError, SdgenError
from sdgen.record.metadata import encoded_image
from sdgen.record.output import plan_outputs
from sdgen.serve import listings
from sdgen.serve.a1111_options import RANDN_SOURCES, check_kept, served_options
from sdgen.serve.a1111_options import check as check_a1111_options
from sdgen.serve.controlnet import unit_values
from sdgen.serve.schema import GenerationBody
from sdgen.serve.translate import a1111_response, request_values

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.loader import StableDiffusionParts

log = logging.getLogger("sdgen")
T = TypeVar("T")


class QueueFull(SdgenError):
    """--max-queue requests are waiting already: 503 with a Retry-After."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"The queue is full ({waiting} requests waiting); try again in {retry_after} s.")
        self.retry_after = retry_after


class ShuttingDown(SdgenError):
    """The server is stopping: queued requests are not run."""


@dataclass(frozen=True)
class Limits:
    """What a server owner allows one request (0 or None: no limit) and how many may wait."""

    max_pixels: int | None = 2048 * 2048
    max_steps: int | None = 150
    max_batch: int | None = 16
    max_queue: int | None = 32

    def breaches(self, request: GenerationRequest) -> list[tuple[str, int, str, str]]:
        """Each limit a request is past: (what it asks, the limit, the limit's flag, the flags that set it)."""
        assert request.width is not None and request.height is not None
        width, height = request.hires_size if request.hires_scale else (request.width, request.height)
        steps = max(request.num_inference_steps, request.hires_steps or 0)
        asked = (
            (width * height, self.max_pixels, f"{width}x{height} = {width * height} pixels", "--max-pixels",
             "--width, --height" + (", hires_scale" if request.hires_scale else "")),
            (steps, self.max_steps, f"{steps} steps", "--max-steps",
             "--steps" + (", hires_steps" if request.hires_steps else "")),
            (request.num_images, self.max_batch, f"{request.num_images} images (batch_size x n_iter)", "--max-batch",
             "num_images"),
        )
        return [(what, limit, flag, sources) for value, limit, what, flag, sources in asked if limit and value > limit]

    def check(self, request: GenerationRequest) -> None:
        """InvalidRequestError (422) for a request past a limit, naming it and its flag."""
        for what, limit, flag, _ in self.breaches(request):
            raise InvalidRequestError(f"Too much for this server: {what}; its limit is {limit} ({flag}).")

    def check_defaults(self, request: GenerationRequest) -> None:
        """At start-up: the server's own default request (its flags, preset, config) must be within its limits,
        or every request that leaves a field out would be refused. InvalidRequestError naming both flags."""
        for what, limit, flag, sources in self.breaches(request):
            raise InvalidRequestError(
                f"Invalid {NAME} {limit}: the server's own defaults ask {what} ({sources}), so every request that "
                f"leaves them out would be refused; raise {flag} or lower the default.",
                flag.strip("-").replace("-", "_"),
            )


@dataclass
class Progress:
    """A1111's `shared.state` of the running request, read by GET /sdapi/v1/progress."""

    job: str = ""
    job_count: int = 0  # denoising loops in the request: batches, twice with a hires pass
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False
    job_timestamp: str = "0"
    started: float = 0.0
    latents: Any = None  # the first image's predicted clean latents at the last step, for the preview
    size: tuple[int, int] | None = None  # the image's (width, height)

    def state(self) -> dict[str, Any]:
        keys = ("job", "job_count", "job_no", "sampling_step", "sampling_steps", "interrupted", "skipped",
                "job_timestamp")
        return {key: getattr(self, key) for key in keys} | {"stopping_generation": False}

    def fraction(self) -> float:
        """A1111's formula: done loops plus the running one's share of steps."""
        if not self.job_count:
            return 0.0
        done = 0.01 + self.job_no / self.job_count
        if self.sampling_steps:
            done += self.sampling_step / self.sampling_steps / self.job_count
        return min(done, 1.0)


@dataclass
class Job:
    body: GenerationBody
    request: CheckedRequest
    spec: CheckedModelSpec  # the model it needs (the served one, or override_settings' choice)
    save: bool  # --outdir is set and the body asked for save_images


@dataclass
class Engine:
    settings: dict[str, Any]  # the server's own settings (flags, preset, config): every request's defaults
    spec: ModelSpec  # the served model (POST /options sd_model_checkpoint changes it)
    limits: Limits = field(default_factory=Limits)
    outdir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # A1111's settings the API reads and writes
    progress: Progress = field(default_factory=Progress)
    load: Callable[[ModelSpec], StableDiffusionParts] | None = None  # None: loader.load_model
    _parts: StableDiffusionParts | None = None
    _parts_spec: ModelSpec | None = None
    _jobs: deque = field(default_factory=deque)
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _worker: threading.Thread | None = None
    _closing: bool = False
    closed_at: float | None = None  # time.monotonic() when close() was called
    shutdown_grace: float = 5.0  # seconds a running request may take to reach its next step once the server stops
    _seconds: deque = field(default_factory=lambda: deque(maxlen=20))  # recent jobs' durations

    def __post_init__(self) -> None:
        self.options = served_options(self.settings, listings.title(self.spec.model), self.spec.rng) | self.options

    # --- the HTTP side -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and load the served model on it (errors surface before the server listens). All
        torch work runs on that one thread: a second thread doing torch work keeps a second OpenMP team."""
        self._worker = threading.Thread(target=self._work, name="sdgen-worker", daemon=True)
        self._worker.start()
        self.submit(lambda: self._use(self.spec)).result()

    def prepare(self, body: GenerationBody) -> Job:
        """Every check a body can fail, before it is queued: InvalidRequestError (422) naming the field."""
        overrides = body.override_settings.model_dump(exclude_none=True)
        spec = self.model_for(overrides)
        chosen = self.options | overrides
        defaults = self.settings | {"model": spec.model, "clip_skip": self.options["CLIP_stop_at_last_layers"],
                                    "eta_noise_seed_delta": chosen["eta_noise_seed_delta"]}
        values = request_values(body, defaults)
        values |= unit_values(body.alwayson_scripts, defaults, values)  # ControlNet units
        request = check_request(GenerationRequest.from_settings(values), spec)
        self.limits.check(request)
        return Job(body, request, spec, save=body.save_images and self.outdir is not None)

    def model_for(self, settings: Mapping[str, Any]) -> CheckedModelSpec:
        """The model that A1111 settings (sd_model_checkpoint, sd_vae) select, from the served one (checked;
        the served one itself when they name it)."""
        changes = {}
        checkpoint = settings.get("sd_model_checkpoint")
        if checkpoint:
            changes["model"] = listings.find_checkpoint(str(checkpoint), self.spec, self.settings).model
        vae = settings.get("sd_vae")
        if vae is not None:
            changes["vae"] = listings.find_vae(str(vae), self.spec, self.settings)
        if settings.get("randn_source") in RANDN_SOURCES:  # where noise is drawn is the placement: a reload
            changes["rng"] = RANDN_SOURCES[settings["randn_source"]]
        return self.spec.checked().changed(**changes)

    def submit(self, work: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue work for the worker; QueueFull when --max-queue requests wait already."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._wake:
            if self._closing:
                raise ShuttingDown("The server is shutting down.")
            waiting = self.waiting()
            if self.limits.max_queue and waiting >= self.limits.max_queue:
                raise QueueFull(waiting, self.retry_after(waiting))
            self._jobs.append((future, work))
            self._wake.notify()
        return future

    def waiting(self) -> int:
        """Requests queued and not cancelled (by their client going away)."""
        return sum(1 for future, _ in self._jobs if not future.cancelled())

    def running(self) -> bool:
        return self.progress.job_count > 0

    def retry_after(self, waiting: int) -> int:
        return max(1, math.ceil(self.mean_seconds() * (waiting + 1)))

    def mean_seconds(self) -> float:
        return sum(self._seconds) / len(self._seconds) if self._seconds else 1.0

    def served_sha256(self) -> str | None:
        """The served model's U-Net sha256 when it is the one in memory (A1111's model hash)."""
        parts = self._parts
        return parts.source.unet_sha256 if parts is not None and self._parts_spec == self.spec else None

    def interrupt(self) -> None:
        """Stop the running request at its next step; it returns what it has (A1111's Interrupt)."""
        if self.running():
            self.progress.interrupted = True

    def skip(self) -> None:
        """Stop the running batch at its next step and go on with the next one (A1111's Skip)."""
        if self.running():
            self.progress.skipped = True

    def close(self) -> None:
        """Stop: interrupt the running request (it stops at its next step), cancel the queued ones (their clients
        get 503), refuse new work, let the worker end."""
        with self._wake:
            self._closing = True
            self.closed_at = self.closed_at or time.monotonic()
            for future, _ in self._jobs:
                future.cancel()
            self._jobs.clear()
            self._wake.notify()
        self.interrupt()

    def past_grace(self) -> bool:
        """The server has been stopping for longer than a running request may take to reach its next step."""
        return self.closed_at is not None and time.monotonic() - self.closed_at > self.shutdown_grace

    def set_options(self, changes: Mapping[str, Any]) -> None:
        """POST /options: the settings sdgen acts on are checked; a new model or VAE is loaded (in the queue,
        after the running request); every key is kept and sent back by GET."""
        spec, known = self.check_options(changes)
        if spec != self.spec:
            try:
                self.load_later(spec).result()  # wait for the load, as A1111 does
            except concurrent.futures.CancelledError:
                raise ShuttingDown("The server is shutting down: the model was not loaded.") from None
        self.apply_options(spec, known)

    def check_options(self, changes: Mapping[str, Any]) -> tuple[ModelSpec, dict[str, Any]]:
        """The model a change of options selects, and the options to keep (all of them: those sdgen does not
        act on are sent back as given); InvalidRequestError (422) for a bad value of one it acts on."""
        check_a1111_options(changes)
        check_kept(self.options, changes)
        return self.model_for(changes), dict(changes)

    def load_later(self, spec: ModelSpec) -> concurrent.futures.Future[Any]:
        """Queue loading `spec` (after the running request), for a change of options."""
        return self.submit(lambda: self._use(spec))

    def apply_options(self, spec: ModelSpec, known: dict[str, Any]) -> None:
        """Keep checked options, once their model is loaded."""
        self.spec = spec
        if "sd_model_checkpoint" in known:
            known["sd_model_checkpoint"] = listings.title(spec.model)
        self.options |= known

    # --- the worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                future, work = self._jobs.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # its client went away while it waited
            try:
                future.set_result(work())
            except BaseException as error:  # noqa: BLE001 (the client gets it; the worker goes on)
                future.set_exception(error)

    def _use(self, spec: ModelSpec) -> StableDiffusionParts:
        """The loaded model for `spec`: the one in memory, or that one dropped and this one loaded."""
        if self._parts is None or self._parts_spec != spec:
            self._parts = self._parts_spec = None
            gc.collect()  # free the old weights before the new ones load
            started = time.perf_counter()
            self._parts = (self.load or _load)(spec)
            self._parts_spec = spec
            log.info("Loaded %s in %.1f s", spec.model, time.perf_counter() - started)
        return self._parts

    def run(self, job: Job) -> dict[str, Any]:
        """Make a job's images (on the worker): its model, the loop with progress, --outdir, the response."""
        started = time.perf_counter()
        parts = self._use(job.spec)
        request = job.request
        targets = plan_outputs(request, OutputSpec(output=f"{self.outdir}/")) if job.save else []
        options = self.options | job.body.override_settings.model_dump(exclude_none=True)
        encoding = {"metadata": bool(options["enable_pnginfo"]), "kind": str(options["samples_format"]),
                    "quality": options["jpeg_quality"], "lossless": options["webp_lossless"]}
        loops = math.ceil(request.num_images / request.batch_size) * (2 if request.hires_scale else 1)
        kind = "img2img" if request.is_img2img else "txt2img"
        self.progress = Progress(kind, loops, started=time.time(), job_timestamp=time.strftime("%Y%m%d%H%M%S"),
                                 size=(request.width, request.height))
        results, pngs = [], []
        try:
            for result in iter_generate(request, parts, on_step=self._on_step):
                results.append(result)
                pngs.append(encoded_image(result, parts, **encoding))
                if targets:  # --outdir keeps PNGs, named as `sdgen PROMPT` names them
                    png = pngs[-1] if encoding["kind"] == "png" else encoded_image(result, parts, encoding["metadata"])
                    targets[result.index].write(png)
                if self.progress.interrupted or self._closing:
                    break
        finally:
            self.progress = Progress()
            self._seconds.append(time.perf_counter() - started)
        return a1111_response(job.body, results, pngs, parts)

    def _on_step(self, info: StepInfo) -> None:
        state = self.progress
        if info.index == 0 and state.sampling_step:
            state.job_no, state.skipped = state.job_no + 1, False  # a new loop (next batch, or the hires pass)
        state.sampling_step, state.sampling_steps = info.index + 1, info.total
        state.latents = info.pred_x0[0].float().cpu().numpy()  # (4, h, w) for the preview, read by another thread
        if state.interrupted or state.skipped or self._closing:
            raise StopDenoising  # the server stopping interrupts too, even a request that started just before

    def preview(self) -> bytes | None:
        """The running image as a PNG: the cheap latent-to-RGB map (sdgen.pictures.previews' approx) of its
        predicted clean latents, in numpy: torch work stays on the worker's thread."""
        state = self.progress
        latents = state.latents
        if latents is None:
            return None
        import numpy as np
        from PIL import Image

        from sdgen.pictures.previews import LATENT_TO_RGB
        from sdgen.record.output import png_bytes

        rgb = np.einsum("chw,cr->hwr", latents, np.asarray(LATENT_TO_RGB, dtype=np.float32))
        rgb = np.nan_to_num(rgb, nan=-1.0).clip(-1, 1)
        image = Image.fromarray(((rgb / 2 + 0.5) * 255).round().astype("uint8"))
        return png_bytes(image if state.size is None else image.resize(state.size, Image.Resampling.BILINEAR))


def _load(spec: ModelSpec) -> StableDiffusionParts:
    """The run prologue every command shares: check, place, plan, load."""
    return load(prepare(spec))
