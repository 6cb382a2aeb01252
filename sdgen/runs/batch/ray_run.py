"""`sdgen batch --ray`: the same batch (input, plan, names, seeds, manifest, resume: run.py, plan.py,
manifest.py), its chunks made on a Ray cluster.

The driver (this process) checks, plans and sees what is done exactly as run_batch does, then hands each
chunk to Ray Data's `map_batches` over an actor pool: one loaded model per actor, one chunk in flight per
actor (a free actor takes the next one, so a slow worker takes fewer). Ray restarts an actor that dies and
runs its chunk again on a live one; only that chunk is made twice, and its image is written once (a worker
finds the file already made from this request, or --gather writes it here). Results come back in plan
order, so the driver appends the same manifest a single-process run writes. docs/ray.md.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sdgen.config.specs import OutputSpec
from sdgen.engine.model_spec import ModelSpec
from sdgen.errors import NAME, GenerationError, InvalidRequestError, SdgenError, UsageError
from sdgen.hardware import ray_cluster
from sdgen.models.hub import canonical_model
from sdgen.runs.batch.manifest import is_done
from sdgen.runs.batch.plan import PlannedImage
from sdgen.runs.batch.run import BatchOptions, Summary, _Run, made_image, run_batch

log = logging.getLogger("sdgen")


@dataclass(frozen=True)
class RayOptions:
    """--ray, --workers, --gather, checked (no Ray imported)."""

    address: str | None  # None: a local cluster
    workers: int | None = None
    gather: bool = False

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RayOptions | None:
        """None without --ray; --workers or --gather without it are refused."""
        if values.get("ray") is None:
            for key in ("workers", "gather"):
                if values.get(key):
                    raise InvalidRequestError(f"{NAME} needs --ray: it says how the Ray workers run.", key)
            return None
        if values.get("workers") is not None and values["workers"] < 1:
            raise InvalidRequestError(f"Invalid {NAME} {values['workers']}: 1 or more.", "workers")
        return cls(ray_cluster.parse_address(values["ray"]), values.get("workers"), bool(values.get("gather")))


def run_batch_on_ray(
    options: BatchOptions, defaults: Mapping[str, Any], spec: ModelSpec, emit: Callable[[str], None], ray: RayOptions
) -> Summary:
    """run_batch, its chunks made by Ray workers."""
    ray_cluster.require_ray()  # the extra first: one line, exit 2
    if options.pictures.preview_file is not None:
        raise InvalidRequestError("--preview-file does not work with --ray: the steps run on the workers.")
    if options.output.save_control:
        raise InvalidRequestError("--save-control does not work with --ray yet; leave one of them out.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InvalidRequestError("--ray under accelerate launch: choose one; Ray hands out the work itself.")

    class Run(RayRun):
        settings = ray

    return run_batch(options, defaults, spec, emit, make_run=Run)


class RayRun(_Run):
    """A batch run whose chunks are queued while planning, then made by the cluster's workers."""

    settings: RayOptions

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.queued: list[tuple[list[PlannedImage], set[Path]]] = []

    def _make(self, chunk: list[PlannedImage], todo: set[Path]) -> None:
        self.queued.append((chunk, todo))

    def _handed_out(self) -> None:
        if not self.queued:
            return
        with ray_cluster.connected(self.settings.address) as ray:
            shape = ray_cluster.worker_shape(ray_cluster.alive_nodes(ray), self.settings.workers)
            log.info("sdgen batch --ray: %d chunks on %d workers (%g CPUs, %g GPUs each)", len(self.queued),
                     shape.workers, shape.num_cpus, shape.num_gpus)
            for row in _made_on(ray, self.queued, shape, self._maker_args(shape)):
                self._arrived(row)

    def _maker_args(self, shape: ray_cluster.WorkerShape) -> tuple:
        spec = ModelSpec(**{field.name: getattr(self.spec, field.name) for field in fields(ModelSpec)})
        return (spec, self.options.output, os.getcwd(), self.settings.gather, shape.threads)

    def _arrived(self, row: Mapping[str, Any]) -> None:
        image = self._images[row["path"]]
        if row["error"]:
            self.problem(image.line, str(row["error"]), image, usage=False, everywhere=False)
            return
        record = pickle.loads(row["record"])
        self.write(image, row["png"] if self.settings.gather else None, record)

    @property
    def _images(self) -> dict[str, PlannedImage]:
        if not hasattr(self, "_by_path"):
            self._by_path = {str(image.path): image for chunk, _ in self.queued for image in chunk}
        return self._by_path


def _made_on(ray: Any, queued: list, shape: ray_cluster.WorkerShape, maker_args: tuple) -> Any:
    """Each chunk a row of its own block, made by an actor pool, read back in plan order."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # plan order: the manifest of a single-process run
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    context.enable_progress_bars = False  # sdgen's own lines say what is made; Ray's go to its logs
    rows = [{"work": pickle.dumps(item)} for item in queued]
    data = ray.data.from_items(rows, override_num_blocks=len(rows))
    made = data.map_batches(
        ChunkMaker,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=shape.workers, max_tasks_in_flight_per_actor=1),
        fn_constructor_args=maker_args,
        num_cpus=shape.num_cpus,
        num_gpus=shape.num_gpus or None,
    )
    return made.iter_rows()


class ChunkMaker:
    """One Ray actor: one loaded model, making one chunk at a time (run in the worker's process)."""

    def __init__(self, spec: ModelSpec, output: OutputSpec, cwd: str, gather: bool, threads: int) -> None:
        if os.path.isdir(cwd):  # relative model and output paths mean what they mean on the driver
            os.chdir(cwd)
        import torch

        from sdgen.engine.prologue import load, prepare

        torch.set_num_threads(threads)
        machine = prepare(spec)
        self.parts = load(machine)
        self.model = canonical_model(machine.spec.model)
        self.output, self.gather = output, gather

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        from sdgen.engine.pipeline import generate_batch

        found: dict[str, list] = {"path": [], "record": [], "png": [], "error": []}
        for work in batch["work"]:
            chunk, todo = pickle.loads(work)
            try:
                results = generate_batch(list(chunk), self.parts)
            except GenerationError as error:
                results = [error] * len(chunk)
            for image, result in zip(chunk, results, strict=True):
                if image.path in todo:
                    self._one(image, result, found)
        return {key: np.array(values, dtype=object) for key, values in found.items()}

    def _one(self, image: PlannedImage, result: Any, found: dict[str, list]) -> None:
        data, record, error = b"", b"", ""
        try:
            if isinstance(result, SdgenError):
                raise result
            data, made = made_image(image, result, self.parts, self.model, self.output)
            record = pickle.dumps(made)
            if not self.gather:
                self._write_here(image, data)
                data = b""
        except (SdgenError, UsageError) as problem:
            error = str(problem)
        found["path"].append(str(image.path))
        found["record"].append(record)
        found["png"].append(data)
        found["error"].append(error)

    def _write_here(self, image: PlannedImage, data: bytes) -> None:
        """Into the shared folder; a chunk run again after a worker died finds its image already there."""
        from sdgen.record.output import write_atomic

        if not self.output.overwrite and is_done(image, {}, self.model):
            return
        write_atomic(image.path, data, overwrite=self.output.overwrite)


__all__ = ["RayOptions", "run_batch_on_ray"]
