"""Guidance modifiers against their diffusers references on the tiny model in float32 (within 1/255 in
pixels, float32 noise in latents): --guidance-rescale against StableDiffusionPipeline(guidance_rescale=),
--freeu against pipe.enable_freeu, --pag-scale against StableDiffusionPAGPipeline (pag_applied_layers
["mid"]), --sag-scale against StableDiffusionSAGPipeline; and how they combine with the rest."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine import plugins
from sdgen.engine.checking import check_request
from sdgen.engine.pipeline import ImageTask, batch_key, generate_batch
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError
from sdgen.record.metadata import request_values_from_image

from .conftest import SIZE
from .test_pipeline import PROMPT, pixels, reference_pipeline
from .test_stepsavers import SCHEDULER, STEPS, assert_same_and_changed, ours, references

runner = CliRunner()
MODIFIERS = {"guidance_rescale": 0.5, "freeu": "1.5,1.6,0.9,0.2", "pag_scale": 2.0, "sag_scale": 0.75}
FLAGS = ["--guidance-rescale", "0.5", "--freeu", "1.5,1.6,0.9,0.2", "--pag-scale", "2", "--sag-scale", "0.75"]


def pipeline_like(cls, parts, scheduler_name: str = SCHEDULER, **kwargs):
    """A diffusers pipeline of class `cls` on the same parts and scheduler as reference_pipeline's."""
    base = reference_pipeline(parts, scheduler_name)
    pipe = cls(**{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
               safety_checker=None, feature_extractor=None, requires_safety_checker=False, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_guidance_rescale_matches_diffusers(tiny_parts, fraction: float) -> None:
    pipe = reference_pipeline(tiny_parts, SCHEDULER)
    expected = references(pipe, guidance_rescale=fraction, guidance_scale=12.0)
    assert_same_and_changed(tiny_parts, expected, {"guidance_rescale": fraction, "guidance_scale": 12.0})


def test_freeu_matches_diffusers_and_leaves_the_model_unchanged(tiny_parts) -> None:
    import torch

    state = {key: value.clone() for key, value in tiny_parts.unet.state_dict().items()}
    blocks = [dict(vars(block)) for block in tiny_parts.unet.up_blocks]
    pipe = reference_pipeline(tiny_parts, SCHEDULER)
    pipe.enable_freeu(b1=1.5, b2=1.6, s1=0.9, s2=0.2)
    try:
        expected = references(pipe)
    finally:
        pipe.disable_freeu()
    for block in tiny_parts.unet.up_blocks:  # diffusers leaves None behind; sdgen removes what it added
        for key in ("b1", "b2", "s1", "s2"):
            vars(block).pop(key, None)
    assert_same_and_changed(tiny_parts, expected, {"freeu": "1.5,1.6,0.9,0.2"})
    assert [dict(vars(block)) for block in tiny_parts.unet.up_blocks] == blocks
    assert all(torch.equal(value, state[key]) for key, value in tiny_parts.unet.state_dict().items())


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_pag_matches_diffusers_pag_pipeline(tiny_parts, guidance: float) -> None:
    from diffusers import StableDiffusionPAGPipeline

    pipe = pipeline_like(StableDiffusionPAGPipeline, tiny_parts, pag_applied_layers=["mid"])
    expected = references(pipe, pag_scale=3.0, guidance_scale=guidance)
    assert_same_and_changed(tiny_parts, expected, {"pag_scale": 3.0, "guidance_scale": guidance})
    processors = tiny_parts.unet.attn_processors
    assert all(type(p).__name__ != "IdentityAttention" for p in processors.values())


def test_pag_with_guidance_rescale_matches_diffusers(tiny_parts) -> None:
    from diffusers import StableDiffusionPAGPipeline

    pipe = pipeline_like(StableDiffusionPAGPipeline, tiny_parts, pag_applied_layers=["mid"])
    expected = references(pipe, pag_scale=2.0, guidance_rescale=0.7)
    assert_same_and_changed(tiny_parts, expected, {"pag_scale": 2.0, "guidance_rescale": 0.7})


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_sag_matches_diffusers_sag_pipeline(tiny_parts, guidance: float) -> None:
    from diffusers import StableDiffusionSAGPipeline

    before = dict(tiny_parts.unet.attn_processors)
    pipe = pipeline_like(StableDiffusionSAGPipeline, tiny_parts)
    expected = references(pipe, sag_scale=0.75, guidance_scale=guidance)
    assert_same_and_changed(tiny_parts, expected, {"sag_scale": 0.75, "guidance_scale": guidance})
    assert tiny_parts.unet.attn_processors == before


def test_rescale_ends_with_guidance_as_diffusers_with_sdcfgcutoffcallback(tiny_parts) -> None:
    """After --cfg-end there is no guided prediction to rescale; diffusers skips the rescale there too."""
    from diffusers.callbacks import SDCFGCutoffCallback

    pipe = reference_pipeline(tiny_parts, SCHEDULER)
    expected = references(pipe, guidance_rescale=0.7, callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=0.4))
    assert_same_and_changed(tiny_parts, expected, {"guidance_rescale": 0.7, "cfg_end": 0.4})


def test_pag_img2img_matches_diffusers_pag_img2img_pipeline(tiny_parts) -> None:
    import torch
    from diffusers import StableDiffusionPAGImg2ImgPipeline

    init = Image.fromarray(np.random.default_rng(3).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    pipe = pipeline_like(StableDiffusionPAGImg2ImgPipeline, tiny_parts, pag_applied_layers=["mid"])
    expected = pipe(PROMPT, image=init, strength=0.6, num_inference_steps=STEPS, pag_scale=3.0,
                    generator=torch.Generator("cpu").manual_seed(99)).images[0]
    made = ours(tiny_parts, init_image=init, strength=0.6, pag_scale=3.0)
    assert np.abs(made - pixels(expected)).max() <= 1


def every_modifier(monkeypatch) -> list[str]:
    """Record the guidance modifiers' calls: one name per step of each that runs."""
    calls: list[str] = []

    def counted(name: str, in_run):
        @contextmanager
        def counted_in_run(run):
            with in_run(run) as guide:
                yield None if guide is None else (lambda step: calls.append(name) or guide(step))

        return counted_in_run

    registry = dict(plugins.PLUGINS)
    for name in ("pag", "sag", "guidance_rescale"):
        registry[name] = dataclasses.replace(registry[name], in_run=counted(name, registry[name].in_run))
    monkeypatch.setattr(plugins, "PLUGINS", registry)
    return calls


def test_the_modifiers_run_in_both_passes_of_hires_and_with_a_mask(tiny_parts, monkeypatch) -> None:
    calls = every_modifier(monkeypatch)
    ours(tiny_parts, hires_scale=1.5, hires_steps=3, hires_strength=1.0, **MODIFIERS)  # 3 steps either way
    assert calls == ["pag", "sag", "guidance_rescale"] * (STEPS + 3)
    calls.clear()
    init = Image.new("RGB", (SIZE, SIZE), (90, 120, 200))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    masked = ours(tiny_parts, init_image=init, mask=mask, strength=1.0, **MODIFIERS)
    assert calls == ["pag", "sag", "guidance_rescale"] * STEPS
    assert not np.array_equal(masked, ours(tiny_parts, init_image=init, mask=mask, strength=1.0))


def test_all_together_after_cfg_end_and_in_a_batch_equal_single_images(tiny_parts) -> None:
    """Batched images equal one-by-one ones; after --cfg-end PAG and SAG go on in their unguided forms."""
    values = dict(prompt=PROMPT, seed=7, num_inference_steps=STEPS, width=SIZE, height=SIZE, scheduler=SCHEDULER,
                  num_images=2, cfg_end=0.5, **MODIFIERS)
    request = check_request(GenerationRequest(**values))
    tasks = [ImageTask.of(request, index) for index in range(2)]
    together = [pixels(made.image) for made in generate_batch(tasks, tiny_parts)]
    alone = [pixels(generate_batch([task], tiny_parts)[0].image) for task in tasks]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(together, alone, strict=True))
    assert not np.array_equal(together[0], ours(tiny_parts, seed=7, cfg_end=0.5))


def test_images_with_other_modifier_values_never_share_a_unet_call() -> None:
    from sdgen.engine.pipeline import ImageTask

    def key(**fields: object) -> tuple:
        return batch_key(ImageTask.of(check_request(GenerationRequest(prompt="a fox", seed=1, **fields))))

    for name, value in MODIFIERS.items():
        assert key(**{name: value}) != key(), name


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--guidance-rescale", "1.5"], "Invalid --guidance-rescale 1.5: a fraction from 0 (off) to 1"),
        (["--freeu", "1.5,1.6,0.9"], "Invalid --freeu '1.5,1.6,0.9': four numbers b1,b2,s1,s2 from 0 to 10"),
        (["--freeu", "a,b,c,d"], "Invalid --freeu 'a,b,c,d': four numbers"),
        (["--pag-scale", "-1"], "Invalid --pag-scale -1.0: from 0 (off) to 100 (3 is typical)."),
        (["--sag-scale", "0.5", "--scheduler", "euler"],
         "Invalid --sag-scale 0.5 with --scheduler euler: self-attention guidance works on x_t as DDIM does"),
        (["--sag-scale", "0.5", "--cache-interval", "2"],
         "Invalid --sag-scale 0.5 with --cache-interval 2: DeepCache skips the mid-block"),
    ],
)
def test_bad_values_exit_2_naming_them_before_loading(no_weights_load, flags, message) -> None:
    result = runner.invoke(app, ["a fox", "--device", "cpu", *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_end_to_end_cli_record_infotext_and_replay(tiny_model_dir, tmp_path) -> None:
    args = ["--model", str(tiny_model_dir), "-W", "64", "-H", "64", "--steps", "3", "--device", "cpu", "-s", "5"]
    first = tmp_path / "first.png"
    result = runner.invoke(app, ["a fox", *args, *FLAGS, "-o", str(first)])
    assert result.exit_code == 0, result.output
    image = Image.open(first)
    record = json.loads(image.text["sdgen"])
    assert {key: record[key] for key in MODIFIERS} == MODIFIERS
    infotext = image.text["parameters"]
    for field in ("CFG Rescale: 0.5", "freeu_enabled: True, freeu_b1: 1.5, freeu_b2: 1.6, freeu_s1: 0.9, "
                  "freeu_s2: 0.2", "PerturbedAttentionGuidance_enabled: True, PerturbedAttentionGuidance_scale: 2.0",
                  "sag_enabled: True, sag_scale: 0.75, sag_blur_sigma: 1.0, sag_threshold: 1.0"):
        assert field in infotext

    again = tmp_path / "again.png"
    assert runner.invoke(app, ["--from", str(first), "-o", str(again)]).exit_code == 0
    assert np.array_equal(pixels(image), pixels(Image.open(again)))

    a1111_only = tmp_path / "a1111.png"  # what A1111 or Forge would have written: the text alone
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", infotext)
    image.save(a1111_only, pnginfo=info)
    values = request_values_from_image(a1111_only)
    assert {key: values[key] for key in MODIFIERS} == {**MODIFIERS, "freeu": "1.5,1.6,0.9,0.2"}
    plain = tmp_path / "plain.png"
    assert runner.invoke(app, ["a fox", *args, "-o", str(plain)]).exit_code == 0
    assert not np.array_equal(pixels(image), pixels(Image.open(plain)))
    assert "freeu" not in Image.open(plain).text["parameters"]


def test_config_file_and_batch_lines_set_them(tiny_model_dir, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('freeu = "1.5,1.6,0.9,0.2"\npag_scale = 2.0\n')
    source = tmp_path / "p.jsonl"
    source.write_text('{"prompt": "a fox", "seed": 5}\n{"prompt": "a fox", "seed": 5, "pag_scale": 0, '
                      '"sag_scale": 0.75}\n')
    args = ["--model", str(tiny_model_dir), "-W", "64", "-H", "64", "--steps", "3", "--device", "cpu"]
    result = runner.invoke(app, ["batch", str(source), *args, "-o", f"{tmp_path}/out/"],
                           env={"SDGEN_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    records = [json.loads(Image.open(path).text["sdgen"]) for path in sorted((tmp_path / "out").glob("*.png"))]
    chosen = sorted((r["freeu"], r["pag_scale"], r["sag_scale"]) for r in records)
    assert chosen == [("1.5,1.6,0.9,0.2", 0.0, 0.75), ("1.5,1.6,0.9,0.2", 2.0, 0.0)]


def test_alwayson_scripts_of_forge_clients_set_them() -> None:
    from sdgen.serve.schema import Txt2ImgBody
    from sdgen.serve.translate import request_values

    scripts = {
        "FreeU Integrated": {"args": [True, 1.5, 1.6, 0.9, 0.2]},
        "Perturbed Attention Guidance Integrated": {"args": [True, 3.0]},
        "SelfAttentionGuidance Integrated (SD 1.x, SD 2.x, SDXL)": {"args": [True, 0.5, 1.0, 1.0]},
        "CFG Rescale Extension": {"args": [0.7, False]},
        "Some other extension": {"args": [1, 2]},
    }
    values = request_values(Txt2ImgBody(prompt="a fox", alwayson_scripts=scripts), {})
    assert {key: values[key] for key in MODIFIERS} == {
        "guidance_rescale": 0.7, "freeu": "1.5,1.6,0.9,0.2", "pag_scale": 3.0, "sag_scale": 0.5,
    }
    off = request_values(Txt2ImgBody(prompt="a fox", alwayson_scripts={"FreeU Integrated": {"args": [False]}}),
                         {"freeu": "1,1,1,1"})
    assert off["freeu"] is None
    with pytest.raises(InvalidRequestError, match="blur sigma 2.0"):
        request_values(Txt2ImgBody(prompt="a fox", alwayson_scripts={
            "SelfAttentionGuidance Integrated": {"args": [True, 0.5, 2.0, 1.0]}}), {})


def test_the_server_takes_them_from_alwayson_scripts(tiny_model_dir, hf_home, tmp_path) -> None:
    """webuiapi's alwayson_scripts -> the command line's picture, with the same infotext; bad args: 422."""
    import requests
    import webuiapi

    from sdgen.serve.app import create_app
    from sdgen.serve.server import serving

    from .serving import make_engine

    engine = make_engine(tiny_model_dir)
    scripts = {"FreeU Integrated": {"args": [True, 1.5, 1.6, 0.9, 0.2]},
               "Perturbed Attention Guidance Integrated": {"args": [True, 2.0]}}
    try:
        with serving(create_app(engine), engine) as url:
            api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", sampler="Euler a", steps=3)
            result = api.txt2img(prompt="a fox", seed=5, cfg_scale=7.5, width=64, height=64, alwayson_scripts=scripts)
            bad = requests.post(f"{url}/sdapi/v1/txt2img", timeout=60, json={
                "prompt": "a fox", "steps": 1, "width": 64, "height": 64,
                "alwayson_scripts": {"Perturbed Attention Guidance Integrated": {"args": [True, -3]}}})
    finally:
        engine.close()
    target = tmp_path / "cli.png"
    flags = ["a fox", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "-s", "5", "-W", "64",
             "-H", "64", "--steps", "3", "--scheduler", "euler-a", "--freeu", "1.5,1.6,0.9,0.2", "--pag-scale", "2",
             "-o", str(target)]
    assert runner.invoke(app, flags).exit_code == 0
    assert np.array_equal(pixels(result.image.convert("RGB")), pixels(Image.open(target).convert("RGB")))
    assert "PerturbedAttentionGuidance_scale: 2.0" in result.info["infotexts"][0]
    assert bad.status_code == 422 and "Invalid alwayson_scripts -3" in bad.json()["detail"], bad.text


def test_a_9_channel_inpainting_model_with_pag_matches_diffusers_and_takes_sag(tmp_path) -> None:
    """The extra passes get the inpainting channels (diffusers' StableDiffusionPAGInpaintPipeline, then
    A1111's paste of the init image outside the mask, as tests/test_inpaint.py compares)."""
    import torch
    from diffusers import StableDiffusionPAGInpaintPipeline

    from sdgen.engine.loader import load_model
    from sdgen.engine.request import ModelSpec
    from sdgen.testing.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-inpainting", in_channels=9)
    parts = load_model(ModelSpec(model=str(tmp_path / "tiny-inpainting"), device="cpu", dtype="float32"))
    init = Image.fromarray(np.random.default_rng(3).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (20, 16, 44, 48))
    pipe = pipeline_like(StableDiffusionPAGInpaintPipeline, parts, pag_applied_layers=["mid"])
    expected = pipe(PROMPT, image=init, mask_image=mask, height=SIZE, width=SIZE, strength=1.0, pag_scale=3.0,
                    num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(99)).images[0]
    inpaint = dict(init_image=init, mask=mask, mask_blur=0, strength=1.0)
    made = ours(parts, pag_scale=3.0, **inpaint)
    assert np.abs(made - pixels(Image.composite(expected, init, mask))).max() <= 1
    assert not np.array_equal(ours(parts, sag_scale=0.75, **inpaint), ours(parts, **inpaint))
