"""generate(request) -> images: the stages, numbered, in order. Text-to-image and image-to-image."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdgen.engine import loader, plugins
from sdgen.engine.checking import check_request
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
    NoiseDraw,
    StartLatents,
    decode_latents,
    encoded_start,
    image_to_tensor,
    initial_noise,
    noised_image_latents,
    set_timesteps,
)
from sdgen.engine.loader import StableDiffusionParts
from sdgen.engine.openvino_parts import text_encoder_of
from sdgen.engine.prompt_schedule import ImagePrompts, PassSteps, batch_conditioning, image_prompts, prompt_switch
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.engine.samplers import make_sampler
from sdgen.engine.tasks import GeneratedImage, ImageTask, batch_key, consecutive_batches
from sdgen.engine.text import TextOptions, encode_prompt
from sdgen.engine.tiling import tiled
from sdgen.engine.variation import Variation, resize_latent_size, varied_noise
from sdgen.errors import GenerationError
from sdgen.hardware.devices import make_generator, torch_dtype

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "GeneratedImage", "ImageTask", "batch_key", "consecutive_batches", "generate", "generate_batch", "iter_generate"
]  # the tasks' types live in sdgen/engine/tasks.py


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
    # 1. check inputs: every rule, before any weights load (a checked request was checked by its maker)
    spec = model.spec if isinstance(model, StableDiffusionParts) else (model or ModelSpec()).checked()
    request = check_request(request, spec)

    # 2. load the model (once per process when the caller keeps the parts)
    parts = model if isinstance(model, StableDiffusionParts) else loader.load_model(spec)
    tasks = [ImageTask(request, job) for job in request.jobs]
    for batch in consecutive_batches(tasks, request.batch_size):
        yield from generate_batch(batch, parts, on_step, on_step_end)


def generate_batch(
    tasks: list[ImageTask],
    parts: StableDiffusionParts,
    on_step: StepCallback | None = None,
    on_step_end: StepEndHook | None = None,
) -> list[GeneratedImage]:
    """Make several images in one pass through the U-Net. Their requests must share batch_key()."""
    if len({batch_key(task) for task in tasks}) != 1:
        raise ValueError("generate_batch: the tasks differ in size, steps, scheduler, guidance or init image")
    first = tasks[0].request
    if first.sd_upscale is not None or first.details or first.restore_faces:  # passes over whole pictures
        from sdgen.engine.passes import run_passes

        def run_part(given: GenerationRequest) -> GeneratedImage:  # a tile or a face: a request of its own
            part = check_request(given)
            return generate_batch([ImageTask(part, part.jobs[0])], parts, on_step, on_step_end)[0]

        return run_passes(tasks, parts, run_part, lambda: _guarded_batch(tasks, parts, _Hooks(on_step, on_step_end)))
    return _guarded_batch(tasks, parts, _Hooks(on_step, on_step_end))


def _guarded_batch(tasks: list[ImageTask], parts: StableDiffusionParts, hooks: _Hooks) -> list[GeneratedImage]:
    """One batch in inference mode, with --tiling's wrapped convolutions; running out of memory said plainly."""
    import torch

    try:
        tiling = tasks[0].request.tiling  # the VAE's convolutions wrap too, and --decoder's tiny autoencoder's
        wrapping = (parts.unet, parts.vae, plugins.final_decoder(parts)) if tiling else ()
        with torch.inference_mode(), tiled(wrapping, tiling):
            return _generate_batch(tasks, parts, hooks)
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
    if parts.unet.config.in_channels == INPAINT_CHANNELS and request.mask_pixels is None:
        raise GenerationError(
            f"{parts.source.model!r} is an inpainting model (a 9-channel U-Net): give --init-image and --mask, or "
            "use a standard model for text-to-image and image-to-image."
        )
    if parts.adapters.use_loras(tasks[0].job.lora_refs):
        parts.embedding_cache.clear()  # the text encoder's weights changed

    # 3. encode each prompt and negative prompt (once per distinct text of their schedules: prompt editing,
    # alternation and AND, sdgen/engine/prompt_schedule.py); guidance <= 1 needs no negatives
    conditions = [_conditions(task, parts) for task in tasks]
    # A prompt past 75 tokens is longer (77 per chunk); only prompts of one length stack into a U-Net call
    results: dict[int, GeneratedImage] = {}
    for length in dict.fromkeys(condition.lengths for condition in conditions):
        group = [number for number, condition in enumerate(conditions) if condition.lengths == length]
        made = _denoise_and_decode([tasks[n] for n in group], [conditions[n] for n in group], parts, hooks)
        results.update(zip(group, made, strict=True))
    seconds = (time.perf_counter() - started) / len(tasks)
    return [dataclasses.replace(results[number], seconds=seconds) for number in range(len(tasks))]


