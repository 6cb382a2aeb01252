"""generate(request) -> images: the stages, numbered, in order. Text-to-image and image-to-image."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from sdgen.config import options
from sdgen.config.images import open_user_image
from sdgen.config.schedulers import make_scheduler
from sdgen.engine import loader, plugins
from sdgen.engine.denoise import (
    Conditioning,
    StepCallback,
    StepEndHook,
    StepInfo,
    StopDenoising,
    chain_step_end,
    denoise,
)
from sdgen.engine.inpaint import INPAINT_CHANNELS, Inpainting, inpaint_inputs
from sdgen.engine.latents import (
    StartLatents,
    decode_latents,
    encoded_start,
    image_to_tensor,
    initial_noise,
    noised_image_latents,
    set_timesteps,
)
from sdgen.engine.loader import StableDiffusionParts
from sdgen.engine.request import GenerationRequest, InitImage, ModelSpec
from sdgen.engine.text import TextOptions, encode_prompt, pad_to_chunks
from sdgen.errors import GenerationError
from sdgen.hardware.devices import make_generator, torch_dtype
from sdgen.prompts.networks import without_tags

CLIP_TOKENS = 77  # one chunk of a prompt's embedding

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int
    index: int  # position in the run: image i has seed request.seed + i
    request: GenerationRequest  # validated: seed, size and scheduler filled in
    seconds: float  # this image's share of its batch's wall time (encode, denoise, decode)
    vae_dtype: str | None = None  # the dtype that decoded it (float32 after the NaN guard's retry)


@dataclass(frozen=True)
class ImageTask:
    """One image to make: image `index` of a validated request, with seed request.seed + index."""

    request: GenerationRequest
    index: int = 0

    @property
    def seed(self) -> int:
        assert self.request.seed is not None, "validate the request first"
        return self.request.seed + self.index


def batch_key(request: GenerationRequest) -> tuple:
    """Images whose requests agree on all of this can share U-Net calls: every option that shapes the
    picture but those the table marks `shares_unet_call` (prompts, seeds, text-side options may differ)."""
    return options.table().unet_key(request)


def generate(
    request: GenerationRequest,
    model: StableDiffusionParts | ModelSpec | None = None,
    on_step: StepCallback | None = None,
    on_step_end: StepEndHook | None = None,
) -> list[GeneratedImage]:
    """Make `request.num_images` images; `model` is a loaded model, or a spec to load (default SD1.5).
    `on_step` watches each step; `on_step_end` may change the latents or conditioning of the next one."""
    return list(iter_generate(request, model, on_step, on_step_end))


def iter_generate(
    request: GenerationRequest,
    model: StableDiffusionParts | ModelSpec | None = None,
    on_step: StepCallback | None = None,
    on_step_end: StepEndHook | None = None,
) -> Iterator[GeneratedImage]:
    """Like generate(), but yields each batch's images as soon as they are decoded (write them at once)."""
    # 1. check inputs: every rule, before any weights load
    request = request.validated()

    # 2. load the model (once per process when the caller keeps the parts)
    parts = model if isinstance(model, StableDiffusionParts) else loader.load_model(model)
    tasks = [ImageTask(request.for_image(index), index) for index in range(request.num_images)]
    for batch in consecutive_batches(tasks, request.batch_size):
        yield from generate_batch(batch, parts, on_step, on_step_end)


Task = TypeVar("Task", bound="HasRequest")


class HasRequest(Protocol):
    request: GenerationRequest


def consecutive_batches(tasks: Iterable[Task], batch_size: int) -> Iterator[list[Task]]:
    """Runs of consecutive tasks (anything with a .request) that can share U-Net calls, up to batch_size
    each: a fixed grouping that depends on the input alone (wildcards may give images other LoRAs)."""
    batch: list[Task] = []
    for task in tasks:
        if batch and (len(batch) == batch_size or batch_key(batch[0].request) != batch_key(task.request)):
            yield batch
            batch = []
        batch.append(task)
    if batch:
        yield batch


def generate_batch(
    tasks: list[ImageTask],
    parts: StableDiffusionParts,
    on_step: StepCallback | None = None,
    on_step_end: StepEndHook | None = None,
) -> list[GeneratedImage]:
    """Make several images in one pass through the U-Net. Their requests must share batch_key()."""
    import torch

    if len({batch_key(task.request) for task in tasks}) != 1:
        raise ValueError("generate_batch: the tasks differ in size, steps, scheduler, guidance or init image")
    try:
        with torch.inference_mode():
            return _generate_batch(tasks, parts, _Hooks(on_step, on_step_end))
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        if parts.placement.device.startswith("cuda"):
            torch.cuda.empty_cache()  # give the next chunk of a batch its chance
        request = tasks[0].request
        raise GenerationError(
            f"Out of memory making {len(tasks)} image(s) at {request.width}x{request.height} on "
            f"{parts.placement.device} ({_first_line(error)}); try --batch-size 1, --vae-tiling, "
            "--offload model (CUDA) or a smaller size."
        ) from error


