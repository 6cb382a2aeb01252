"""sdgen's k-diffusion samplers and A1111's schedule types against k-diffusion on the tiny model, float32.

The reference is A1111's way of running k-diffusion: the U-Net wrapped as a CompVisDenoiser over the
model's alphas_cumprod, A1111's CFGDenoiser, the same initial noise (x = noise * sigmas[0]) and the same
ancestral/SDE noise (drawn from the image's generator in order, given as k-diffusion's noise_sampler).
Images are decoded with the same VAE and compared within 1/255.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytest

from sdgen.config.schedulers import BY_LABEL, BY_NAME, SAME_AS_A1111, SCHEDULE_TYPES, SCHEDULERS, resolve
from sdgen.engine.checking import check_request
from sdgen.engine.pipeline import ImageTask, _conditions, generate
from sdgen.engine.request import GenerationRequest
from sdgen.engine.samplers import PORTS

from .kdiffusion_reference import CompVisModel, cfg_denoiser, load_kdiffusion

PROMPT = "a photo of an astronaut riding a horse"
STEPS = 4
SIZE = 64  # the smallest size sdgen takes
SEED = 77
GUIDANCE = 7.5


def prompt_embeddings(parts):
    """The prompt's and the negative prompt's embeddings, as sdgen's loop gets them."""
    request = check_request(GenerationRequest(PROMPT, guidance_scale=GUIDANCE, seed=SEED), parts.spec)
    prompts = _conditions(ImageTask.of(request), parts).first
    return prompts.parts[0].embeds[0], prompts.negative.embeds[0]


def reference_sigmas(schedule: str, steps: int, denoiser, sampling):
    """A1111's get_sigmas: k-diffusion's schedules, A1111's sd_schedulers.py for the others (written here
    from its source, on the denoiser's own sigma_to_t / t_to_sigma)."""
    import torch

    sigma_min, sigma_max = float(denoiser.sigmas[0]), float(denoiser.sigmas[-1])
    if schedule == "uniform":
        return denoiser.get_sigmas(steps)
    if schedule in ("karras", "exponential", "polyexponential"):
        return getattr(sampling, f"get_sigmas_{schedule}")(steps, sigma_min, sigma_max)
    if schedule in ("sgm_uniform", "normal"):
        start, end = denoiser.sigma_to_t(torch.tensor(sigma_max)), denoiser.sigma_to_t(torch.tensor(sigma_min))
        count = steps + 1 if schedule == "sgm_uniform" else steps
        ts = torch.linspace(start, end, count)[:steps]
        return torch.FloatTensor([float(denoiser.t_to_sigma(t)) for t in ts] + [0.0])
    if schedule == "kl_optimal":
        alpha_min, alpha_max = torch.arctan(torch.tensor(sigma_min)), torch.arctan(torch.tensor(sigma_max))
        step = torch.arange(steps + 1) / steps
        return torch.tan(step * alpha_min + (1.0 - step) * alpha_max)
    if schedule == "align_your_steps":
        levels = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
        xs, ys = np.linspace(0, 1, len(levels)), np.log(levels[::-1])
        return torch.FloatTensor(np.append(np.exp(np.interp(np.linspace(0, 1, steps), xs, ys))[::-1], [0.0]))
    if schedule == "simple":
        stride = len(denoiser.sigmas) / steps
        return torch.FloatTensor([float(denoiser.sigmas[-(1 + int(x * stride))]) for x in range(steps)] + [0.0])
    if schedule == "ddim":
        stride = max(len(denoiser.sigmas) // steps, 1)
        return torch.FloatTensor([float(s) for s in denoiser.sigmas[1::stride]][::-1] + [0.0])
    assert schedule == "beta"
    from scipy import stats

    quantiles = [stats.beta.ppf(x, 0.6, 0.6) for x in 1 - np.linspace(0, 1, steps)]
    return torch.FloatTensor([sigma_min + x * (sigma_max - sigma_min) for x in quantiles] + [0.0])


KDIFFUSION = {
    "dpm++2m": "sample_dpmpp_2m", "dpm++sde": "sample_dpmpp_sde", "dpm++2m-sde": "sample_dpmpp_2m_sde",
    "dpm++2m-sde-heun": "sample_dpmpp_2m_sde", "dpm++2s-a": "sample_dpmpp_2s_ancestral",
    "dpm++3m-sde": "sample_dpmpp_3m_sde", "euler-a": "sample_euler_ancestral", "euler": "sample_euler",
    "lms": "sample_lms", "heun": "sample_heun", "dpm2": "sample_dpm_2", "dpm2-a": "sample_dpm_2_ancestral",
}


def a1111_restart(model, x, sigmas, disable=None, noise_sampler=None, s_noise=1.0):
    """A1111's Restart sampler (modules/sd_samplers_extra.py, which no package ships), written here from its
    source over k-diffusion's helpers; its fresh noise comes from `noise_sampler` (A1111: torch.randn_like)."""
    import torch

    sampling, _ = load_kdiffusion()

    def heun_step(x, old_sigma, new_sigma):
        denoised = model(x, old_sigma * x.new_ones([x.shape[0]]))
        d = sampling.to_d(x, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            return x + d * dt
        x_2 = x + d * dt
        d_2 = sampling.to_d(x_2, new_sigma, model(x_2, new_sigma * x.new_ones([x.shape[0]])))
        return x + (d + d_2) / 2 * dt

    steps = sigmas.shape[0] - 1
    restart_list = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = sampling.get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = sampling.get_sigmas_karras(
                    restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                for _ in range(restart_times):
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:], strict=True))
    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + noise_sampler(last_sigma, old_sigma) * s_noise * (old_sigma**2 - last_sigma**2) ** 0.5
        x = heun_step(x, old_sigma, new_sigma)
        last_sigma = new_sigma
    return x