@dataclass(frozen=True, eq=False)
class _PassPrompts:
    """One image's prompts over the first pass and, with --hires-scale, over the hires pass."""

    first: ImagePrompts
    hires: ImagePrompts | None

    @property
    def lengths(self) -> tuple[int, ...]:
        return (self.first.length, *(() if self.hires is None else (self.hires.length,)))


def _conditions(task: ImageTask, parts: StableDiffusionParts) -> _PassPrompts:
    """The embeddings of each pass's schedules, each distinct text encoded once; each image's padded with
    empty chunks to its longest text (as the prompt and its negative always were)."""
    request = task.request
    order = getattr(make_sampler(request.scheduler, request.schedule, parts.scheduler_config), "order", 1)
    steps = request.num_inference_steps * order  # A1111 counts a second-order sampler's steps twice

    def encode(text: str) -> torch.Tensor:
        return _embedding(text, task, parts)

    first = image_prompts(task.job.prompt, request, PassSteps(steps), encode)
    if request.hires_scale is None:
        return _PassPrompts(first, None)
    hires_steps = (request.hires_steps or request.num_inference_steps) * order
    return _PassPrompts(first, image_prompts(task.job.prompt, request, PassSteps(steps, hires_steps), encode))


def _denoise_and_decode(
    tasks: list[ImageTask],
    conditions: list[_PassPrompts],
    parts: StableDiffusionParts,
    hooks: _Hooks,
) -> list[GeneratedImage]:
    request = tasks[0].request
    first = [condition.first for condition in conditions]
    conditioning = batch_conditioning(first, 0)  # (B, 77 k, D) each; the switch changes it between steps

    # 4-5. the starting latents (noise, or the init image noised to the start step), then the loop
    start = None
    inpainting = None
    if request.mask_pixels is not None:  # inpainting (sdgen/engine/inpaint.py; outpainting makes its own mask)
        inputs = inpaint_inputs(request, parts.vae_scale_factor)
        inpainting = Inpainting(inputs, parts, len(tasks), request.guidance_scale > 1.0)
    elif request.init_pixels is not None:
        pixels = image_to_tensor(request.init_pixels.pixels(), request.width, request.height)
        start = encoded_start(pixels, parts.vae, parts.placement)
    strength = request.strength if request.is_img2img else None
    size = (request.width, request.height)
    watch = _StopWatch(hooks.on_step) if hooks.on_step is not None else None
    hooks = _Hooks(watch, hooks.on_step_end)
    steps = request.num_inference_steps
    first_hooks = _with_prompt_switch(hooks, first)
    latents = _run_loop(tasks, conditioning, parts, first_hooks, size, steps, strength, start, inpainting)

    # 5b. the hires pass: upscale, then image-to-image at the large size with the same prompt and seed
    if request.hires_scale is not None and not (watch and watch.stopped):
        hires = [condition.hires for condition in conditions if condition.hires is not None]
        hires_hooks = _with_prompt_switch(hooks, hires)
        latents = _hires_pass(tasks, batch_conditioning(hires, 0), parts, hires_hooks, latents)

    # 6. decode to RGB (with --decoder, a tiny autoencoder instead of the VAE: sdgen/engine/plugins)
    _check_finite(latents, tasks[0].seed)
    images, vae_dtype = decode_latents(plugins.final_decoder(parts), latents)
    if inpainting is not None:
        images = inpainting.paste(images)
    return [
        GeneratedImage(task.request, task.job, image, 0.0, vae_dtype)
        for task, image in zip(tasks, images, strict=True)
    ]


