"""Speed and memory decisions (no GPU needed) and the options applied to a real tiny model."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sdgen.config.options import describe
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import InvalidRequestError
from sdgen.hardware.devices import Placement
from sdgen.hardware.speed import SpeedPlan, compile_cache_dir, compile_plan, plan_speed, sdgen_cache_root

CUDA = Placement("cuda:0", "float16", "float16")
CPU = Placement("cpu", "bfloat16", "bfloat16")
MPS = Placement("mps", "float32", "float32")


def test_channels_last_where_it_measured_faster() -> None:
    assert plan_speed(ModelSpec(), CPU).channels_last and plan_speed(ModelSpec(), CUDA).channels_last
    assert not plan_speed(ModelSpec(), MPS).channels_last
    assert not plan_speed(ModelSpec(), Placement("cpu", "float32", "float32")).channels_last  # 1.00x, more RSS


def test_offload_is_for_cuda_and_keeps_weights_off_the_device() -> None:
    plan = plan_speed(ModelSpec(offload="model"), CUDA)
    assert plan.offload == "model" and not plan.move_to_device
    assert plan_speed(ModelSpec(offload="sequential"), CUDA).offload == "sequential"
    assert plan_speed(ModelSpec(), CUDA).move_to_device
    with pytest.raises(InvalidRequestError) as caught:
        plan_speed(ModelSpec(offload="model"), CPU)
    assert re.search("Invalid --offload model on cpu: .* Drop --offload.", describe(caught.value))
    with pytest.raises(InvalidRequestError) as caught:
        plan_speed(ModelSpec(offload="gpu"), CUDA)
    assert describe(caught.value) == "Invalid --offload 'gpu': use one of none, model, sequential."


def test_memory_options_are_switched_on(tiny_model_dir) -> None:
    from sdgen.engine.loader import load_model

    spec = ModelSpec(
        model=str(tiny_model_dir),
        device="cpu",
        dtype="bfloat16",
        vae_slicing=True,
        vae_tiling=True,
        attention_slicing=True,
    )
    parts = load_model(spec)
    assert parts.vae.use_slicing and parts.vae.use_tiling
    assert parts.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    processors = {type(p).__name__ for p in parts.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}


def test_slicing_does_not_change_the_picture(tiny_model_dir, tiny_parts) -> None:
    from sdgen.engine.loader import load_model
    from sdgen.engine.pipeline import generate

    sliced = load_model(
        ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32", attention_slicing=True, vae_slicing=True)
    )
    request = GenerationRequest("a fox", seed=3, num_inference_steps=3, width=64, height=64, num_images=2, batch_size=2)
    for a, b in zip(generate(request, sliced), generate(request, tiny_parts), strict=True):
        assert np.abs(np.asarray(a.image).astype(int) - np.asarray(b.image).astype(int)).max() <= 1


def test_compile_goes_through_torch_compile_with_sdgens_cache(monkeypatch, tiny_parts, tmp_path, caplog) -> None:
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: compiled.append((module, options)) or module)
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config, "freezing", False)
    monkeypatch.setenv("SDGEN_CACHE_DIR", str(tmp_path))
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what torch sets; restored after
    unet = tiny_parts.unet
    plan = SpeedPlan(False, False, False, False, "none", True, True)
    try:
        tiny_parts.apply(plan)
    finally:
        tiny_parts.unet = unet
    assert compiled == [(unet, {})] and inductor_config.freezing  # CPU: freeze and prepack weights
    folder = tiny_parts.compile_cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder) and folder.is_dir()
    assert folder == compile_cache_dir(
        f"{tiny_parts.source.model}@{tiny_parts.source.folder.resolve()}", "float32", "cpu", torch.__version__, tmp_path
    )
    assert "measured slower than no compile in float32" in caplog.text  # the tiny parts run in float32


def test_compile_cache_folders_are_keyed_by_torch_model_device_and_dtype(tmp_path) -> None:
    key = ("org/model@abc", "bfloat16", "cpu", "2.13.0+cpu")
    folder = compile_cache_dir(*key, root=tmp_path)
    assert folder.is_relative_to(tmp_path / "compile" / "torch-2.13.0+cpu")
    assert folder.name == "cpu-bfloat16" and folder.parent.name.startswith("org-model-abc-")
    assert compile_cache_dir(*key, root=tmp_path) == folder  # the second process finds the first one's
    others = [
        ("org/model@abd", "bfloat16", "cpu", "2.13.0+cpu"),
        ("org/model@abc", "float32", "cpu", "2.13.0+cpu"),
        ("org/model@abc", "bfloat16", "cuda:0", "2.13.0+cpu"),
        ("org/model@abc", "bfloat16", "cpu", "2.14.0+cpu"),
    ]
    assert len({compile_cache_dir(*other, root=tmp_path) for other in others} | {folder}) == 5
    one, other = (compile_cache_dir("m", "float16", device, "2", tmp_path) for device in ("cuda:0", "cuda:1"))
    assert one == other  # every GPU of a kind shares compiled kernels


def test_cache_root_follows_sdgen_cache_dir_then_xdg() -> None:
    assert sdgen_cache_root({"SDGEN_CACHE_DIR": "/a", "XDG_CACHE_HOME": "/b"}) == Path("/a")
    assert sdgen_cache_root({"XDG_CACHE_HOME": "/b"}) == Path("/b/sdgen")
    assert sdgen_cache_root({}) == Path("~/.cache/sdgen").expanduser()


def test_cuda_compile_follows_diffusers_advice() -> None:
    assert compile_plan("cuda:0").options == {"mode": "reduce-overhead"}


def test_vae_nan_guard_upcasts_once_then_refuses(tiny_model_dir, tiny_parts) -> None:
    from sdgen.engine.latents import decode_latents
    from sdgen.engine.loader import load_model
    from sdgen.errors import GenerationError

    parts = load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="bfloat16"))
    vae = parts.vae
    real_decode = vae.decode

    def overflow_below_float32(latents, return_dict=False):  # what the fp16 SD1.5 VAE does on some images
        out = real_decode(latents, return_dict=False)[0]
        return (out * float("nan"),) if vae.dtype != torch.float32 else (out,)

    vae.decode = overflow_below_float32
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    [image], used = decode_latents(vae, latents)
    [reference], _ = decode_latents(tiny_parts.vae, latents)  # the float32 VAE (bf16 weights differ slightly)
    assert used == "float32" and vae.dtype == torch.bfloat16  # retried in float32, then put back
    difference = np.abs(np.asarray(image).astype(int) - np.asarray(reference).astype(int))
    assert difference.mean() < 3 and np.asarray(image).std() > 5  # a real picture, not a black one
    vae.decode = lambda latents, return_dict=False: (torch.full((1, 3, 16, 16), float("nan")),)
    with pytest.raises(GenerationError, match="NaN or infinite values even in float32"):
        decode_latents(vae, torch.zeros(1, 4, 8, 8))
    assert vae.dtype == torch.bfloat16


def test_each_image_records_the_vae_dtype_that_decoded_it(tiny_model_dir) -> None:
    """After the NaN guard's float32 retry, later images decode in the run's dtype again and say so."""
    from sdgen.engine.loader import load_model
    from sdgen.engine.pipeline import generate
    from sdgen.record.metadata import result_record

    parts = load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="bfloat16"))
    vae, real_decode, calls = parts.vae, parts.vae.decode, []

    def first_overflows(latents, return_dict=False):
        calls.append(vae.dtype)
        out = real_decode(latents, return_dict=False)[0]
        return (out * float("nan"),) if len(calls) == 1 else (out,)

    vae.decode = first_overflows
    request = GenerationRequest("a fox", seed=1, num_inference_steps=2, width=64, height=64, num_images=2)
    records = [result_record(result, parts) for result in generate(request, parts)]
    assert [r["vae_dtype"] for r in records] == ["float32", "bfloat16"]
    assert calls == [torch.bfloat16, torch.float32, torch.bfloat16]


def test_vae_tiling_decodes_large_images_in_tiles_without_seams(tiny_model_dir, tiny_parts) -> None:
    from sdgen.engine.loader import load_model
    from sdgen.engine.pipeline import generate

    # the tiny VAE tiles above 64x64 pixels: 192x192 is 3x3 overlapping tiles, blended
    request = GenerationRequest("a fox", seed=1, num_inference_steps=4, width=192, height=192)
    whole = np.asarray(generate(request, tiny_parts)[0].image).astype(int)
    tiled_parts = load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32", vae_tiling=True))
    calls = []
    decode_tiles = tiled_parts.vae.tiled_decode
    tiled_parts.vae.tiled_decode = lambda *args, **kwargs: calls.append(1) or decode_tiles(*args, **kwargs)
    tiled = np.asarray(generate(request, tiled_parts)[0].image).astype(int)
    assert calls == [1]
    assert np.abs(tiled - whole).mean() < 4  # the same picture
    # a seam would be a column (or row) whose jump to the next one stands out from the rest
    for axis in (0, 1):
        jumps_tiled = np.abs(np.diff(tiled, axis=axis)).mean(axis=(1 - axis, 2))
        jumps_whole = np.abs(np.diff(whole, axis=axis)).mean(axis=(1 - axis, 2))
        assert jumps_tiled.max() <= 1.15 * jumps_whole.max()


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_hooks_run_the_whole_loop(tiny_model_dir, tiny_parts, offload) -> None:
    """accelerate's hooks, exercised with the CPU as the execution device (the only one here): the same
    picture as without offload. On CUDA the same calls move each part (or layer) to the GPU when used."""
    from sdgen.engine.loader import load_model
    from sdgen.engine.pipeline import generate

    parts = load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32"))
    parts.apply(SpeedPlan(False, False, False, False, offload, False, False))
    assert hasattr(parts.unet, "_hf_hook")
    request = GenerationRequest("a fox", seed=2, num_inference_steps=3, width=64, height=64)
    ours = np.asarray(generate(request, parts)[0].image).astype(int)
    plain = np.asarray(generate(request, tiny_parts)[0].image).astype(int)
    assert np.abs(ours - plain).max() <= 1


def test_a_users_own_inductor_cache_is_left_alone(monkeypatch, tiny_parts, tmp_path) -> None:
    monkeypatch.setenv("SDGEN_CACHE_DIR", str(tmp_path / "sdgen"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert tiny_parts.compile_cache_dir() is None


def test_a_local_models_compile_cache_folder_names_it_once(tmp_path) -> None:
    key = "/home/me/models/tiny-sd@/home/me/models/tiny-sd"  # a local model: its name and its folder
    folder = compile_cache_dir(key, "float32", "cpu", "2.13.0+cpu", root=tmp_path)
    assert re.fullmatch(r"tiny-sd-[0-9a-f]{10}", folder.parent.name), folder
    other = compile_cache_dir("/elsewhere/tiny-sd@/elsewhere/tiny-sd", "float32", "cpu", "2.13.0+cpu", root=tmp_path)
    assert other != folder  # the same name in two places: two folders
