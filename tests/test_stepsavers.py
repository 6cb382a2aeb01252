"""Step savers against their references on the tiny model in float32 (within 1/255): DeepCache against the
`deepcache` package's DeepCacheSDHelper, --cfg-end against diffusers' SDCFGCutoffCallback, --decoder
against diffusers' pipeline decoding with the same AutoencoderTiny."""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.engine.denoise import Conditioning
from sdgen.engine.pipeline import generate
from sdgen.engine.plugins.cfg_end import guided_steps
from sdgen.engine.plugins.deepcache import DeepCache
from sdgen.engine.request import GenerationRequest

from .conftest import SIZE
from .test_pipeline import PROMPT, pixels, reference_pipeline

STEPS = 7
SCHEDULER = "dpm++2m-karras"


def ours(parts, latents: list | None = None, **overrides) -> np.ndarray:
    """sdgen's image; its final latents are appended to `latents` when given."""
    values = dict(prompt=PROMPT, seed=99, num_inference_steps=STEPS, width=SIZE, height=SIZE, scheduler=SCHEDULER)
    steps: list = []
    [result] = generate(GenerationRequest(**{**values, **overrides}), parts, on_step=steps.append)
    if latents is not None:
        latents.append(steps[-1].latents)
    return pixels(result.image)


def reference(pipe, output_type: str = "pil", **kwargs):
    import torch

    image = pipe(
        PROMPT, num_inference_steps=STEPS, width=SIZE, height=SIZE, output_type=output_type,
        generator=torch.Generator("cpu").manual_seed(99), **kwargs,
    ).images
    return image if output_type == "latent" else pixels(image[0])


def references(pipe, **kwargs) -> tuple:
    return reference(pipe, **kwargs), reference(pipe, output_type="latent", **kwargs)


def assert_same_and_changed(parts, expected: tuple, overrides: dict, unchanged=None) -> None:
    """Pixels within 1/255 of the reference, latents within float32 noise of its latents, and latents
    clearly not those of a run without the saver (the tiny model's pixels move little late in a run)."""
    import torch

    expected, expected_latents = expected
    latents: list = []
    assert np.abs(ours(parts, latents, **overrides) - expected).max() <= 1
    assert torch.allclose(latents[0], expected_latents, atol=1e-4)
    ours(unchanged or parts, latents)  # the same run without the saver (its own parts for model-level ones)
    assert (latents[0] - latents[1]).abs().max() > 1e-3, "the saver must change the run"


@pytest.mark.parametrize(
    ("total", "fraction", "guided"), [(20, 1.0, 20), (20, 0.5, 11), (7, 0.4, 3), (7, 0.0, 1), (4, 0.99, 4)]
)
def test_guided_steps_count_as_sdcfgcutoffcallback(total: int, fraction: float, guided: int) -> None:
    assert guided_steps(total, fraction) == guided


@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.7])
def test_cfg_end_matches_diffusers_sdcfgcutoffcallback(tiny_parts, fraction: float) -> None:
    from diffusers.callbacks import SDCFGCutoffCallback

    pipe = reference_pipeline(tiny_parts, SCHEDULER)
    cutoff = SDCFGCutoffCallback(cutoff_step_ratio=fraction)
    assert_same_and_changed(tiny_parts, references(pipe, callback_on_step_end=cutoff), {"cfg_end": fraction})


@pytest.mark.parametrize("interval", [2, 3])
def test_cache_interval_matches_the_deepcache_package(tiny_parts, interval: int) -> None:
    from DeepCache import DeepCacheSDHelper

    pipe = reference_pipeline(tiny_parts, SCHEDULER)
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=0)  # the paper's SD1.5 choice, the default
    helper.enable()
    try:
        expected = references(pipe)
    finally:
        helper.disable()  # it wraps the shared parts' forward methods
    assert_same_and_changed(tiny_parts, expected, {"cache_interval": interval})