def reference_image(parts, name: str, schedule: str) -> np.ndarray:
    """k-diffusion's sampler of the same name, run as A1111 runs it, decoded by the same VAE."""
    import torch
    from diffusers import DDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    from sdgen.engine.latents import decode_latents

    sampling, external = load_kdiffusion()
    alphas_cumprod = DDPMScheduler.from_config(parts.scheduler_config).alphas_cumprod
    denoiser = external.CompVisDenoiser(CompVisModel(parts.unet, alphas_cumprod), quantize=False)
    discard = BY_NAME[name].discard_next_to_last_sigma
    sigmas = reference_sigmas(schedule, STEPS + discard, denoiser, sampling)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    cond, uncond = prompt_embeddings(parts)
    generators = [torch.Generator("cpu").manual_seed(SEED)]
    shape = (1, parts.unet.config.in_channels, SIZE // parts.vae_scale_factor, SIZE // parts.vae_scale_factor)
    x = randn_tensor(shape, generator=generators, dtype=torch.float32) * sigmas[0]
    if name == "dpm-fast":  # A1111 gives it the model's end levels, the step count and its eta (1)
        function = functools.partial(
            sampling.sample_dpm_fast, sigma_min=float(denoiser.sigmas[0]), sigma_max=float(denoiser.sigmas[-1]),
            n=STEPS, eta=1.0,
        )
        sigmas = None
    else:
        function = a1111_restart if name == "restart" else getattr(sampling, KDIFFUSION[name])
    extra = {}
    if "noise_sampler" in inspect.signature(function).parameters or name == "dpm-fast":
        extra["noise_sampler"] = lambda sigma, sigma_next: randn_tensor(shape, generator=generators, dtype=x.dtype)
    if name == "dpm++2m-sde-heun":
        extra["solver_type"] = "heun"
    with torch.inference_mode():
        denoise = cfg_denoiser(denoiser, cond, uncond, GUIDANCE)
        latents = function(denoise, x, disable=True, **extra) if sigmas is None else function(
            denoise, x, sigmas, disable=True, **extra)
        [image], _ = decode_latents(parts.vae, latents)
    return np.asarray(image).astype(np.int16)


def ours(parts, name: str, schedule: str) -> np.ndarray:
    request = GenerationRequest(
        PROMPT, scheduler=name, schedule=schedule, seed=SEED, num_inference_steps=STEPS, width=SIZE, height=SIZE,
        guidance_scale=GUIDANCE,
    )
    [result] = generate(request, parts)
    return np.asarray(result.image).astype(np.int16)


def _assert_close(parts, name: str, schedule: str) -> None:
    difference = np.abs(ours(parts, name, schedule) - reference_image(parts, name, schedule)).max()
    assert difference <= 1, f"{name} / {schedule}: {difference}/255 from k-diffusion"


def _port_schedule(name: str) -> str:
    """The sampler's A1111 default schedule, or Exponential where a diffusers scheduler runs that pair (it
    has its own test below): the port itself must run."""
    default = BY_NAME[name].default_schedule
    return "exponential" if resolve(name, default)[1] == "automatic" else default


@pytest.mark.parametrize("name", list(PORTS))
def test_each_sampler_matches_kdiffusion(tiny_parts, name: str) -> None:
    schedule = _port_schedule(name)
    assert resolve(name, schedule) == (name, schedule), "sdgen's port runs it"
    _assert_close(tiny_parts, name, schedule)


@pytest.mark.parametrize("name", SAME_AS_A1111)
def test_diffusers_schedulers_standing_in_for_a1111_pairs_match_kdiffusion(tiny_parts, name: str) -> None:
    """Where sdgen runs an A1111 pair with a diffusers scheduler, that scheduler makes k-diffusion's picture."""
    spec = SCHEDULERS[name]
    sampler = BY_LABEL[spec.a1111_sampler]
    schedule = (spec.a1111_schedule_type or "uniform").lower()
    assert resolve(sampler.label, schedule) == (name, "automatic")
    difference = np.abs(ours(tiny_parts, name, "automatic") - reference_image(tiny_parts, sampler.name, schedule)).max()
    assert difference <= 1, f"{name}: {difference}/255 from k-diffusion's {sampler.reference}"


def a1111_ddim_cfgpp(parts, cond, uncond, scale: float, x, steps: int):
    """A1111's DDIM CFG++ (sd_samplers_timesteps.py's timesteps, its CFGDenoiser with need_last_noise_uncond
    and cond_scale_miltiplier 1/12.5, sd_samplers_timesteps_impl.ddim_cfgpp at eta 0), written here from its
    source: A1111's timestep samplers are in no package."""
    import torch
    from diffusers import DDPMScheduler

    alphas_cumprod = DDPMScheduler.from_config(parts.scheduler_config).alphas_cumprod
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        t = torch.full((2,), int(timesteps[index]))
        out = parts.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([cond, uncond]), return_dict=False)[0]
        eps_cond, eps_uncond = out.chunk(2)
        e_t = eps_uncond + (eps_cond - eps_uncond) * (scale / 12.5)
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t**0.5
        x = a_prev**0.5 * pred_x0 + (1.0 - a_prev) ** 0.5 * eps_uncond
    return x