# What running out of memory says: torch.OutOfMemoryError (CUDA), MPS, the CPU allocator, oneDNN.
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "could not allocate", "failed to allocate")


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or any(text in str(error).lower() for text in _OUT_OF_MEMORY)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


@dataclass(frozen=True)
class _Hooks:
    """The caller's ways into the loop: watch each step, steer the next one."""

    on_step: StepCallback | None = None
    on_step_end: StepEndHook | None = None


def _generate_batch(tasks: list[ImageTask], parts: StableDiffusionParts, hooks: _Hooks) -> list[GeneratedImage]:
    started = time.perf_counter()
    request = tasks[0].request  # size, steps, scheduler, guidance, init image and LoRAs are shared
    if parts.unet.config.in_channels == INPAINT_CHANNELS and request.mask is None:
        raise GenerationError(
            f"{parts.source.model!r} is an inpainting model (a 9-channel U-Net): give --init-image and --mask, or "
            "use a standard model for text-to-image and image-to-image."
        )
    if parts.adapters.use_loras(request.lora_refs):
        parts.embedding_cache.clear()  # the text encoder's weights changed

    # 3. encode each prompt and negative prompt (once per distinct text); guidance <= 1 needs no negatives
    conditions = [_conditions(task.request, parts) for task in tasks]
    # A prompt past 75 tokens is longer (77 per chunk); only prompts of one length stack into a U-Net call
    results: dict[int, GeneratedImage] = {}
    for length in dict.fromkeys(cond.shape[1] for cond, _ in conditions):
        group = [number for number, (cond, _) in enumerate(conditions) if cond.shape[1] == length]
        made = _denoise_and_decode([tasks[n] for n in group], [conditions[n] for n in group], parts, hooks)
        results.update(zip(group, made, strict=True))
    seconds = (time.perf_counter() - started) / len(tasks)
    return [dataclasses.replace(results[number], seconds=seconds) for number in range(len(tasks))]


def _conditions(request: GenerationRequest, parts: StableDiffusionParts) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt, negative prompt) embeddings, the shorter padded with empty chunks to the longer's length."""
    prompt = _embedding(without_tags(request.prompt), request, parts)
    if request.guidance_scale <= 1.0:
        return prompt, None
    negative = _embedding(without_tags(request.negative_prompt), request, parts)
    chunks = max(prompt.shape[1], negative.shape[1]) // CLIP_TOKENS
    if prompt.shape[1] == negative.shape[1]:
        return prompt, negative
    empty = _embedding("", request, parts)
    return pad_to_chunks(prompt, chunks, empty), pad_to_chunks(negative, chunks, empty)


def _denoise_and_decode(
    tasks: list[ImageTask],
    conditions: list[tuple[torch.Tensor, torch.Tensor | None]],
    parts: StableDiffusionParts,
    hooks: _Hooks,
) -> list[GeneratedImage]:
    import torch

    request = tasks[0].request
    assert request.width is not None and request.height is not None
    negative = None
    if request.guidance_scale > 1.0:
        negative = torch.cat([uncond for _, uncond in conditions])  # type: ignore[misc]
    conditioning = Conditioning(torch.cat([cond for cond, _ in conditions]), negative)  # (B, 77 k, D) each

    # 4-5. the starting latents (noise, or the init image noised to the start step), then the loop
    start = None
    inpainting = None
    if request.mask is not None:  # inpainting (sdgen/engine/inpaint.py): the mask decides what is repainted
        inputs = inpaint_inputs(request, _open_image(request.init_image), parts.vae_scale_factor)
        inpainting = Inpainting(inputs, parts, len(tasks), request.guidance_scale > 1.0)
    elif request.is_img2img:
        pixels = image_to_tensor(_open_image(request.init_image), request.width, request.height)
        start = encoded_start(pixels, parts.vae, parts.placement)
    strength = request.strength if request.is_img2img else None
    size = (request.width, request.height)
    watch = _StopWatch(hooks.on_step) if hooks.on_step is not None else None
    hooks = _Hooks(watch, hooks.on_step_end)
    steps = request.num_inference_steps
    latents = _run_loop(tasks, conditioning, parts, hooks, size, steps, strength, start, inpainting)

    # 5b. the hires pass: upscale, then image-to-image at the large size with the same prompt and seed
    if request.hires_scale is not None and not (watch and watch.stopped):
        latents = _hires_pass(tasks, conditioning, parts, hooks, latents)

    # 6. decode to RGB (with --decoder, a tiny autoencoder instead of the VAE: sdgen/engine/plugins)
    _check_finite(latents, tasks[0].seed)
    images, vae_dtype = decode_latents(plugins.final_decoder(parts), latents)
    if inpainting is not None:
        images = inpainting.paste(images)
    return [
        GeneratedImage(image, task.seed, task.index, task.request, 0.0, vae_dtype)
        for task, image in zip(tasks, images, strict=True)
    ]


