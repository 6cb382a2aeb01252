"""ControlNet's preprocessors (sdgen/engine/plugins/control_maps.py, control_builtins.py, control_detectors.py)
on made images: canny against OpenCV's own Canny, threshold and scribble_xdog, tile_resample, shuffle against
controlnet_aux's ContentShuffleDetector with the extension's NumPy seed, the inpaint hint's -1 pixels (and the
inpaint ControlNet against diffusers' StableDiffusionControlNetInpaintPipeline), the processor resolution and
pixel perfect sizes, the KEY=VALUE spelling and its infotext fields, `sdgen control detect`, a tiny random
PiDiNet from a fake lllyasviel/Annotators cache end to end, and the missing-weights error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sdgen.engine.pipeline import generate
from sdgen.engine.plugins import controlnet as controlnet_plugin
from sdgen.engine.plugins.control_maps import (
    MapSettings,
    control_hint,
    make_control_map,
    pixel_perfect_resolution,
)
from sdgen.engine.plugins.controlnet import ControlUnit, parse_control
from sdgen.errors import InvalidRequestError

from .conftest import SIZE, put_in_hub_cache
from .test_pipeline import PROMPT, pixels, reference_pipeline, request

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def tiny_controlnet(tiny_parts, tmp_path_factory) -> Path:
    from sdgen.testing.tiny_controlnet import save_tiny_controlnet

    return save_tiny_controlnet(tiny_parts.unet, tmp_path_factory.mktemp("controlnet") / "tiny-controlnet")


def photo(height: int = 64, width: int = 128):
    """A made picture: a gradient, a dark disc and a bright bar, so every filter finds something."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)
    array[((x - width // 3) ** 2 + (y - height // 2) ** 2) < (height // 4) ** 2] = 20
    array[height // 4: height // 4 + 6, width // 2:] = 240
    array[height // 2:, width - width // 4:] = 100
    array[height // 2 + 4: height - 4, width - width // 4 + 4: width - 4] = 125  # a faint edge: found at low thresholds
    return Image.fromarray(array)


def test_canny_is_opencvs_canny_with_its_thresholds_and_at_the_processor_resolution() -> None:
    image = photo()
    made = np.asarray(make_control_map(image, MapSettings("canny", threshold_a=50, threshold_b=80)))
    edges = cv2.Canny(np.asarray(image), 50, 80)
    assert made.shape == (64, 128, 3) and all(np.array_equal(made[..., c], edges) for c in range(3))
    assert edges.max() == 255 and not np.array_equal(edges, cv2.Canny(np.asarray(image), 100, 200))
    # res=128 doubles the 64-pixel short side (OpenCV cubic, as the extension); 128x256 needs no padding
    doubled = np.asarray(make_control_map(image, MapSettings("canny", 128, 50, 80)))
    enlarged = cv2.resize(np.asarray(image), (256, 128), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(doubled[..., 0], cv2.Canny(enlarged, 50, 80))


def test_threshold_and_scribble_xdog_binarize() -> None:
    image = photo()
    pixels_in = np.asarray(image)
    made = np.asarray(make_control_map(image, MapSettings("threshold", threshold_a=100)))
    assert np.array_equal(made[..., 0] == 255, pixels_in.min(axis=2) > 100) and set(np.unique(made)) == {0, 255}
    strokes = np.asarray(make_control_map(image, MapSettings("scribble_xdog")))
    assert set(np.unique(strokes)) == {0, 255}, "white strokes where the disc and the bar end"
    flat = np.asarray(make_control_map(photo().point(lambda _: 128), MapSettings("scribble_xdog")))
    assert flat.max() == 0


def test_tile_resample_shrinks_by_its_rate() -> None:
    image = photo()
    assert make_control_map(image, MapSettings("tile_resample", threshold_a=2)).size == (64, 32)
    assert make_control_map(image, MapSettings("tile_resample", threshold_a=1)).size == (128, 64)  # below 1.1


def test_shuffle_is_the_extensions_content_shuffle_seeded_from_the_image_seed() -> None:
    image = photo(64, 64)
    first = np.asarray(make_control_map(image, MapSettings("shuffle"), seed=14))
    assert np.array_equal(first, np.asarray(make_control_map(image, MapSettings("shuffle"), seed=14)))
    assert not np.array_equal(first, np.asarray(make_control_map(image, MapSettings("shuffle"), seed=15)))
    # a run seeds it as the extension seeds NumPy: (seed + subseed) & 0xFFFFFFFF, the subseed the seed without one
    unit = ControlUnit("m", "i.png", module="shuffle")
    run = SimpleNamespace(width=64, height=64, seed=7, subseed=None, mask_pixels=None)
    assert np.array_equal(np.asarray(controlnet_plugin.control_map(image, unit, run)),
                          np.asarray(make_control_map(image, unit, seed=14)))
    pytest.importorskip("einops")
    from sdgen.engine.plugins.control_detectors import _submodule

    np.random.seed(14)  # what the extension does before its ContentShuffleDetector draws
    expected = _submodule("shuffle").ContentShuffleDetector()(image, detect_resolution=64, image_resolution=64,
                                                              output_type="np")
    assert np.array_equal(first, expected)


def inpaint_condition(image, mask) -> np.ndarray:
    """diffusers' make_inpaint_condition (its ControlNet inpaint example, not in the library): RGB in [0, 1],
    -1 where the mask is over 0.5."""
    array = np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
    array[np.asarray(mask.convert("L")).astype(np.float32) / 255.0 > 0.5] = -1.0
    return array


def made_mask():
    from PIL import Image

    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 20:44] = 255
    return Image.fromarray(mask)


def test_the_inpaint_hint_is_minus_one_where_the_mask_repaints() -> None:
    image, mask = photo(SIZE, SIZE), made_mask()
    made = make_control_map(image, MapSettings("inpaint_only"), mask=mask)
    assert made.mode == "RGBA"
    hint = control_hint(made, SIZE, SIZE, "crop", 2)[0].permute(1, 2, 0).numpy()
    assert np.abs(hint - inpaint_condition(image, mask)).max() < 1e-6 and (hint == -1).sum() == 32 * 24 * 3
    with pytest.raises(InvalidRequestError, match="needs the request's --mask"):
        make_control_map(image, MapSettings("inpaint"))
    with pytest.raises(InvalidRequestError, match="--init-image and --mask"):
        controlnet_plugin._check(request(controls=("m=i.png:inpaint",)))


def test_the_inpaint_preprocessor_matches_diffusers_inpaint_controlnet_pipeline(
    tiny_parts, tiny_controlnet, tmp_path
) -> None:
    """The inpaint ControlNet's input made by --control ...:inpaint equals diffusers' pipeline given
    make_inpaint_condition's tensor; then A1111's paste outside the mask, as tests/test_controlnet.py does."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline
    from PIL import Image

    controlnet = tiny_controlnet
    init, mask = photo(SIZE, SIZE), made_mask()
    init.save(tmp_path / "init.png")
    mask.save(tmp_path / "mask.png")
    base = reference_pipeline(tiny_parts, "euler-a")
    pipe = StableDiffusionControlNetInpaintPipeline(
        **{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        controlnet=ControlNetModel.from_pretrained(controlnet).eval(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    condition = torch.from_numpy(inpaint_condition(init, mask)).permute(2, 0, 1)[None]
    out = pipe(
        PROMPT, image=init, mask_image=mask, control_image=condition, height=SIZE, width=SIZE, strength=0.75,
        num_inference_steps=3, controlnet_conditioning_scale=1.0, generator=torch.Generator("cpu").manual_seed(7),
    ).images[0]
    expected = Image.composite(out, init, mask)
    asked = request(scheduler="euler-a", seed=7, init_image=str(tmp_path / "init.png"), num_inference_steps=3,
                    mask=str(tmp_path / "mask.png"), mask_blur=0, strength=0.75,
                    controls=(f"{controlnet}={tmp_path / 'init.png'}:inpaint_only",))
    [result] = generate(asked, tiny_parts)
    assert np.abs(pixels(result.image) - pixels(expected)).max() <= 1


def test_a_runs_map_is_made_with_the_units_settings(tiny_parts, tiny_controlnet, tmp_path) -> None:
    """--control ...:canny:low=50:high=80:pixel_perfect steers as the map make_control_map makes for the
    picture's size does, given as an image."""
    photo(96, 128).save(tmp_path / "photo.png")
    made = make_control_map(photo(96, 128), MapSettings("canny", -1, 50, 80, True), size=(SIZE, SIZE))
    assert made.size == (85, 64)  # pixel perfect: the 96-pixel short side made 64, the picture's
    made.save(tmp_path / "edges.png")
    settings = f"{tiny_controlnet}={tmp_path / 'photo.png'}:canny:low=50:high=80:pixel_perfect"
    by_settings = request(seed=3, num_inference_steps=2, controls=(settings,))
    by_map = request(seed=3, num_inference_steps=2, controls=(f"{tiny_controlnet}={tmp_path / 'edges.png'}",))
    [steered], [given] = generate(by_settings, tiny_parts), generate(by_map, tiny_parts)
    assert np.array_equal(pixels(steered.image), pixels(given.image))


def test_processor_resolution_and_pixel_perfect_sizes() -> None:
    image = photo(96, 128)  # short side 96
    assert make_control_map(image, MapSettings("canny", 192)).size == (256, 192)
    assert make_control_map(image, MapSettings("threshold", 100)).size == (133, 100)  # rounded, the pad cut off
    # pixel perfect: the short side at the scale that makes the fitted map land on the picture's pixels
    assert pixel_perfect_resolution((128, 96), 768, 512, "crop") == 576  # the larger scale, 768/128
    assert pixel_perfect_resolution((128, 96), 768, 512, "fill") == 512  # the smaller, 512/96
    perfect = MapSettings("canny", 100, pixel_perfect=True)  # pixel perfect wins over res, as in the extension
    assert make_control_map(image, perfect, size=(768, 512)).size == (768, 576)
    assert make_control_map(image, MapSettings("invert", pixel_perfect=True), size=(768, 512)).size == (128, 96)


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("canny=photo.jpg:0.8:canny:low=50:high=150:res=512",
         ControlUnit("canny", "photo.jpg", 0.8, module="canny", processor_res=512, threshold_a=50, threshold_b=150)),
        ("c=C:\\p.png:0.5:0:0.6:prompt:fill:threshold:a=90:pixel_perfect",
         ControlUnit("c", "C:\\p.png", 0.5, 0, 0.6, "prompt", "fill", "threshold", threshold_a=90, pixel_perfect=True)),
        ("s=p.png:res=256:softedge_hed:pixel_perfect=no", ControlUnit("s", "p.png", module="hed", processor_res=256)),
        ("t=p.png:tile:a=2", ControlUnit("t", "p.png", module="tile_resample", threshold_a=2)),
    ],
)
def test_the_settings_spelling_after_the_image(text: str, unit: ControlUnit) -> None:
    assert parse_control(text) == unit
    assert parse_control(controlnet_plugin.spell_control(unit)) == unit


def test_a_clients_settings_are_kept_where_the_preprocessor_has_them() -> None:
    from sdgen.engine.plugins.control_maps import relevant_settings

    # webuiapi's ControlNetUnit sends processor_res 64 and both thresholds 64 to every module
    assert relevant_settings("none", 64, 64, 64) == {"processor_res": -1, "threshold_a": -1, "threshold_b": -1}
    assert relevant_settings("canny", 512, 50, 150) == {"processor_res": 512, "threshold_a": 50, "threshold_b": 150}
    assert relevant_settings("tile_resample", 512, 2, 64) == {"processor_res": -1, "threshold_a": 2, "threshold_b": -1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("c=p.png:canny:res=10", "res=10: from 64 to 2048"),
        ("c=p.png:canny:res=big", "res is a whole number"),
        ("c=p.png:canny:low=300", "Low Threshold is from 1 to 255"),
        ("c=p.png:low=50", "the none preprocessor has no threshold A"),
        ("c=p.png:invert:res=512", "works on the image as it is"),
        ("c=p.png:canny:low=5:a=6", "low is given twice"),
        ("c=p.png:canny:pixel_perfect=maybe", "true or false"),
    ],
)
def test_bad_settings_name_the_value(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        parse_control(text)
    assert text in str(caught.value)


def test_the_infotext_carries_the_extensions_preprocessor_fields() -> None:
    asked = request(controls=("/m/control_v11p_sd15_canny=p.png:0.8:canny:low=50:res=512:pixel_perfect",))
    [(name, value)] = controlnet_plugin._a1111_fields(asked)
    assert name == "ControlNet 0" and value == (
        "Module: canny, Model: control_v11p_sd15_canny, Weight: 0.8, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 50.0, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, "
        "Pixel Perfect: True, Control Mode: Balanced"
    )


def test_control_detect_writes_the_map_alone(tmp_path, no_weights_load) -> None:
    from typer.testing import CliRunner

    from sdgen.cli import app

    photo().save(tmp_path / "photo.png")
    runner = CliRunner()
    out = tmp_path / "edges.png"
    done = runner.invoke(app, ["control", "detect", str(tmp_path / "photo.png"), "-p", "canny", "--low", "50",
                               "--high", "150", "--res", "128", "-o", str(out)])
    assert done.exit_code == 0, done.output
    from PIL import Image

    expected = make_control_map(photo(), MapSettings("canny", 128, 50, 150))
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    for args, message in (
        (["-p", "sobel"], "Invalid --preprocessor 'sobel': use one of none, invert, canny"),
        (["-p", "canny", "--low", "0"], "low=0"),
        (["-p", "hed"], "huggingface-cli download lllyasviel/Annotators ControlNetHED.pth"),
    ):
        refused = runner.invoke(app, ["control", "detect", str(tmp_path / "photo.png"), *args])
        assert refused.exit_code == 2 and message in refused.output, refused.output


def test_a_missing_detector_or_library_is_one_line_before_anything_loads(tmp_path, monkeypatch, no_weights_load):
    import importlib.util

    photo().save(tmp_path / "photo.png")
    image = tmp_path / "photo.png"
    if importlib.util.find_spec("controlnet_aux") is not None and importlib.util.find_spec("einops") is not None:
        with pytest.raises(InvalidRequestError, match="huggingface-cli download lllyasviel/Annotators "
                           "mlsd_large_512_fp32.pth") as caught:
            controlnet_plugin._check(request(controls=(f"m={image}:mlsd:low=0.2",)))
        assert "\n" not in str(caught.value) and "mlsd preprocessor needs" in str(caught.value)
    with pytest.raises(InvalidRequestError, match="seg_ofade20k preprocessor is not available"):
        controlnet_plugin._check(request(controls=(f"m={image}:seg_ofade20k",)))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "controlnet_aux" else
                        find_spec(name, *a))
    with pytest.raises(InvalidRequestError, match=r"needs controlnet_aux: pip install 'sdgen\[detect\]'"):
        controlnet_plugin._check(request(controls=(f"m={image}:lineart",)))


def test_a_tiny_random_pidinet_from_the_annotators_cache_makes_the_map(tmp_path) -> None:
    """A random PiDiNet saved as lllyasviel/Annotators' table5_pidinet.pth in the (test) Hugging Face cache:
    found there, loaded through controlnet_aux without its package __init__, the map equal to its detector's."""
    import importlib.util

    import torch

    if importlib.util.find_spec("controlnet_aux") is None or importlib.util.find_spec("einops") is None:
        pytest.skip("controlnet_aux is not installed: pip install 'sdgen[detect]' && pip install --no-deps "
                    "controlnet_aux==0.0.10")
    from sdgen.engine.plugins.control_detectors import _submodule
    from sdgen.engine.plugins.control_maps import check_map_settings

    detector = _submodule("pidi")
    torch.manual_seed(0)
    weights = {f"module.{key}": value for key, value in detector.pidinet().state_dict().items()}
    folder = tmp_path / "annotators"
    folder.mkdir()
    torch.save({"state_dict": weights}, folder / "table5_pidinet.pth")
    put_in_hub_cache(folder, "lllyasviel/Annotators", "a" * 40)
    check_map_settings(parse_control("m=p.png:softedge_pidinet:res=64"))
    image = photo(64, 64)
    made = make_control_map(image, MapSettings("pidinet", 64))
    expected = detector.PidiNetDetector.from_pretrained(str(folder))(image, detect_resolution=64, image_resolution=64)
    assert made.size == (64, 64) and np.array_equal(np.asarray(made), np.asarray(expected.convert("RGB")))


def test_a_thin_image_is_refused_before_a_preprocessor_scales_it_past_the_pixel_limit() -> None:
    from sdgen.engine.plugins.control_builtins import check_scaled_size

    check_scaled_size(768, 512, 512)  # an ordinary picture
    with pytest.raises(InvalidRequestError, match="16384x1 control image at processor resolution 512"):
        check_scaled_size(16384, 1, 512)  # 8 million pixels wide once its short side is 512
