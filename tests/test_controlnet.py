"""ControlNet (sdgen/engine/plugins/controlnet.py) against diffusers' StableDiffusionControlNetPipeline on the tiny
model, float32, within 1/255: one ControlNet, two (diffusers' MultiControlNetModel), guidance start and end, and
A1111's "ControlNet is more important" mode against diffusers' guess mode; the spelling of --control, finding the
weights, and the command line end to end with its record and --from replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdgen.engine.pipeline import generate
from sdgen.engine.plugins import controlnet as controlnet_plugin
from sdgen.engine.plugins.controlnet import ControlUnit, parse_control, soft_scales
from sdgen.errors import InvalidRequestError

from .conftest import SIZE, run_cli
from .test_pipeline import PROMPT, STEPS, pixels, reference_pipeline, request

SEED = 7


@pytest.fixture(scope="module")
def controlnet_dirs(tiny_parts, tmp_path_factory) -> list[Path]:
    """Two tiny ControlNets (seeds 0 and 1) as diffusers folders."""
    from sdgen.testing.tiny_controlnet import save_tiny_controlnet

    root = tmp_path_factory.mktemp("controlnets")
    return [save_tiny_controlnet(tiny_parts.unet, root / f"tiny-controlnet-{seed}", seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def control_images(tmp_path_factory) -> list[Path]:
    """Two control maps: a gradient and a disc."""
    from PIL import Image

    root = tmp_path_factory.mktemp("control-images")
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    gradient = np.stack([x * 4, y * 4, x * 0], axis=-1)
    disc = np.repeat((((x - 30) ** 2 + (y - 34) ** 2) < 200)[..., None] * 255, 3, axis=-1)
    paths = [root / "gradient.png", root / "disc.png"]
    for path, array in zip(paths, (gradient, disc), strict=True):
        Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(path)
    return paths


def diffusers_controlnet_image(parts, controlnet_dirs, images, guidance: float = 7.5, **kwargs) -> np.ndarray:
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    base = reference_pipeline(parts, "euler-a")
    nets = [ControlNetModel.from_pretrained(folder).eval() for folder in controlnet_dirs]
    pipe = StableDiffusionControlNetPipeline(
        **{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        controlnet=nets[0] if len(nets) == 1 else nets,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pictures = [Image.open(path).convert("RGB") for path in images]
    image = pipe(
        PROMPT, image=pictures[0] if len(pictures) == 1 else pictures, num_inference_steps=STEPS, width=SIZE,
        height=SIZE, guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(SEED), **kwargs,
    ).images[0]
    return pixels(image)


def ours(parts, controls: list[str], guidance: float = 7.5, **kwargs) -> np.ndarray:
    asked = request(scheduler="euler-a", seed=SEED, guidance_scale=guidance, controls=tuple(controls), **kwargs)
    [result] = generate(asked, parts)
    return pixels(result.image)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_one_controlnet_matches_diffusers_controlnet_pipeline(
    tiny_parts, controlnet_dirs, control_images, guidance: float
) -> None:
    expected = diffusers_controlnet_image(
        tiny_parts, controlnet_dirs[:1], control_images[:1], guidance, controlnet_conditioning_scale=0.7
    )
    got = ours(tiny_parts, [f"{controlnet_dirs[0]}={control_images[0]}:0.7"], guidance)
    assert np.abs(got - expected).max() <= 1
    assert np.abs(got - ours(tiny_parts, [], guidance)).max() > 2, "the ControlNet must change the picture"


def test_two_controlnets_match_diffusers_multi_controlnet(tiny_parts, controlnet_dirs, control_images) -> None:
    expected = diffusers_controlnet_image(
        tiny_parts, controlnet_dirs, control_images, controlnet_conditioning_scale=[0.8, 1.3]
    )
    pairs = zip(controlnet_dirs, control_images, (0.8, 1.3), strict=True)
    got = ours(tiny_parts, [f"{net}={image}:{weight}" for net, image, weight in pairs])
    assert np.abs(got - expected).max() <= 1
    one = ours(tiny_parts, [f"{controlnet_dirs[0]}={control_images[0]}:0.8"])
    assert np.abs(got - one).max() > 2, "the second ControlNet must count"


def test_guidance_start_and_end_match_control_guidance_start_and_end(
    tiny_parts, controlnet_dirs, control_images
) -> None:
    expected = diffusers_controlnet_image(
        tiny_parts, controlnet_dirs, control_images, control_guidance_start=[0.0, 0.25],
        control_guidance_end=[0.5, 1.0],
    )
    got = ours(tiny_parts, [f"{controlnet_dirs[0]}={control_images[0]}:1:0:0.5",
                            f"{controlnet_dirs[1]}={control_images[1]}:1:0.25:1"])
    assert np.abs(got - expected).max() <= 1
    always = ours(tiny_parts, [f"{net}={image}" for net, image in zip(controlnet_dirs, control_images, strict=True)])
    assert np.abs(got - always).max() > 2


def test_controlnet_more_important_is_diffusers_guess_mode_with_the_extensions_soft_weights(
    tiny_parts, controlnet_dirs, control_images, monkeypatch
) -> None:
    """A1111's extension zeroes the unconditional half's residuals (cfg injection) as guess mode does, but
    weighs the 13 residuals weight * 0.825^(12-i) where diffusers uses logspace(-1, 0): with diffusers' weights
    put in, the two are the same computation."""
    import torch

    assert soft_scales(1.0, 13) == [0.825 ** float(12 - i) for i in range(13)]
    expected = diffusers_controlnet_image(
        tiny_parts, controlnet_dirs[:1], control_images[:1], guess_mode=True, controlnet_conditioning_scale=0.9
    )
    monkeypatch.setattr(
        controlnet_plugin, "soft_scales", lambda weight, count: list(torch.logspace(-1, 0, count) * weight)
    )
    got = ours(tiny_parts, [f"{controlnet_dirs[0]}={control_images[0]}:0.9:control"])
    assert np.abs(got - expected).max() <= 1
    monkeypatch.undo()
    soft = ours(tiny_parts, [f"{controlnet_dirs[0]}={control_images[0]}:0.9:prompt"])
    assert np.abs(soft - got).max() > 0 and np.abs(soft - ours(tiny_parts, [])).max() > 2


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("canny=edges.png", ControlUnit("canny", "edges.png")),
        ("canny=edges.png:0.8", ControlUnit("canny", "edges.png", 0.8)),
        ("a/b=C:\\maps\\e.png:0.5:0.1:0.9:prompt", ControlUnit("a/b", "C:\\maps\\e.png", 0.5, 0.1, 0.9, "prompt")),
        ("canny=e.png:control", ControlUnit("canny", "e.png", mode="control")),
        ("canny=e.png:0.5:fill:control", ControlUnit("canny", "e.png", 0.5, mode="control", resize="fill")),
        ("canny=e.png:resize", ControlUnit("canny", "e.png", resize="resize")),
        ("lineart=scan.png:0.7:invert:fill", ControlUnit("lineart", "scan.png", 0.7, resize="fill", module="invert")),
    ],
)
def test_the_spelling_of_control(text: str, unit: ControlUnit) -> None:
    assert parse_control(text) == unit


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("edges.png", "joined by '='"),
        ("canny=e.png:11", "weight must be from 0 to 10"),
        ("canny=e.png:1:0.6:0.5", "0 <= start < end <= 1"),
        ("canny=e.png:1:0:1:0.5", "at most three numbers"),
        ("canny=e.png:1:0:1:0.5:prompt", "at most three numbers"),
    ],
)
def test_bad_spellings_name_the_value_and_the_form(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        parse_control(text)
    assert text in str(caught.value) and "MODEL=IMAGE" in str(caught.value)


def test_the_resize_modes_fit_the_image_as_a1111s_extension_does() -> None:
    """A 40x20 image (left half red, right half blue, a green border row) into 20x20."""
    from PIL import Image

    from sdgen.engine.plugins.control_maps import fit_control_image

    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20, 0] = 255
    array[:, 20:, 2] = 255
    image = Image.fromarray(array)
    stretched = np.asarray(fit_control_image(image, 20, 20, "resize"))
    assert stretched.shape == (20, 20, 3) and stretched[0, 0, 0] == 255 and stretched[0, -1, 2] == 255
    cropped = np.asarray(fit_control_image(image, 20, 20, "crop"))  # the middle 20 columns: half red, half blue
    assert cropped.shape == (20, 20, 3) and (cropped[:, :10, 0] == 255).all() and (cropped[:, 10:, 2] == 255).all()
    filled = np.asarray(fit_control_image(image, 20, 20, "fill"))  # 20x10 in the middle, the rest the border's median
    assert filled.shape == (20, 20, 3) and (filled[5:15, :10, 0] == 255).all() and (filled[5:15, 10:, 2] == 255).all()
    median = np.median(np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]]), axis=0)
    assert (filled[:5] == median.astype(np.uint8)).all() and (filled[15:] == median.astype(np.uint8)).all()


def test_the_invert_preprocessor_and_an_inverted_map_steer_alike(tiny_parts, controlnet_dirs, control_images, tmp_path):
    from PIL import Image

    from sdgen.engine.plugins.control_maps import preprocess

    drawing = Image.open(control_images[1]).convert("RGB")
    inverted = preprocess(drawing, "invert")
    assert np.array_equal(np.asarray(inverted), 255 - np.asarray(drawing))
    inverted.save(tmp_path / "inverted.png")
    by_module = ours(tiny_parts, [f"{controlnet_dirs[0]}={control_images[1]}:invert"])
    by_map = ours(tiny_parts, [f"{controlnet_dirs[0]}={tmp_path / 'inverted.png'}"])
    assert np.array_equal(by_module, by_map)


def test_a_short_name_finds_the_file_in_control_dir_and_pickles_are_refused(tmp_path) -> None:
    from sdgen.models.controlnet import controlnet_name, find_controlnet

    (tmp_path / "control_v11p_sd15_canny.safetensors").write_bytes(b"x")
    (tmp_path / "control_v11f1p_sd15_depth.pth").write_bytes(b"x")
    found = find_controlnet("canny", str(tmp_path))
    assert found == str(tmp_path / "control_v11p_sd15_canny.safetensors")
    assert controlnet_name(found) == "control_v11p_sd15_canny"
    assert find_controlnet("lllyasviel/control_v11p_sd15_canny") == "lllyasviel/control_v11p_sd15_canny"
    with pytest.raises(InvalidRequestError, match="sdgen convert"):
        find_controlnet(str(tmp_path / "control_v11f1p_sd15_depth.pth"))
    with pytest.raises(InvalidRequestError, match="no such file"):
        find_controlnet("nothing-here", str(tmp_path))


def test_bad_controls_exit_2_before_loading(tiny_model_dir, controlnet_dirs, control_images, tmp_path) -> None:
    for control, message in [
        (f"{controlnet_dirs[0]}={tmp_path / 'missing.png'}", "no such file"),
        (f"{tmp_path / 'none'}={control_images[0]}", "no such file or folder"),
        (f"{controlnet_dirs[0]}={control_images[0]}:1:0.7:0.2", "start < end"),
    ]:
        done = run_cli(["a fox", "-m", str(tiny_model_dir), "--control", control, "-o", str(tmp_path / "x.png")])
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "--control" in lines[0] and message in lines[0], lines


def test_the_command_line_records_and_replays_a_controlnet(
    tiny_model_dir, controlnet_dirs, control_images, tmp_path
) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from sdgen.cli import app

    def run(args: list[str]) -> None:  # in this process: the record and the replay, not the start-up, are tested
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output

    control = f"{controlnet_dirs[0]}={control_images[0]}:0.6:0:0.75:prompt"
    common = ["--device", "cpu", "--dtype", "float32", "--steps", "3", "-W", str(SIZE), "-H", str(SIZE)]
    first = tmp_path / "first.png"
    run(["a fox", "-m", str(tiny_model_dir), "-s", "5", "--control", control, "-o", str(first), *common])
    with Image.open(first) as image:
        record = json.loads(image.info["sdgen"])
        parameters = image.info["parameters"]
    assert record["control"] == [control]
    assert (
        'ControlNet 0: "Module: none, Model: tiny-controlnet-0, Weight: 0.6, Resize Mode: Crop and Resize, '
        'Guidance Start: 0.0, Guidance End: 0.75, Control Mode: My prompt is more important"'
    ) in parameters
    again = tmp_path / "again.png"
    run(["--from", str(first), "-o", str(again)])
    assert np.array_equal(pixels(Image.open(first)), pixels(Image.open(again)))
    plain = tmp_path / "plain.png"
    run(["a fox", "-m", str(tiny_model_dir), "-s", "5", "-o", str(plain), *common])
    assert not np.array_equal(pixels(Image.open(first)), pixels(Image.open(plain)))


def test_deepcache_is_refused_with_a_controlnet(controlnet_dirs, control_images) -> None:
    from sdgen.engine.checking import check_request
    from sdgen.engine.request import ModelSpec

    bad = request(controls=(f"{controlnet_dirs[0]}={control_images[0]}",), cache_interval=2)
    with pytest.raises(InvalidRequestError, match="cache-interval"):
        check_request(bad, ModelSpec().checked())


def test_a_controlnet_in_a1111s_single_file_layout_equals_the_same_weights_as_a_folder(
    tiny_parts, controlnet_dirs, control_images, tmp_path
) -> None:
    from sdgen.testing.tiny_controlnet import save_tiny_controlnet_file

    single = save_tiny_controlnet_file(tiny_parts.unet, tmp_path / "control_v11p_sd15_tiny.safetensors", seed=0)
    tiny_parts.plugins.pop("controlnet", None)
    folder = ours(tiny_parts, [f"{controlnet_dirs[0]}={control_images[0]}"])
    by_name = ours(tiny_parts, [f"tiny={control_images[0]}"], control_dir=str(tmp_path))
    assert np.array_equal(folder, by_name)
    assert set(tiny_parts.plugins["controlnet"]) == {str(controlnet_dirs[0]), str(single)}, "each loaded once"


@pytest.mark.parametrize("scheduler", ["euler-a", "heun"])
def test_image_to_image_with_a_controlnet_matches_diffusers_controlnet_img2img_pipeline(
    tiny_parts, controlnet_dirs, control_images, scheduler: str
) -> None:
    """Heun calls the U-Net twice a step: start and end count the steps as diffusers does."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline
    from PIL import Image

    y, x = np.mgrid[0:SIZE, 0:SIZE]  # test_pipeline's init image: a gradient with a disc
    disc = ((x - 32) ** 2 + (y - 32) ** 2 < 300) * 200 + 30
    init_image = Image.fromarray(np.stack([x * 4, y * 4, disc], axis=-1).clip(0, 255).astype(np.uint8))

    base = reference_pipeline(tiny_parts, scheduler)
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        **{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        controlnet=ControlNetModel.from_pretrained(controlnet_dirs[0]).eval(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        PROMPT, image=init_image, control_image=Image.open(control_images[0]).convert("RGB"), strength=0.6,
        num_inference_steps=5, controlnet_conditioning_scale=0.8, control_guidance_end=0.6,
        generator=torch.Generator("cpu").manual_seed(SEED),
    ).images[0]
    [result] = generate(
        request(scheduler=scheduler, seed=SEED, init_image=init_image, strength=0.6, num_inference_steps=5,
                width=None, height=None, controls=(f"{controlnet_dirs[0]}={control_images[0]}:0.8:0:0.6",)),
        tiny_parts,
    )
    assert np.abs(pixels(result.image) - pixels(expected)).max() <= 1


def test_the_hires_pass_steers_with_the_control_image_at_its_size(tiny_parts, controlnet_dirs, control_images) -> None:
    control = (f"{controlnet_dirs[0]}={control_images[0]}",)
    [steered] = generate(request(hires_scale=1.5, hires_steps=2, controls=control), tiny_parts)
    [plain] = generate(request(hires_scale=1.5, hires_steps=2), tiny_parts)
    assert steered.image.size == plain.image.size == (96, 96)
    assert np.abs(pixels(steered.image) - pixels(plain.image)).max() > 2


def test_each_part_of_an_and_prompt_gets_its_own_residuals(tiny_parts, controlnet_dirs, control_images) -> None:
    """ControlNet sits below AND's combination: it runs on [unconditional, every part] (as A1111's extension runs
    on the whole batch), also in the mode that leaves the unconditional rows without residuals."""
    composed = "a red fox AND a snowy forest :0.7"
    for mode in ("balanced", "control"):
        control = (f"{controlnet_dirs[0]}={control_images[0]}:{mode}",)
        [steered] = generate(request(prompt=composed, seed=SEED, controls=control), tiny_parts)
        [plain] = generate(request(prompt=composed, seed=SEED), tiny_parts)
        assert np.abs(pixels(steered.image) - pixels(plain.image)).max() > 2


def test_inpainting_with_a_controlnet_matches_diffusers_controlnet_inpaint_pipeline(
    tiny_parts, controlnet_dirs, control_images, tmp_path
) -> None:
    """A standard (4-channel) model: diffusers' pipeline, then A1111's paste of the init image outside the mask,
    as tests/test_inpaint.py compares plain inpainting."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline
    from PIL import Image

    rng = np.random.default_rng(3)
    init = Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8))
    mask_array = np.zeros((SIZE, SIZE), np.uint8)
    mask_array[16:48, 20:44] = 255
    mask = Image.fromarray(mask_array)
    init.save(tmp_path / "init.png")
    mask.save(tmp_path / "mask.png")
    base = reference_pipeline(tiny_parts, "euler-a")
    pipe = StableDiffusionControlNetInpaintPipeline(
        **{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        controlnet=ControlNetModel.from_pretrained(controlnet_dirs[0]).eval(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        PROMPT, image=init, mask_image=mask, control_image=Image.open(control_images[0]).convert("RGB"),
        height=SIZE, width=SIZE, strength=0.75, num_inference_steps=STEPS, controlnet_conditioning_scale=0.6,
        generator=torch.Generator("cpu").manual_seed(SEED),
    ).images[0]  # this pipeline's default weight is 0.5, the others' 1
    expected = Image.composite(out, init, mask)
    [result] = generate(
        request(scheduler="euler-a", seed=SEED, init_image=str(tmp_path / "init.png"), mask=str(tmp_path / "mask.png"),
                mask_blur=0, strength=0.75, controls=(f"{controlnet_dirs[0]}={control_images[0]}:0.6",)),
        tiny_parts,
    )
    assert np.abs(pixels(result.image) - pixels(expected)).max() <= 1


def test_a_batch_line_steers_like_the_command_and_shares_the_loaded_controlnet(
    tiny_model_dir, controlnet_dirs, control_images, tmp_path, monkeypatch
) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    import sdgen.models.controlnet
    from sdgen.cli import app

    loads: list[str] = []
    load = sdgen.models.controlnet.load_controlnet
    def counted(source: str, **kwargs):
        loads.append(source)
        return load(source, **kwargs)

    monkeypatch.setattr(sdgen.models.controlnet, "load_controlnet", counted)
    runner = CliRunner()
    control = f"{controlnet_dirs[0]}={control_images[0]}:0.7"
    lines = [{"prompt": "a fox", "seed": 3, "control": [control]}, {"prompt": "a fox", "seed": 4, "control": [control]}]
    source = tmp_path / "lines.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    common = ["--model", str(tiny_model_dir), "--steps", "2", "--device", "cpu", "--dtype", "float32"]
    result = runner.invoke(app, ["batch", str(source), *common, "-o", f"{tmp_path}/batch/"])
    assert result.exit_code == 0, result.output
    made = sorted((tmp_path / "batch").glob("*.png"))
    assert len(made) == 2 and loads == [str(controlnet_dirs[0])], "loaded once for both lines"
    one = tmp_path / "one.png"
    single = runner.invoke(app, ["a fox", *common, "--seed", "3", "--control", control, "-o", str(one)])
    assert single.exit_code == 0, single.output
    assert np.array_equal(pixels(Image.open(made[0])), pixels(Image.open(one)))


def test_the_canny_preprocessor_is_opencvs_canny_on_the_image(control_images, tmp_path, monkeypatch) -> None:
    import cv2
    from PIL import Image

    from sdgen.engine.plugins import control_maps

    photo = Image.open(control_images[0]).convert("RGB")
    edges = cv2.Canny(np.asarray(photo), 100, 200)
    made = np.asarray(control_maps.preprocess(photo, "canny"))
    assert made.shape == (SIZE, SIZE, 3) and all(np.array_equal(made[..., c], edges) for c in range(3))
    disc = np.asarray(control_maps.preprocess(Image.open(control_images[1]).convert("RGB"), "canny"))
    assert disc.max() == 255 and disc.min() == 0, "the disc's edge is found"
    monkeypatch.setattr(controlnet_plugin, "missing_library", lambda module: "the canny preprocessor needs OpenCV")
    with pytest.raises(InvalidRequestError, match="needs OpenCV"):
        controlnet_plugin._check(request(controls=(f"{tmp_path}={control_images[0]}:canny",)))