def _with_prompt_switch(hooks: _Hooks, images: list[ImagePrompts]) -> _Hooks:
    """The caller's hooks with the step-end hook that switches the prompts' embeddings, first."""
    return _Hooks(hooks.on_step, chain_step_end(prompt_switch(images), hooks.on_step_end))


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
    scheduler = make_sampler(request.scheduler, request.schedule, parts.scheduler_config, request.tcd_eta)  # fresh
    timesteps = set_timesteps(scheduler, steps, device, strength)
    draw = _variation_draw(tasks, generators, parts)
    if inpainting is not None:
        assert strength is not None
        latents = inpainting.start(generators, scheduler, timesteps, strength, draw)
    elif start is None:
        scale = parts.vae_scale_factor
        latent_shape = (parts.unet.config.in_channels, size[1] // scale, size[0] // scale)
        dtype = torch_dtype(parts.placement.dtype)
        latents = initial_noise(generators, latent_shape, scheduler, device, dtype, draw)  # (B, 4, h, w)
    else:
        latents = noised_image_latents(start(generators), generators, scheduler, timesteps[:1], draw)
    if request.eta_noise_seed_delta:  # A1111's ENSD: the sampler's own noise from seed + delta (its rng.py)
        for generator, seed in zip(generators, seeds, strict=True):
            generator.manual_seed(seed + request.eta_noise_seed_delta)
    # the loop's extension points: the plug-ins wrap the U-Net call (fresh per run) and end guidance early;
    # inpainting adds its extra input channels and its blend; the caller's hook comes last
    run = plugins.Run(request, parts, scheduler, timesteps)
    step_end = chain_step_end(plugins.guidance_end(run), hooks.on_step_end)
    if inpainting is not None:
        conditioning = inpainting.conditioning(conditioning)
        step_end = chain_step_end(inpainting.on_step_end, step_end)
    predictor = plugins.noise_predictor(run)
    if hasattr(scheduler, "watch_predictor"):  # DDIM CFG++ (engine/samplers) also reads the unguided noise
        predictor = scheduler.watch_predictor(predictor)
    with plugins.run_guidance(run) as guide:  # guidance modifiers; the model is switched back afterwards
        return denoise(
            predictor,
            latents,
            timesteps=timesteps,
            scheduler=scheduler,
            conditioning=conditioning,
            guidance_scale=request.guidance_scale * getattr(scheduler, "guidance_multiplier", 1.0),
            generators=generators,
            on_step=hooks.on_step,
            on_step_end=step_end,
            seeds=tuple(seeds),
            guide=guide,
        )


def _variation_draw(
    tasks: list[ImageTask], generators: list[torch.Generator], parts: StableDiffusionParts
) -> NoiseDraw | None:
    """The images' starting noise with A1111's variation seeds (sdgen/engine/variation.py); None without
    them, so that the plain draw, and today's noise, stay exactly as they are."""
    request = tasks[0].request  # the strength and the resize are shared; each image has its own subseed
    subseeds = tuple(task.job.subseed for task in tasks if task.job.subseed is not None)
    resize = resize_latent_size(request.seed_resize_from, parts.vae_scale_factor)
    variation = Variation(subseeds, request.subseed_strength, resize)
    if not variation.active:
        return None
    seeds = [task.seed for task in tasks]
    dtype = torch_dtype(parts.placement.dtype)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        new = lambda seed: make_generator(seed, parts.placement)  # noqa: E731
        return varied_noise(seeds, generators, shape, variation, new, parts.placement.device, dtype)

    return draw


def _hires_pass(
    tasks: list[ImageTask],
    conditioning: Conditioning,
    parts: StableDiffusionParts,
    hooks: _Hooks,
    latents: torch.Tensor,
) -> torch.Tensor:
    """A1111's hires fix. `latent`: the latents scaled up (bilinear, A1111's "Latent"); `lanczos`: the
    image decoded, scaled up with Pillow's Lanczos and encoded again, exactly as `--init-image` of that image
    at the large size would; an upscaler model: the decoded image through it (sdgen/engine/upscaling.py).
    Then image-to-image with --hires-steps and --hires-strength."""
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
        if request.hires_upscaler != "lanczos":  # an upscaler model, then Lanczos to the exact size (A1111's way)
            from sdgen.engine.upscaling import loaded_upscaler, upscale_image

            model = loaded_upscaler(parts, request.hires_upscaler, request.upscaler_dir)
            images = [upscale_image(model, image, width, height) for image in images]
        start = encoded_start([image_to_tensor(image, width, height) for image in images], parts.vae, parts.placement)
    if request.hires_strength == 0:  # as A1111 with no denoising: no step runs, the upscaled image is the result
        return start([make_generator(task.seed, parts.placement) for task in tasks])
    steps = request.hires_steps or request.num_inference_steps
    return _run_loop(tasks, conditioning, parts, hooks, (width, height), steps, request.hires_strength, start)


def _check_finite(latents: torch.Tensor, seed: int) -> None:
    if not bool(latents.isfinite().all()):
        raise GenerationError(
            f"The denoising loop produced NaN or infinite latents for seed {seed}; "
            "try --dtype float32 or another --scheduler."
        )


def _embedding(text: str, task: ImageTask, parts: StableDiffusionParts) -> torch.Tensor:
    """(1, 77 k, D) CLIP embedding of one text, remembered: batches repeat the same prompt and "" a lot."""
    options = TextOptions(task.request.weighting, task.request.clip_skip)
    embeddings = task.job.embedding_refs
    key = (text, options, embeddings)
    cache = parts.embedding_cache
    if key not in cache:
        if len(cache) > 256:
            cache.clear()
        adapters = parts.adapters
        adapters.use_embeddings(embeddings)
        device = parts.placement.device
        encoder = text_encoder_of(parts)  # the torch module, or --backend openvino's
        cache[key] = encode_prompt(text, parts.tokenizer, encoder, device, options, adapters.convert)
    return cache[key]

