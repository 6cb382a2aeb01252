"""Each image's prompts over one denoising pass, as embeddings that change at the steps A1111 changes them.

sdgen/prompts/editing.py says which text each AND part and the negative prompt read at each step (A1111's
schedules); here each distinct text is encoded once, an image's embeddings are padded to one length (with
the empty prompt's chunk, as a prompt and its negative always are), and a step-end hook of the loop switches
the batch's conditioning after the last step of an entry. A prompt with no editing, no AND and no part
weight gives exactly the conditioning sdgen always gave, and no hook.

Steps are counted as A1111 counts them: the schedule spans steps x the scheduler's order (second-order
schedulers, A1111's "second_order" samplers, call the model about twice a step) and the loop's index, from
0 at the first step a pass runs, picks the entry (img2img and the hires pass start their count at 0 too);
the hires pass's schedule counts on from the first pass (sdgen.prompts.editing.prompt_schedule).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdgen.engine.denoise import Conditioning, StepEnd, StepEndHook
from sdgen.engine.plugins.composable import ComposableConditioning, with_parts
from sdgen.engine.text import pad_to_chunks
from sdgen.prompts.editing import Schedule, composable_parts, prompt_schedule
from sdgen.prompts.networks import without_tags

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.request import GenerationRequest

Encode = Callable[[str], "torch.Tensor"]  # one text -> (1, 77 k, D), remembered by the caller


@dataclass(frozen=True)
class PassSteps:
    """How one pass counts steps for its schedules: the first pass over `steps`; a hires pass over
    `hires_steps` after `steps` of the first pass (both already times the scheduler's order)."""

    steps: int
    hires_steps: int | None = None

    def schedule(self, text: str) -> Schedule:
        return prompt_schedule(text, self.steps, self.hires_steps)


Parts = tuple[tuple[Schedule, float], ...]  # each AND part's schedule and weight


def text_schedules(prompt: str, request: GenerationRequest, counting: PassSteps) -> tuple[Parts, Schedule | None]:
    """The texts each AND part of an image's `prompt` and the request's negative prompt read over the pass,
    with each part's weight; the negative is None without guidance. --no-weighting reads both as typed."""
    prompt, negative = without_tags(prompt), without_tags(request.negative_prompt)
    guided = request.guidance_scale > 1.0
    if not request.weighting:
        steps = counting.hires_steps or counting.steps
        literal: Schedule = ((steps, prompt),)
        return ((literal, 1.0),), ((steps, negative),) if guided else None
    parts = tuple((counting.schedule(text), weight) for text, weight in composable_parts(prompt))
    return parts, counting.schedule(negative) if guided else None


@dataclass(frozen=True, eq=False)
class ScheduledEmbeds:
    """One text's schedule as embeddings: entry k lasts through step ends[k] (0-based loop steps)."""

    ends: tuple[int, ...]
    embeds: tuple[torch.Tensor, ...]  # (1, 77 k, D) each, all of one length

    def entry(self, index: int) -> int:
        return min(bisect.bisect_left(self.ends, index), len(self.ends) - 1)

    def at(self, index: int) -> torch.Tensor:
        return self.embeds[self.entry(index)]


@dataclass(frozen=True, eq=False)
class ImagePrompts:
    """One image's AND parts (each scheduled, with its weight) and negative prompt over one pass."""

    parts: tuple[ScheduledEmbeds, ...]
    weights: tuple[float, ...]
    negative: ScheduledEmbeds | None

    @property
    def length(self) -> int:
        """Tokens per embedding (77 per chunk): only images of one length stack into a U-Net call."""
        return self.parts[0].embeds[0].shape[1]

    @property
    def plain(self) -> bool:
        return len(self.parts) == 1 and self.weights == (1.0,)

    def key(self, index: int) -> tuple[int, ...]:
        """Which entry of each schedule step `index` reads."""
        negative = () if self.negative is None else (self.negative.entry(index),)
        return (*(part.entry(index) for part in self.parts), *negative)


def image_prompts(prompt: str, request: GenerationRequest, counting: PassSteps, encode: Encode) -> ImagePrompts:
    """Encode every distinct text of the schedules of an image's `prompt` (and the request's negative
    prompt) once, padded to the longest of them."""
    parts, negative = text_schedules(prompt, request, counting)
    schedules = [schedule for schedule, _ in parts] + ([negative] if negative is not None else [])
    encoded = {text: encode(text) for schedule in schedules for _, text in schedule}
    length = max(embeds.shape[1] for embeds in encoded.values())
    if any(embeds.shape[1] != length for embeds in encoded.values()):
        empty = encode("")
        chunks = length // empty.shape[1]
        encoded = {text: pad_to_chunks(embeds, chunks, empty) for text, embeds in encoded.items()}

    def scheduled(schedule: Schedule) -> ScheduledEmbeds:
        return ScheduledEmbeds(tuple(end for end, _ in schedule), tuple(encoded[text] for _, text in schedule))

    return ImagePrompts(
        tuple(scheduled(schedule) for schedule, _ in parts),
        tuple(weight for _, weight in parts),
        None if negative is None else scheduled(negative),
    )


def batch_conditioning(images: list[ImagePrompts], index: int) -> Conditioning:
    """The batch's conditioning at step `index`: (B, 77 k, D) embeddings; with AND or a part weight in any
    image, every part of every image too (sdgen/engine/plugins/composable.py combines them)."""
    import torch

    prompt = torch.cat([image.parts[0].at(index) for image in images])
    negative = None
    if images[0].negative is not None:
        negative = torch.cat([image.negative.at(index) for image in images])  # type: ignore[union-attr]
    cond = Conditioning(prompt, negative)
    if all(image.plain for image in images):
        return cond
    parts = torch.cat([part.at(index) for image in images for part in image.parts])
    owners = tuple(number for number, image in enumerate(images) for _ in image.parts)
    weights = tuple(weight for image in images for weight in image.weights)
    return with_parts(cond, parts, owners, weights)


def prompt_switch(images: list[ImagePrompts]) -> StepEndHook | None:
    """A step-end hook that puts the next step's embeddings in the conditioning where any schedule moves
    on to its next entry; None when no image's prompt changes during the pass."""
    if all(len(schedule.ends) == 1 for image in images for schedule in _schedules(image)):
        return None

    def switch(step: StepEnd) -> StepEnd | None:
        following = step.index + 1
        if all(image.key(following) == image.key(step.index) for image in images):
            return None
        fresh = batch_conditioning(images, following)
        cond = step.conditioning
        changes: dict = {"prompt_embeds": fresh.prompt_embeds}
        if cond.guided:  # the guidance cut-off may have dropped the negative: it stays dropped
            changes["negative_prompt_embeds"] = fresh.negative_prompt_embeds
        if isinstance(cond, ComposableConditioning) and isinstance(fresh, ComposableConditioning):
            changes["part_embeds"] = fresh.part_embeds
        return dataclasses.replace(step, conditioning=dataclasses.replace(cond, **changes))

    return switch


def _schedules(image: ImagePrompts) -> tuple[ScheduledEmbeds, ...]:
    return (*image.parts, *(() if image.negative is None else (image.negative,)))
