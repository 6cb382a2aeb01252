"""Every option of sdgen's commands, declared once: the rows (what a row says: sdgen/config/optiontable.py).

One row per option: its key, type, built-in default, help, the commands that take it, the object it feeds,
and what the picture has to do with it (whether it shapes it, its name in a batch line, in sdgen's record
and in A1111's text, whether images that differ in it may share a U-Net call). Everything else is made
from this table:
- the settings keys that presets, the config file and SDGEN_* variables may set, and their type checks
  (sdgen/config/settings.py; rows with `layered=False` are command-line only);
- the Typer options of each command, with the defaults `--help` shows (sdgen/cli/common.py);
- the mapping from settings to GenerationRequest, ModelSpec and OutputSpec (sdgen/engine/request.py);
- the keys of a batch line (sdgen/runs/batch/input.py), the fields of an image's record and A1111 text and what
  `--from` replays (sdgen/record/metadata.py), what must match on resume (sdgen/runs/batch/manifest.py), which images
  share a U-Net call (sdgen/engine/pipeline.py's batch_key), and docs/reference.md (sdgen/cli/reference.py).

Adding an option is one row here plus the code that uses it (a field of its target, and what reads it).
Only the standard library is imported here, so `sdgen --help` stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sdgen.config.backend_options import BACKEND_ROWS
from sdgen.config.fast_options import FAST_ROWS
from sdgen.config.machine_options import MACHINE_ROWS
from sdgen.config.optiontable import (  # noqa: F401 - the names a row is written with, for every module that reads rows
    BATCH,
    BOTH,
    GENERATE,
    GRID,
    LOADERS,
    MAKERS,
    MODEL,
    NOISE,
    OUTPUT,
    PICTURES,
    REQUEST,
    RUN,
    RUNS,
    SCHEDULE,
    SERVE,
    UPSCALE,
    Option,
    OptionTable,
)
from sdgen.config.output_options import OUTPUT_ROWS
from sdgen.config.scale_options import SCALE_ROWS
from sdgen.config.schedulers import DEFAULT_SCHEDULER
from sdgen.config.steering_options import STEERING_ROWS
from sdgen.config.terminal_options import TERMINAL_ROWS
from sdgen.config.upscale_options import UPSCALE_ROWS
from sdgen.errors import UsageError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def _table(*rows: Option) -> Mapping[str, Option]:
    return MappingProxyType({row.key: row for row in rows})


OPTIONS: Mapping[str, Option] = _table(
    # where the settings come from
    Option(
        "from_image", str, None, "Make an image again from its metadata; flags given beside it override.",
        RUN, flag="--from", commands=frozenset({GENERATE}), layered=False, path=True,
    ),
    Option(
        "format", str, None, "txt, jsonl, csv or tsv.", RUN, commands=frozenset({BATCH}), layered=False,
        empty="from the extension",
    ),
    Option(
        "preset", str, None,
        "Named settings: fast, quality, draft, low-memory, turbo, lcm (configs/presets) or your config file's.",
        RUN, layered=False, commands=LOADERS,
    ),
    # the model
    Option(
        "model", str, DEFAULT_MODEL, "Hub id, local diffusers folder, or one .safetensors checkpoint (A1111 layout).",
        MODEL, short="-m", commands=LOADERS, shapes_picture=True, a1111="Model",
    ),
    Option(
        "models_dir", str, None, "Folder of single-file checkpoints: --model NAME finds NAME.safetensors there.",
        MODEL, path=True, commands=LOADERS,
    ),
    Option(
        "model_config", str, None, "Architecture of a single-file --model: diffusers folder or Hub id (configs only).",
        MODEL, empty="SD 1.5's, shipped with sdgen", commands=LOADERS, shapes_picture=True,
    ),
    Option(
        "prediction_type", str, None, "What the U-Net predicts: epsilon or v_prediction (SD 2.x 768-v models).", MODEL,
        empty="the model's scheduler config", commands=LOADERS, shapes_picture=True,
    ),
    Option(
        "allow_unsafe_pickle", bool, False,
        "Load a pickled .ckpt/.pt --model, reading tensors only (torch.load weights_only); better: sdgen convert.",
        MODEL, layered=False, commands=LOADERS | {UPSCALE},
        help_for={UPSCALE: "Load a pickled .pth upscaler, reading tensors only (torch.load weights_only); better: "
                  "sdgen convert."},
    ),
    Option(
        "vae", str, None, "Another VAE: .safetensors file, diffusers folder or Hub id (stabilityai/sd-vae-ft-mse).",
        MODEL, empty="the model's own", commands=MAKERS | {NOISE}, shapes_picture=True, a1111="VAE",
    ),
    # the picture
    Option(
        "steps", int, 25, "Denoising steps (num_inference_steps).", REQUEST, field_name="num_inference_steps",
        shapes_picture=True, a1111="Steps",
    ),
    Option(
        "guidance_scale", float, 7.5, "Classifier-free guidance; <= 1 turns it off.", REQUEST, short="-g",
        shapes_picture=True, a1111="CFG scale",
    ),
    Option(
        "negative_prompt", str, "", "What to steer away from.", REQUEST, short="-N", shapes_picture=True,
        shares_unet_call=True, a1111="Negative prompt",
    ),
    Option(
        "seed", int, None, "Seed of image 1; image i uses seed+i.", REQUEST, short="-s", empty="random",
        commands=RUNS | {NOISE}, shapes_picture=True, shares_unet_call=True, a1111="Seed",
        help_for={
            BATCH: "Base seed: a line without a seed gets sha256(base:line). [default: 0]",
            GRID: "Seed of every cell (unless seed is an axis). [default: random]",
            NOISE: "Seed of the noise added (the same noise at every timestep). [default: random]",
        },
    ),
    Option("eta_noise_seed_delta", int, 0, "A1111's ENSD: the sampler's own noise (ancestral, SDE) from seed + this.",
           REQUEST, shapes_picture=True, a1111="ENSD"),
    # variation seeds (A1111's): sdgen/engine/variation.py
    Option(
        "subseed", int, None, "Variation seed: bend the seed's noise towards this seed's (image i: subseed+i).",
        REQUEST, empty="random (with --subseed-strength)", commands=RUNS, shapes_picture=True, shares_unet_call=True,
        a1111="Variation seed",
    ),
    Option(
        "subseed_strength", float, 0.0,
        "How far towards the variation seed's noise, 0 (off) to 1; when set, every image keeps --seed.", REQUEST,
        commands=RUNS, shapes_picture=True, a1111="Variation seed strength",
    ),
    Option(
        "seed_resize_from", str, None,
        "WxH: draw the seed's noise at this size, centred in the image's: a new size keeps the composition.",
        REQUEST, empty="the image's size", commands=RUNS, shapes_picture=True, a1111="Seed resize from",
    ),
    Option(
        "tiling", str, None, "Seamless tiling: --tiling (both axes), --tiling x or --tiling y (one axis).", REQUEST,
        empty="off", commands=RUNS, shapes_picture=True, a1111="Tiling",
    ),
    Option(
        "scheduler", str, DEFAULT_SCHEDULER, "Sampler name; `sdgen schedulers` lists them.", REQUEST,
        shapes_picture=True, a1111="Sampler",
    ),
    Option("schedule", str, "automatic", "Schedule type: automatic (the sampler's own), karras, exponential, beta, "
           "... (`sdgen schedulers`).", REQUEST, shapes_picture=True, a1111="Schedule type"),
    Option(
        "width", int, None, "Multiple of 8.", REQUEST, short="-W",
        empty="the model's size (512 for SD 1.x), or the init image's", commands=MAKERS | {NOISE},
        shapes_picture=True, a1111="Size",
    ),
    Option(
        "height", int, None, "Multiple of 8.", REQUEST, short="-H",
        empty="the model's size (512 for SD 1.x), or the init image's", commands=MAKERS | {NOISE},
        shapes_picture=True, a1111="Size",
    ),
    Option(
        "num_images", int, 1, "How many images (per prompt).", REQUEST, short="-n", commands=BOTH,
        batch_line="num_images",
    ),
    Option("batch_size", int, 1, "Images per U-Net call (memory vs speed).", REQUEST, commands=RUNS),
    Option(
        "init_image", str, None, "Start from this image (image-to-image).", REQUEST, layered=False, path=True,
        commands=RUNS, shapes_picture=True,
    ),
    Option(
        "strength", float, 0.8, "Image-to-image: 0 keeps the image, 1 ignores it.", REQUEST, shapes_picture=True,
        needs="init_image", a1111="Denoising strength",
    ),
    Option(
        "mask", str, None, "Inpainting: repaint where this mask is white (needs --init-image).", REQUEST,
        layered=False, path=True, commands=RUNS, shapes_picture=True,
    ),
    Option(
        "invert_mask", bool, False, "Inpainting: repaint where the mask is black instead.", REQUEST, commands=RUNS,
        shapes_picture=True, needs="mask",
    ),
    Option(
        "mask_blur", int, 4, "Inpainting: blur the mask's edge by this many pixels (A1111's Mask blur).", REQUEST,
        shapes_picture=True, needs="mask", a1111="Mask blur",
    ),
    Option(
        "outpaint", str, None, "Extend --init-image's canvas and paint the new area: SIDE=PIXELS,... (left, top, "
        "right, bottom; multiples of 8).", REQUEST, commands=RUNS, shapes_picture=True, needs="init_image",
    ),
    Option(
        "inpaint_fill", str, "original", "What a masked or outpainted region starts from: original, fill, noise "
        "or nothing (A1111's Masked content).", REQUEST, shapes_picture=True, needs="init_image",
    ),
    # the hires pass (A1111's "hires fix")
    Option(
        "hires_scale", float, None, "Hires pass: make the image at its size, scale it up this much, then img2img.",
        REQUEST, empty="off", commands=RUNS, shapes_picture=True, a1111="Hires upscale",
    ),
    Option(
        "hires_steps", int, None, "Hires pass: steps of the second pass.", REQUEST, empty="--steps", commands=RUNS,
        shapes_picture=True, needs="hires_scale", a1111="Hires steps",
    ),
    Option(
        "hires_strength", float, 0.7, "Hires pass: denoising strength of the second pass.", REQUEST, commands=RUNS,
        shapes_picture=True, needs="hires_scale", a1111="Denoising strength",
    ),
    Option(
        "hires_upscaler", str, "latent", "Hires pass: latent (scale the latents), lanczos (scale the image) or "
        "an upscaler model (a file or a name in --upscaler-dir).",
        REQUEST, commands=RUNS, shapes_picture=True, needs="hires_scale", a1111="Hires upscaler",
    ),
    # upscaler models (sdgen/models/upscalers.py, docs/upscaling.md)
    Option(
        "upscaler_dir", str, None, "Folder of upscaler models (A1111's models/ESRGAN): --upscaler NAME and "
        "--hires-upscaler NAME find NAME.safetensors there.", REQUEST, path=True, commands=MAKERS | {UPSCALE},
        batch_line="upscaler_dir", record="upscaler_dir",
    ),
    *UPSCALE_ROWS,
    # prompts as A1111 users write them (sdgen/prompts/)
    Option(
        "weighting", bool, True,
        "A1111 emphasis: (word:1.3), (word) x1.1, [word] /1.1, BREAK; --no-weighting reads prompts literally.",
        REQUEST, shapes_picture=True, shares_unet_call=True, a1111="Emphasis",
    ),
    Option(
        "clip_skip", int, 1, "Use CLIP's N-th last layer (A1111's Clip skip; 1 = the last, 2 for many anime models).",
        REQUEST, shapes_picture=True, shares_unet_call=True, a1111="Clip skip",
    ),
    Option(
        "lora", list, None, "LoRA: a .safetensors file, diffusers folder or Hub id, with :SCALE (default 1); repeat.",
        REQUEST, field_name="loras", commands=RUNS, shapes_picture=True, unet_field="lora_refs",
    ),
    Option(
        "lora_dir", str, None, "Folder where <lora:name:0.8> tags in a prompt find name.safetensors.", REQUEST,
        path=True, batch_line="lora_dir", record="lora_dir",
    ),
    Option(
        "embedding", list, None, "Textual-inversion embedding file, with :TOKEN (default: its file name); repeat.",
        REQUEST, field_name="embeddings", commands=RUNS, shapes_picture=True, shares_unet_call=True,
    ),
    Option(
        "embedding_dir", str, None, "Folder of embeddings used by name: a prompt word that is a file's name loads it.",
        REQUEST, path=True, batch_line="embedding_dir", record="embedding_dir",
    ),
    Option(
        "style", list, None, "A style of the styles file (A1111's styles.csv) applied to the prompts; repeat.",
        REQUEST, field_name="styles", commands=RUNS, batch_line="style",
    ),
    Option(
        "styles_file", str, None, "A1111-format styles CSV (name,prompt,negative_prompt) that --style reads.",
        REQUEST, path=True, empty="styles.csv beside the config file, if there", commands=MAKERS,
    ),
    Option(
        "wildcard_dir", str, None, "Folder where __name__ in a prompt finds name.txt (one choice per line).", REQUEST,
        path=True,
    ),
    Option(
        "combinatorial", bool, False, "Make every expansion of {a|b} and __name__, not one random one per image.",
        REQUEST, commands=RUNS,
    ),
    # limits on the work one prompt may ask for (sdgen/prompts/limits.py, docs/prompt-limits.md); no real
    # prompt reaches them; checked before anything is expanded, queued or loaded
    Option(
        "max_prompt_length", int, 5000, "Longest prompt or negative prompt, in characters (wildcards expanded).",
        REQUEST,
    ),
    Option("max_nesting", int, 32, "Deepest nesting of ( [ { brackets in a prompt.", REQUEST),
    Option("max_breaks", int, 32, "Most BREAKs in a prompt (each starts another 77-token chunk).", REQUEST),
    Option(
        "max_networks", int, 64, "Most LoRAs and embeddings one image may use (<lora:> tags, --lora, embeddings).",
        REQUEST,
    ),
    Option(
        "max_wildcards", int, 100,
        "Most wildcard look-ups per image (--combinatorial: in all), those inside wildcard files included.", REQUEST,
    ),
    # step savers (sdgen/engine/plugins): fewer U-Net FLOPs, a slightly different picture
    Option(
        "cache_interval", int, 1, "DeepCache: the whole U-Net every N-th step, only its shallow branch between.",
        REQUEST, empty="1, off", shapes_picture=True,
    ),
    Option(
        "cfg_end", float, 1.0, "Guidance only for the first fraction F of the steps (0-1), then one U-Net pass.",
        REQUEST, empty="1, always", shapes_picture=True,
    ),
    # guidance modifiers (sdgen/engine/plugins, docs/guidance.md): opt-in, they change the picture
    Option(
        "guidance_rescale", float, 0.0,
        "Rescale the guided prediction to the conditional one's spread by this fraction (0-1; 0.7 typical).",
        REQUEST, empty="0, off", shapes_picture=True,
    ),
    Option(
        "freeu", str, None, "FreeU factors b1,b2,s1,s2 (SD1.5: 1.5,1.6,0.9,0.2).", REQUEST, empty="off",
        shapes_picture=True,
    ),
    Option(
        "pag_scale", float, 0.0, "Perturbed-attention guidance scale (3 typical); one more U-Net pass a step.",
        REQUEST, empty="0, off", shapes_picture=True,
    ),
    Option(
        "sag_scale", float, 0.0, "Self-attention guidance scale (0.75 typical); one more U-Net pass a step.",
        REQUEST, empty="0, off", shapes_picture=True,
    ),
    *STEERING_ROWS,  # ControlNet, T2I-Adapter, IP-Adapter (sdgen/config/steering_options.py)
    *FAST_ROWS,  # TCD's eta (sdgen/config/fast_options.py)
    # where and how it runs
    Option("device", str, "auto", "auto, cpu, mps, cuda or cuda:N.", MODEL, commands=MAKERS | {NOISE, UPSCALE}),
    *MACHINE_ROWS,  # --threads (sdgen/config/machine_options.py)
    Option(
        "dtype", str, "auto",
        "auto (float16 on CUDA; bfloat16 on CPUs with AMX/AVX512-BF16; else float32), float32, float16, bfloat16.",
        MODEL, commands=MAKERS | {NOISE, UPSCALE}, shapes_picture=True,
    ),
    Option(
        "attention_slicing", bool, False,
        "Attention in slices (old setups; with PyTorch's fused attention it is slower and saves nothing).", MODEL,
    ),
    Option("vae_slicing", bool, False, "Decode a batch one image at a time.", MODEL),
    Option("vae_tiling", bool, False, "Decode in overlapping tiles: large images in little memory.", MODEL),
    Option("offload", str, "none", "CUDA: none, model (one part on the GPU at a time) or sequential.", MODEL),
    Option("compile", bool, False, "torch.compile the U-Net: faster steps after a slow first call.", MODEL),
    *BACKEND_ROWS,  # --backend openvino, --quantize int8 (sdgen/config/backend_options.py)
    Option(
        "token_merging", float, 0.0, "Token merging (tomesd): merge this fraction of attention tokens, 0 to 0.75.",
        MODEL, empty="0, off", shapes_picture=True,
    ),
    Option(
        "decoder", str, None, "Decode the final image with a tiny autoencoder (folder or Hub id, madebyollin/taesd).",
        MODEL, empty="the VAE", shapes_picture=True,
    ),
    Option(
        "revision", str, None, "Hub branch, tag or commit of the model.", MODEL, empty="the Hub's main branch",
        commands=LOADERS, shapes_picture=True,
    ),
    Option("offline", bool, False, "Use the Hugging Face cache only.", MODEL, commands=LOADERS),
    *OUTPUT_ROWS,
    *TERMINAL_ROWS,  # what a run shows while it works (sdgen/config/terminal_options.py)
    *SCALE_ROWS,  # Ray: batch --ray, serve --replicas (sdgen/config/scale_options.py)
)


def table() -> OptionTable:
    """The lists derived from the rows (picture keys, batch-line keys, record fields ...), read afresh."""
    return OptionTable(OPTIONS)


def options_for(command: str) -> list[Option]:
    """The rows a command takes, in table order (the order --help lists them)."""
    return [option for option in OPTIONS.values() if command in option.commands]


def setting_kinds() -> dict[str, type]:
    """Every key a settings layer (preset, config file, SDGEN_*, --from image) may set, with its type."""
    return {key: option.kind for key, option in OPTIONS.items() if option.layered}


def builtin_defaults() -> dict[str, Any]:
    """The lowest settings layer: every settable key that has a built-in value."""
    return {key: option.default for key, option in OPTIONS.items() if option.layered and option.default is not None}


def default(key: str) -> Any:
    """A row's built-in value: the dataclasses in request.py take their defaults from here."""
    return OPTIONS[key].default


def flag_of(key: str | None) -> str | None:
    """How the command line spells a key: steps -> --steps; None for keys it does not have."""
    option = OPTIONS.get(key or "")
    return option.long_flag if option is not None else None


def describe(error: UsageError, sources: Mapping[str, str] | None = None) -> str:
    """An error as the command line says it: its setting named by its flag and, for a value that came
    from a preset, the config file, the environment or an image, where it came from."""
    source = (sources or {}).get(error.key or "")
    suffix = f" (set by {source})" if source not in (None, "flag", "built-in") else ""
    name = flag_of(error.key) or _command_flag(error.key)
    return str(error.named(name, suffix))


def _command_flag(key: str | None) -> str:
    """A command's own option outside the table (--timesteps of `sdgen noise`); the prompt is an argument."""
    if not key:
        return "value"
    return ARGUMENTS.get(key) or "--" + key.replace("_", "-")


ARGUMENTS = {"prompt": "prompt", "images": "IMAGE"}  # commands' arguments, as errors name them