def test_ddim_cfgpp_matches_a1111(tiny_parts) -> None:
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from sdgen.engine.latents import decode_latents

    cond, uncond = prompt_embeddings(tiny_parts)
    side = SIZE // tiny_parts.vae_scale_factor
    shape = (1, tiny_parts.unet.config.in_channels, side, side)
    x = randn_tensor(shape, generator=[torch.Generator("cpu").manual_seed(SEED)], dtype=torch.float32)
    with torch.inference_mode():
        [image], _ = decode_latents(tiny_parts.vae, a1111_ddim_cfgpp(tiny_parts, cond, uncond, GUIDANCE, x, STEPS))
    reference = np.asarray(image).astype(np.int16)
    assert resolve("DDIM CFG++") == ("ddim-cfg++", "automatic")
    difference = np.abs(ours(tiny_parts, "ddim-cfg++", "automatic") - reference).max()
    assert difference <= 1, f"DDIM CFG++: {difference}/255 from A1111's"


def _fake_denoiser(x, sigma):
    """A cheap smooth stand-in for the U-Net's denoised estimate (long schedules without the U-Net)."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return x.tanh() * 0.7 / (1 + sigma**2) ** 0.5 + 0.1 * sigma / (1 + sigma)


def _seeded_noise(shape, seed: int):
    import torch

    draws = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(shape, generator=draws)


def _run_steps(function, x, sigmas, noise):
    """Drive a step generator with the fake denoiser, as SamplerStepper does with the U-Net."""
    steps = function(x, sigmas, noise)
    try:
        point, sigma = next(steps)
        while True:
            point, sigma = steps.send((point, _fake_denoiser(point, sigma.reshape(1))))
    except StopIteration as finished:
        return finished.value


@pytest.mark.parametrize("steps", [6, 10, 20, 36])
def test_long_schedules_match_with_a_cheap_model(steps: int) -> None:
    """Every port over `steps` Karras levels against its reference, with a cheap model: DPM fast's order-2
    tail, Restart's restarts (20+ steps) and the multistep samplers' later steps."""
    import torch

    from sdgen.engine.samplers.sigmas import ModelSigmas, schedule_sigmas
    from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG

    sampling, _ = load_kdiffusion()
    from diffusers import DDPMScheduler

    model = ModelSigmas(DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod)
    for name, function in PORTS.items():
        sigmas = schedule_sigmas("karras", steps, model, BY_NAME[name].discard_next_to_last_sigma)
        draws = torch.Generator().manual_seed(3)
        x = torch.randn((2, 4, 8, 8), generator=draws) * sigmas[0]
        ours = _run_steps(function, x, sigmas, _seeded_noise(x.shape, 5))
        extra = {"noise_sampler": _seeded_noise(x.shape, 5)}
        if name == "dpm-fast":
            expected = sampling.sample_dpm_fast(_fake_denoiser, x, float(sigmas[-2]), float(sigmas[0]), steps,
                                                disable=True, eta=1.0, **extra)
        elif name == "restart":
            expected = a1111_restart(_fake_denoiser, x, sigmas, **extra)
        else:
            reference = getattr(sampling, KDIFFUSION[name])
            if "noise_sampler" not in inspect.signature(reference).parameters:
                extra = {}
            if name == "dpm++2m-sde-heun":
                extra["solver_type"] = "heun"
            expected = reference(_fake_denoiser, x, sigmas, disable=True, **extra)
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5, msg=f"{name}, {steps} steps")


SCHEDULES = [key for key in SCHEDULE_TYPES if key != "automatic"]


def test_each_schedule_type_gives_a1111s_sigmas() -> None:
    """sdgen's sigmas of every schedule type equal A1111's (k-diffusion's CompVisDenoiser over the same
    alphas_cumprod, its get_sigmas_* and sd_schedulers.py), for a few step counts."""
    import torch
    from diffusers import DDPMScheduler

    from sdgen.engine.samplers.sigmas import ModelSigmas, schedule_sigmas
    from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG

    sampling, external = load_kdiffusion()
    alphas_cumprod = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod
    denoiser = external.CompVisDenoiser(CompVisModel(None, alphas_cumprod), quantize=False)
    model = ModelSigmas(alphas_cumprod)
    for schedule in SCHEDULES:
        for steps in (1, 4, 10, 25):
            expected = reference_sigmas(schedule, steps, denoiser, sampling).float()
            got = schedule_sigmas(schedule, steps, model)
            assert got.shape == expected.shape, (schedule, steps)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=f"{schedule}, {steps} steps")
    expected = reference_sigmas("karras", 11, denoiser, sampling)
    discarded = schedule_sigmas("karras", 10, model, discard_next_to_last=True)
    assert torch.equal(discarded, torch.cat([expected[:-2], expected[-1:]]))


@pytest.mark.parametrize("schedule", ["kl_optimal", "align_your_steps"])
def test_schedule_types_end_to_end_match_kdiffusion(tiny_parts, schedule: str) -> None:
    """Through the pipeline too (KL Optimal ends at sigma_min, not 0; AYS has its own levels)."""
    _assert_close(tiny_parts, "dpm++2m-sde-heun", schedule)


@pytest.mark.parametrize("name", ["euler-a", "dpm++2m"])
def test_ports_run_image_to_image_and_inpainting(tiny_parts, name: str) -> None:
    """img2img starts from the init image noised to the first level sdgen runs; inpainting's blend noises
    the known region to each next level."""
    from PIL import Image

    init = Image.new("RGB", (SIZE, SIZE), (200, 80, 40))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    base = dict(scheduler=name, schedule="karras", seed=SEED, num_inference_steps=STEPS, init_image=init)
    [img2img] = generate(GenerationRequest(PROMPT, strength=0.5, **base), tiny_parts)
    [inpainted] = generate(GenerationRequest(PROMPT, strength=0.75, mask=mask, **base), tiny_parts)
    for result in (img2img, inpainted):
        assert result.image.size == (SIZE, SIZE) and np.asarray(result.image).std() > 0
    corner = np.asarray(inpainted.image)[:8, :8].astype(int)
    assert np.abs(corner - (200, 80, 40)).max() <= 2, "outside the mask stays the init image"


def _pixels(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_schedule_through_the_cli_a_batch_line_and_from(tiny_model_dir, tmp_path) -> None:
    """`--scheduler "DPM++ SDE" --schedule Exponential`: A1111's names in the infotext, sdgen's in the record;
    `--from` the PNG and from an A1111-only infotext, and a batch line, make the same picture."""
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from typer.testing import CliRunner

    from sdgen.cli import app
    from sdgen.record.metadata import read_image_metadata

    runner = CliRunner()
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"]
    size = ["-W", "64", "-H", "64", "--steps", "2", "--seed", "5"]
    first = tmp_path / "first.png"
    made = runner.invoke(app, ["a fox", *common, *size, "--scheduler", "DPM++ SDE", "--schedule", "Exponential",
                               "-o", str(first)])
    assert made.exit_code == 0, made.output
    parameters, record = read_image_metadata(first)
    assert "Steps: 2, Sampler: DPM++ SDE, Schedule type: Exponential, CFG scale: 7.5, Seed: 5" in parameters
    assert (record["scheduler"], record["schedule"]) == ("dpm++sde", "exponential")
    assert record["scheduler_class"] == "sdgen.engine.samplers:dpm++sde"

    again = tmp_path / "again.png"
    assert runner.invoke(app, ["--from", str(first), *common, "-o", str(again)]).exit_code == 0
    assert again.read_bytes() == first.read_bytes()

    a1111 = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", parameters.split("\nSteps")[0] + "\n" + parameters.split("\n")[-1])
    Image.new("RGB", (64, 64)).save(a1111, pnginfo=info)
    from_text = tmp_path / "from_text.png"
    replayed = runner.invoke(app, ["--from", str(a1111), *common, "-o", str(from_text)])
    assert replayed.exit_code == 0, replayed.output
    assert np.array_equal(_pixels(from_text), _pixels(first))

    lines = tmp_path / "lines.jsonl"
    lines.write_text(json.dumps({"prompt": "a fox", "seed": 5, "scheduler": "k_dpmpp_sde", "schedule": "exponential"}))
    batch = runner.invoke(app, ["batch", str(lines), *common, *size[:-2], "-o", f"{tmp_path}/out/"])
    assert batch.exit_code == 0, batch.output
    [made_by_line] = (tmp_path / "out").glob("*.png")
    assert np.array_equal(_pixels(made_by_line), _pixels(first))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--schedule", "wavy"], "Unknown --schedule 'wavy': choose one of Automatic, Uniform, Karras"),
        (["--scheduler", "ddim", "--schedule", "karras"], "Invalid --schedule 'karras' for sampler 'DDIM'"),
        (["--scheduler", "dpm++2m-karras", "--schedule", "beta"], "use --scheduler dpm++2m --schedule beta"),
    ],
)
def test_bad_schedules_exit_2_before_loading(no_weights_load, flags: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from sdgen.cli import app

    result = CliRunner().invoke(app, ["a fox", *flags])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