class _StopWatch:
    """A step callback that remembers whether it stopped the loop early (then the hires pass is skipped)."""

    def __init__(self, on_step: StepCallback) -> None:
        self.on_step, self.stopped = on_step, False

    def __call__(self, info: StepInfo) -> None:
        try:
            self.on_step(info)
        except StopDenoising:
            self.stopped = True
            raise


def _run_loop(
    tasks: list[ImageTask],
    conditioning: Conditioning,
    parts: StableDiffusionParts,
    hooks: _Hooks,
    size: tuple[int, int],
    steps: int,
    strength: float | None,
    start: StartLatents | None,
    inpainting: Inpainting | None = None,
) -> torch.Tensor:
    """One denoising run from fresh generators and a fresh scheduler: from noise, or (img2img, the hires
    pass) from `start`'s clean latents noised to the step that `strength` starts at."""
    request = tasks[0].request
    device = parts.placement.device
    seeds = [task.seed for task in tasks]
    generators = [make_generator(seed, parts.placement) for seed in seeds]
    scheduler = make_scheduler(request.scheduler, parts.scheduler_config)  # fresh: schedulers keep state
    timesteps = set_timesteps(scheduler, steps, device, strength)
    if inpainting is not None:
        assert strength is not None
        latents = inpainting.start(generators, scheduler, timesteps, strength)
    elif start is None:
        scale = parts.vae_scale_factor
        latent_shape = (parts.unet.config.in_channels, size[1] // scale, size[0] // scale)
        dtype = torch_dtype(parts.placement.dtype)
        latents = initial_noise(generators, latent_shape, scheduler, device, dtype)  # (B, 4, h, w)
    else:
        latents = noised_image_latents(start(generators), generators, scheduler, timesteps[:1])
    # the loop's extension points: the plug-ins wrap the U-Net call (fresh per run) and end guidance early;
    # inpainting adds its extra input channels and its blend; the caller's hook comes last
    run = plugins.Run(request, parts, scheduler, timesteps)
    step_end = chain_step_end(plugins.guidance_end(run), hooks.on_step_end)
    if inpainting is not None:
        conditioning = inpainting.conditioning(conditioning)
        step_end = chain_step_end(inpainting.on_step_end, step_end)
    with plugins.run_guidance(run) as guide:  # guidance modifiers; the model is switched back afterwards
        return denoise(
            plugins.noise_predictor(run),
            latents,
            timesteps=timesteps,
            scheduler=scheduler,
            conditioning=conditioning,
            guidance_scale=request.guidance_scale,
            generators=generators,
            on_step=hooks.on_step,
            on_step_end=step_end,
            seeds=tuple(seeds),
            guide=guide,
        )


def _hires_pass(
    tasks: list[ImageTask],
    conditioning: Conditioning,
    parts: StableDiffusionParts,
    hooks: _Hooks,
    latents: torch.Tensor,
) -> torch.Tensor:
    """A1111's hires fix. `latent`: the latents scaled up (bilinear, A1111's "Latent"); `lanczos`: the
    image decoded, scaled up with Pillow's Lanczos and encoded again, exactly as `--init-image` of that image
    at the large size would. Then image-to-image with --hires-steps and --hires-strength."""
    import torch

    request = tasks[0].request
    width, height = request.hires_size
    _check_finite(latents, tasks[0].seed)
    if request.hires_upscaler == "latent":
        scale = parts.vae_scale_factor
        upscaled = torch.nn.functional.interpolate(latents, size=(height // scale, width // scale), mode="bilinear")
        start: StartLatents = lambda generators: upscaled  # noqa: E731
    else:
        images, _ = decode_latents(parts.vae, latents)
        start = encoded_start([image_to_tensor(image, width, height) for image in images], parts.vae, parts.placement)
    steps = request.hires_steps or request.num_inference_steps
    return _run_loop(tasks, conditioning, parts, hooks, (width, height), steps, request.hires_strength, start)


def _check_finite(latents: torch.Tensor, seed: int) -> None:
    if not torch_isfinite(latents):
        raise GenerationError(
            f"The denoising loop produced NaN or infinite latents for seed {seed}; "
            "try --dtype float32 or another --scheduler."
        )


def _embedding(text: str, request: GenerationRequest, parts: StableDiffusionParts) -> torch.Tensor:
    """(1, 77 k, D) CLIP embedding of one text, remembered: batches repeat the same prompt and "" a lot."""
    options = TextOptions(request.weighting, request.clip_skip)
    key = (text, options, request.embedding_refs)
    cache = parts.embedding_cache
    if key not in cache:
        if len(cache) > 256:
            cache.clear()
        adapters = parts.adapters
        adapters.use_embeddings(request.embedding_refs)
        device = parts.placement.device
        cache[key] = encode_prompt(text, parts.tokenizer, parts.text_encoder, device, options, adapters.convert)
    return cache[key]


def torch_isfinite(tensor: torch.Tensor) -> bool:
    import torch

    return bool(torch.isfinite(tensor).all())


def _open_image(init_image: InitImage) -> Image.Image:
    """The init image's pixels, through the same checks (format, size, bounded decoding) as validation."""
    return open_user_image(init_image, "init_image")
