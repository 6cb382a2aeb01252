"""What one image to make is (a checked request and one of its jobs), what a made one holds, and which
images can share a U-Net call (the option table's key)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from sdgen.config import options
from sdgen.engine.request import CheckedRequest, ImageJob

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


@dataclass(frozen=True)
class ImageTask:
    """One image to make: a checked request and one of its jobs (index, seed, prompt, LoRAs, embeddings)."""

    request: CheckedRequest
    job: ImageJob

    @classmethod
    def of(cls, request: CheckedRequest, index: int = 0) -> ImageTask:
        return cls(request, request.jobs[index])

    @property
    def seed(self) -> int:
        return self.job.seed

    @property
    def index(self) -> int:
        return self.job.index


@dataclass(frozen=True)
class GeneratedImage(ImageTask):
    """An image made: its task, the pixels, and how it was made."""

    image: Image.Image
    seconds: float = 0.0  # this image's share of its batch's wall time (encode, denoise, decode)
    vae_dtype: str | None = None  # the dtype that decoded it (float32 after the NaN guard's retry)


def batch_key(task: HasRequest) -> tuple:
    """Images whose tasks agree on all of this can share U-Net calls: every option that shapes the picture
    but those the table marks `shares_unet_call` (prompts, seeds, text-side options may differ), and the
    LoRAs (the U-Net's weights during the call)."""
    return options.table().unet_key(task.request, task.job)


Task = TypeVar("Task", bound="HasRequest")


class HasRequest(Protocol):
    """A task of a batch: a checked request and one of its jobs (ImageTask, a batch's PlannedImage)."""

    request: CheckedRequest
    job: ImageJob


def consecutive_batches(tasks: Iterable[Task], batch_size: int) -> Iterator[list[Task]]:
    """Runs of consecutive tasks (anything with a .request and a .job) that can share U-Net calls, up to
    batch_size each: a fixed grouping that depends on the input alone (wildcards may give images other LoRAs)."""
    batch: list[Task] = []
    for task in tasks:
        if batch and (len(batch) == batch_size or batch_key(batch[0]) != batch_key(task)):
            yield batch
            batch = []
        batch.append(task)
    if batch:
        yield batch
