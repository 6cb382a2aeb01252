"""The server's A1111 ControlNet extension API (sdgen/serve/controlnet.py) on the tiny model, driven by the real
`webuiapi` client: its ControlNetUnit requests make the in-process image of the same --control, the listing and
detect endpoints answer as the extension does, and bad units get a 422 naming the field (never a 500)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import webuiapi
from PIL import Image, ImageOps
from safetensors.torch import save_file

from sdgen.engine.pipeline import generate
from sdgen.engine.plugins.control_maps import MapSettings, make_control_map
from sdgen.engine.plugins.controlnet import SENT_IMAGE, ControlUnit, parse_control
from sdgen.engine.request import GenerationRequest
from sdgen.record.metadata import SDGEN_KEY
from sdgen.serve import controlnet as served
from sdgen.serve.app import create_app
from sdgen.serve.server import serving

from .conftest import put_in_hub_cache
from .serving import make_engine

FOLDER_NAME = "control_v11p_sd15_tiny"  # a diffusers folder in --control-dir
FILE_NAME = "control_tiny_seg"  # a single file in A1111's layout there


def old_hash(path: Path) -> str:
    """A1111's sd_models.model_hash, which the extension's model_list shows: 64 KiB from 1 MiB on."""
    return hashlib.sha256(path.read_bytes()[0x100000:0x110000]).hexdigest()[:8]


@pytest.fixture(scope="module")
def control_dir(tiny_parts, tmp_path_factory) -> Path:
    from sdgen.testing.tiny_controlnet import save_tiny_controlnet, save_tiny_controlnet_file

    folder = tmp_path_factory.mktemp("ControlNet")
    save_tiny_controlnet(tiny_parts.unet, folder / FOLDER_NAME, seed=0)
    save_tiny_controlnet_file(tiny_parts.unet, folder / f"{FILE_NAME}.safetensors", seed=1)
    save_file({"weight": torch.zeros(2)}, str(folder / "control_not_a_controlnet.safetensors"))  # not listed
    (folder / "control_v11p_sd15_pickle.pth").write_bytes(b"not opened")  # not listed
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    """A control map that is not the picture's size (48x80: fitted by the resize mode), a 64x64 init image, and
    64x64 smooth noise (whose Canny edges depend on the thresholds)."""
    root = tmp_path_factory.mktemp("control-pictures")
    y, x = np.mgrid[0:80, 0:48]
    disc = np.repeat((((x - 20) ** 2 + (y - 44) ** 2) < 300)[..., None] * 255, 3, axis=-1).astype(np.uint8)
    y, x = np.mgrid[0:64, 0:64]
    gradient = np.stack([x * 4, y * 4, 255 - x * 2], axis=-1).clip(0, 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    paths = {"map": root / "map.png", "init": root / "init.png", "noise": root / "noise.png"}
    Image.fromarray(disc).save(paths["map"])
    Image.fromarray(gradient).save(paths["init"])
    Image.fromarray(noise).resize((64, 64), Image.Resampling.BILINEAR).save(paths["noise"])
    return paths


@pytest.fixture(scope="module")
def server(tiny_model_dir, hf_home, control_dir):
    engine = make_engine(tiny_model_dir, control_dir=str(control_dir))
    with serving(create_app(engine), engine) as url:
        yield url
    engine.close()


@pytest.fixture
def api(server) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=f"{server}/sdapi/v1", sampler="Euler a", steps=4)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def in_process(parts, controls: tuple[str, ...], **values) -> np.ndarray:
    asked = GenerationRequest(prompt="a red fox", negative_prompt="blur", seed=7, num_inference_steps=4,
                              scheduler="euler-a", guidance_scale=7.5, controls=controls, **values)
    [result] = generate(asked, parts)
    return pixels(result.image)


def test_a_webuiapi_controlnet_unit_request_is_the_in_process_image_of_the_same_control(
    api, tiny_parts, control_dir, pictures
) -> None:
    title = f"{FOLDER_NAME} [{old_hash(control_dir / FOLDER_NAME / 'diffusion_pytorch_model.safetensors')}]"
    units = [
        webuiapi.ControlNetUnit(image=Image.open(pictures["map"]), model=title,
                                weight=0.8, guidance_end=0.75, control_mode=1, resize_mode="Crop and Resize",
                                pixel_perfect=True, processor_res=256),
        webuiapi.ControlNetUnit(image=Image.open(pictures["map"]), model="no such model", enabled=False),
    ]
    # a fresh alwayson_scripts: webuiapi adds the units to its shared default dict, and every later call sent them
    result = api.txt2img(prompt="a red fox", negative_prompt="blur", seed=7, cfg_scale=7.5, width=64, height=64,
                         controlnet_units=units, alwayson_scripts={})
    expected = in_process(tiny_parts, (f"{control_dir / FOLDER_NAME}={pictures['map']}:0.8:0:0.75:prompt:crop",),
                          width=64, height=64)
    assert np.array_equal(pixels(result.image), expected)
    infotext = result.info["infotexts"][0]
    assert (f'ControlNet 0: "Module: none, Model: {FOLDER_NAME}, Weight: 0.8, Resize Mode: Crop and Resize, '
            'Guidance Start: 0.0, Guidance End: 0.75, Control Mode: My prompt is more important"') in infotext
    assert "ControlNet 1" not in infotext  # the disabled unit is skipped
    record = json.loads(result.image.info[SDGEN_KEY])
    # pixel_perfect and processor_res left out: the none preprocessor has neither
    assert record["control"] == [f"{control_dir / FOLDER_NAME}={SENT_IMAGE}:0.8:0:0.75:prompt:crop:none"]


def test_a_canny_units_thresholds_make_the_image_of_the_same_control_settings(
    api, tiny_parts, control_dir, pictures
) -> None:
    """threshold_a/b and processor_res reach the map as low=/high=/res= do on the command line (and other
    thresholds make another picture); webuiapi's defaults (512, 64, 64) sent to invert, which has none of them,
    are left out rather than refused."""
    pytest.importorskip("cv2")
    units = [webuiapi.ControlNetUnit(image=Image.open(pictures["noise"]), model=FILE_NAME, module="canny",
                                     threshold_a=30, threshold_b=90, processor_res=128, weight=0.9),
             webuiapi.ControlNetUnit(image=Image.open(pictures["map"]), model=FILE_NAME, module="invert", weight=0.5)]
    result = api.txt2img(prompt="a red fox", negative_prompt="blur", seed=7, cfg_scale=7.5, width=64, height=64,
                         controlnet_units=units, alwayson_scripts={})
    single = f"{control_dir / FILE_NAME}.safetensors"
    controls = [f"{single}={pictures['noise']}:0.9:fill:canny:low=30:high=90:res=128",  # webuiapi's resize_mode
                f"{single}={pictures['map']}:0.5:fill:invert"]
    assert np.array_equal(pixels(result.image), in_process(tiny_parts, tuple(controls), width=64, height=64))
    other_thresholds = (controls[0].replace(":low=30:high=90", ""), controls[1])  # canny's defaults, 100 and 200
    assert not np.array_equal(pixels(result.image), in_process(tiny_parts, other_thresholds, width=64, height=64))
    record = json.loads(result.image.info[SDGEN_KEY])
    assert record["control"] == [f"{single}={SENT_IMAGE}:0.9:0:1:balanced:fill:canny:res=128:low=30:high=90",
                                 f"{single}={SENT_IMAGE}:0.5:0:1:balanced:fill:invert"]
    assert [parse_control(text).threshold_a for text in record["control"]] == [30, -1]
    assert "Processor Res: 128, Threshold A: 30.0, Threshold B: 90.0" in result.info["infotexts"][0]


def test_img2img_units_by_number_and_label_use_the_init_image_when_they_send_none(
    server, tiny_parts, control_dir, pictures
) -> None:
    init = base64.b64encode(pictures["init"].read_bytes()).decode()
    unit = {"model": FILE_NAME, "module": "invert (from white bg & black line)", "image": "", "resize_mode": 0,
            "control_mode": 2, "guidance_start": 0.25, "low_vram": True}
    body = {"prompt": "a red fox", "negative_prompt": "blur", "seed": 7, "steps": 4, "sampler_name": "Euler a",
            "cfg_scale": 7.5, "init_images": [init], "denoising_strength": 0.6,
            "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    reply = requests.post(f"{server}/sdapi/v1/img2img", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    made = Image.open(io.BytesIO(base64.b64decode(reply.json()["images"][0])))
    control = f"{control_dir / FILE_NAME}.safetensors={pictures['init']}:1.0:0.25:1.0:control:resize:invert"
    assert np.array_equal(pixels(made), in_process(tiny_parts, (control,), init_image=str(pictures["init"]),
                                                   strength=0.6))


def test_version_models_and_modules_are_listed_as_the_extension_lists_them(api, control_dir) -> None:
    assert api.controlnet_version() == served.API_VERSION
    assert api.custom_get("controlnet/settings") == {"control_net_unit_count": served.MAX_UNITS}
    assert api.controlnet_model_list() == [
        f"{FILE_NAME} [{old_hash(control_dir / f'{FILE_NAME}.safetensors')}]",
        f"{FOLDER_NAME} [{old_hash(control_dir / FOLDER_NAME / 'diffusion_pytorch_model.safetensors')}]",
    ]
    modules = api.custom_get("controlnet/module_list")
    assert modules["module_list"][0] == "none" and {"invert", "canny"} <= set(modules["module_list"])
    assert set(modules["module_detail"]) == set(modules["module_list"])
    assert modules["module_detail"]["canny"]["sliders"] == [  # the extension's order: res, threshold A, B
        {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048},
        {"name": "Low Threshold", "value": 100, "min": 1, "max": 255},
        {"name": "High Threshold", "value": 200, "min": 1, "max": 255}]
    assert modules["module_detail"]["invert"]["sliders"] == []
    labels = api.custom_get("controlnet/module_list?alias_names=true")["module_list"]
    assert "invert (from white bg & black line)" in labels and "invert" not in labels
    assert requests.get(api.get_endpoint("controlnet/model_list?update=true", False), timeout=30).ok
    # as the extension finds `canny`: a name, else the shortest name holding the text
    single, settings = str(control_dir / f"{FILE_NAME}.safetensors"), {"control_dir": str(control_dir)}
    assert served.find_listed("CONTROL_TINY_SEG", settings, "m") == served.find_listed("tiny", settings, "m") == single


def test_detect_makes_the_preprocessors_maps(api, server, pictures) -> None:
    image = Image.open(pictures["init"]).convert("RGB")
    reply = api.controlnet_detect([image], module="invert")  # webuiapi sends controlnet_images
    assert reply.info == "Success"
    assert np.array_equal(pixels(reply.images[0]), pixels(ImageOps.invert(image)))
    pytest.importorskip("cv2")
    body = {"controlnet_module": "canny", "controlnet_input_images": [base64.b64encode(pictures["noise"].read_bytes())
                                                                      .decode()],
            "controlnet_processor_res": 128, "controlnet_threshold_a": 30, "controlnet_threshold_b": 90}
    reply = requests.post(f"{server}/controlnet/detect", json=body, timeout=60)
    made = Image.open(io.BytesIO(base64.b64decode(reply.json()["images"][0])))
    noise = Image.open(pictures["noise"])
    expected = make_control_map(noise, MapSettings("canny", 128, 30, 90))
    assert made.size == expected.size == (128, 128)
    assert np.array_equal(pixels(made), pixels(expected))
    assert not np.array_equal(pixels(expected), pixels(make_control_map(noise, MapSettings("canny", 128))))


WHERE = "alwayson_scripts.controlnet.args[0]"
PIXEL = base64.b64encode(b"\x89PNG").decode()  # decoded after the settings are checked


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"module": "depth_leres_nope"}, f"{WHERE}.module", "not one of sdgen's preprocessors"),
    ({"model": "control_v11p_sd15_nope [abcd1234]"}, f"{WHERE}.model", "not one of this server's ControlNets"),
    ({"model": "None"}, f"{WHERE}.model", "GET /controlnet/model_list"),
    ({"model": "../../etc/passwd"}, f"{WHERE}.model", "not one of this server's ControlNets"),
    ({"image": "not base64!"}, f"{WHERE}.image", "not valid base64"),
    ({"image": base64.b64encode(b"hello").decode()}, f"{WHERE}.image", "not an image"),
    ({"image": ""}, f"{WHERE}.image", "no image"),
    ({"image": {"image": "!!"}}, f"{WHERE}.image.image", "not valid base64"),
    ({"mask": "!!"}, f"{WHERE}.mask", "not valid base64"),
    ({"weight": 3}, f"{WHERE}.weight", "from 0 to 2"),
    ({"weight": "strong"}, f"{WHERE}.weight", "must be a number"),
    ({"threshold_a": 10**400}, f"{WHERE}.threshold_a", "must be from"),
    ({"module": "canny", "threshold_b": 300}, f"{WHERE}.threshold_b", "from 1 to 255"),
    ({"module": "canny", "processor_res": 4096}, f"{WHERE}.processor_res", "from 64 to 2048"),
    ({"pixel_perfect": "yes"}, f"{WHERE}.pixel_perfect", "true or false"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, f"{WHERE}.guidance_start", "not be after guidance_end"),
    ({"resize_mode": 7}, f"{WHERE}.resize_mode", "0 (Just Resize)"),
    ({"control_mode": "loud"}, f"{WHERE}.control_mode", "1 (My prompt is more important)"),
    ({"processor_res": [512]}, f"{WHERE}.processor_res", "must be a number"),
    ({"hr_option": "Low res only"}, f"{WHERE}.hr_option", "steer both passes"),
    ("a unit", WHERE, "a JSON object"),
])
def test_bad_units_are_a_422_naming_the_field(server, pictures, change, field: str, words: str) -> None:
    unit = {"model": FOLDER_NAME, "image": base64.b64encode(pictures["map"].read_bytes()).decode()}
    unit = {**unit, **change} if isinstance(change, dict) else change
    body = {"prompt": "p", "steps": 2, "width": 64, "height": 64, "alwayson_scripts": {"controlnet": {"args": [unit]}},
            "enable_hr": "hr_option" in change, "hr_scale": 1.5}
    reply = requests.post(f"{server}/sdapi/v1/txt2img", json=body, timeout=60)
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field and words in reply.json()["detail"], reply.json()


@pytest.mark.parametrize(("body", "field"), [
    ({"controlnet_module": "nope", "controlnet_input_images": ["x"]}, "controlnet_module"),
    ({"controlnet_module": "invert", "controlnet_input_images": []}, "controlnet_images"),
    ({"controlnet_module": "invert", "controlnet_input_images": ["!!"]}, "controlnet_input_images[0]"),
    ({"controlnet_module": "canny", "controlnet_images": [PIXEL], "controlnet_threshold_a": 0},
     "controlnet_threshold_a"),
    ({"controlnet_module": "inpaint", "controlnet_images": [PIXEL]}, "controlnet_masks"),
])
def test_bad_detect_bodies_are_a_422_naming_the_field(server, body, field: str) -> None:
    reply = requests.post(f"{server}/controlnet/detect", json=body, timeout=60)
    assert reply.status_code == 422 and reply.json()["field"] == field, reply.text


def test_a_hub_cache_controlnet_is_listed_by_its_id(tiny_parts, tmp_path, monkeypatch) -> None:
    from sdgen.testing.tiny_controlnet import save_tiny_controlnet

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    put_in_hub_cache(save_tiny_controlnet(tiny_parts.unet, tmp_path / "net"), "someone/control_tiny_hub", "a" * 40)
    settings = {"cache_dir": str(tmp_path / "hub")}
    weights = old_hash(tmp_path / "net" / "diffusion_pytorch_model.safetensors")
    assert [listed.title for listed in served.controlnets(settings)] == [f"someone/control_tiny_hub [{weights}]"]
    assert served.find_listed("control_tiny_hub [0123abcd]", settings, "model") == "someone/control_tiny_hub"


def test_a_unit_with_a_sent_image_hashes_and_records_without_a_path() -> None:
    image = Image.new("RGB", (8, 8))
    unit = ControlUnit("net", image, 0.5)
    assert hash(unit) == hash(ControlUnit("net", image.copy(), 0.5)) and unit == ControlUnit("net", image.copy(), 0.5)
    assert hash(unit) != hash(ControlUnit("net", image, 0.5, threshold_a=50))
    assert str(unit) == f"net={SENT_IMAGE}:0.5:0:1:balanced:crop:none"
    assert str(ControlUnit("net", "a.png", module="canny", threshold_b=90, pixel_perfect=True)) == (
        "net=a.png:1:0:1:balanced:crop:canny:high=90:pixel_perfect")