def sd15_ordered_unet():
    """A tiny U-Net with SD1.5's block order: cross-attention in the last up block, as in the real model
    (the tiny test model has a plain last up block)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    ).eval()


def test_the_shallow_branch_on_its_own_step_equals_the_whole_unet() -> None:
    """Right after a whole pass, the shallow branch on the same input must give the same noise: it is the
    same computation with the deep part read from the cache (here through the last up block's attention)."""
    import torch

    unet = sd15_ordered_unet()
    cache = DeepCache(unet, interval=2)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    embeds = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor(500)
    with torch.inference_mode():
        full = cache(latents, t, Conditioning(embeds))
        shallow = cache(latents, t, Conditioning(embeds))
        assert cache.calls == 2 and torch.allclose(full, shallow, atol=1e-5)
        later = cache(latents * 0.5, torch.tensor(300), Conditioning(embeds))  # call 3: a whole pass again
        fresh = unet(latents * 0.5, torch.tensor(300), encoder_hidden_states=embeds, return_dict=False)[0]
        assert torch.equal(later, fresh)


def test_the_shallow_branch_after_guidance_ends_uses_the_conditional_half() -> None:
    import torch

    unet = sd15_ordered_unet()
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    embeds = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor(500)
    with torch.inference_mode():
        cache = DeepCache(unet, interval=2)
        guided = cache(torch.cat([latents, latents]), t, Conditioning(embeds[1:], embeds[:1]))  # [uncond, cond]
        conditional_only = cache(latents, t, Conditioning(embeds[1:]))
        assert torch.allclose(conditional_only, guided[1:], atol=1e-5)


def test_decoder_matches_diffusers_with_the_same_tiny_autoencoder(tiny_model_dir, tiny_autoencoder_dir) -> None:
    from sdgen.engine.loader import load_model
    from sdgen.engine.request import ModelSpec

    parts = load_model(
        ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32", decoder=str(tiny_autoencoder_dir))
    )
    pipe = reference_pipeline(parts, SCHEDULER)
    pipe.vae = parts.plugins["decoder"]  # diffusers' TAESD swap: pipe.vae = AutoencoderTiny.from_pretrained(...)
    expected = reference(pipe)
    got = ours(parts)
    assert np.abs(got - expected).max() <= 1
    del parts.plugins["decoder"]
    assert np.abs(got - ours(parts)).max() > 1, "the full VAE decodes differently"


# --- through the command line -------------------------------------------------------------------------


def test_savers_through_the_cli_are_recorded_and_replayed(tiny_model_dir, tiny_autoencoder_dir, tmp_path) -> None:
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from sdgen.cli import app

    runner = CliRunner()
    args = ["--model", str(tiny_model_dir), "-W", "64", "-H", "64", "--steps", "4", "--device", "cpu", "--seed", "5"]
    savers = ["--cache-interval", "2", "--cfg-end", "0.5", "--decoder", str(tiny_autoencoder_dir)]
    first = tmp_path / "turbo.png"
    result = runner.invoke(app, ["a fox", *args, *savers, "-o", str(first)])
    assert result.exit_code == 0, result.output
    record = json.loads(Image.open(first).text["sdgen"])
    assert (record["cache_interval"], record["cfg_end"], record["decoder"]) == (2, 0.5, str(tiny_autoencoder_dir))
    again = tmp_path / "again.png"
    result = runner.invoke(app, ["--from", str(first), "-o", str(again)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(pixels(Image.open(first)), pixels(Image.open(again)))
    plain = tmp_path / "plain.png"
    assert runner.invoke(app, ["a fox", *args, "-o", str(plain)]).exit_code == 0
    assert not np.array_equal(pixels(Image.open(first)), pixels(Image.open(plain)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cfg-end", "1.5"], "sdgen: error: Invalid --cfg-end 1.5: a fraction of the steps from 0 to 1"),
        (["--cache-interval", "0"], "sdgen: error: Invalid --cache-interval 0: must be a whole number from 1"),
        (["--decoder", "./no-such-taesd"], "sdgen: error: Invalid --decoder './no-such-taesd': not a model folder"),
    ],
)
def test_bad_saver_values_exit_2_before_loading(no_weights_load, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from sdgen.cli import app

    result = CliRunner().invoke(app, ["a fox", "--model", "never/loaded", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_turbo_and_lcm_presets_resolve_to_what_docs_settings_says() -> None:
    from sdgen.config import settings

    def preset(name: str) -> dict:
        resolved = settings.resolve(environ={}, preset=name)
        return {key: value.value for key, value in resolved.items() if value.source == f"preset {name}"}

    assert preset("turbo") == {
        "cache_interval": 3, "cfg_end": 0.5, "token_merging": 0.5, "decoder": "madebyollin/taesd",
    }
    assert preset("lcm") == {
        "lora": ["latent-consistency/lcm-lora-sdv1-5"], "scheduler": "lcm", "steps": 4, "guidance_scale": 1.0,
    }


def test_a_compiled_unet_runs_uncompiled_under_deepcache(caplog) -> None:
    import torch

    unet = sd15_ordered_unet()

    class Compiled(torch.nn.Module):  # what torch.compile returns: the module as _orig_mod
        def __init__(self) -> None:
            super().__init__()
            self._orig_mod = unet

        def forward(self, *args, **kwargs):
            raise AssertionError("the compiled graph must not run with hooks added")

    cache = DeepCache(Compiled(), interval=2)
    latents, embeds = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    with torch.inference_mode():
        assert cache(latents, torch.tensor(10), Conditioning(embeds)).shape == latents.shape
    assert "runs the U-Net uncompiled" in caplog.text


@pytest.fixture(scope="module")
def attention_at_full_resolution(tiny_model_dir, tmp_path_factory):
    """The tiny model with the SD1.5-ordered U-Net: transformer blocks at full latent resolution, where
    tomesd merges tokens (in the tiny model's own U-Net they sit one level down, where it does nothing)."""
    import shutil

    folder = tmp_path_factory.mktemp("models") / "tiny-sd-attention-on-top"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "unet")
    unet = sd15_ordered_unet()
    unet.register_to_config(sample_size=32)
    unet.save_pretrained(folder / "unet")
    return folder


def test_token_merging_matches_tomesd_on_diffusers(attention_at_full_resolution) -> None:
    import tomesd
    import torch
    from diffusers import StableDiffusionPipeline

    from sdgen.engine.loader import load_model
    from sdgen.engine.request import ModelSpec

    folder = str(attention_at_full_resolution)
    merged = load_model(ModelSpec(model=folder, device="cpu", dtype="float32", token_merging=0.5))
    assert merged.plugins["token_merging"] == 0.5
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = reference_pipeline(merged, SCHEDULER).scheduler
    pipe.set_progress_bar_config(disable=True)
    tomesd.apply_patch(pipe, ratio=0.5, use_rand=False)
    expected = references(pipe)
    plain = load_model(ModelSpec(model=folder, device="cpu", dtype="float32"))
    assert_same_and_changed(merged, expected, {}, unchanged=plain)


def test_token_merging_out_of_range_exits_2(no_weights_load) -> None:
    from typer.testing import CliRunner

    from sdgen.cli import app

    result = CliRunner().invoke(app, ["a fox", "--model", "never/loaded", "--token-merging", "0.9"])
    assert result.exit_code == 2 and result.stderr.startswith("sdgen: error: Invalid --token-merging 0.9: a fraction")
