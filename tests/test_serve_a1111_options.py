"""GET/POST /sdapi/v1/options as A1111 has them (issue 24): the full set with A1111's defaults, sdgen's values
for the keys it acts on, other keys kept and sent back, bad values refused; samples_format jpg and webp as
A1111 sends them; ENSD; a hires request with denoising_strength 0 (upscale only)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from sdgen.record.formats import EXIF_IFD, USER_COMMENT, read_image_text
from sdgen.serve.a1111_options import ACTED_ON, MAX_OTHER_KEYS, a1111_defaults
from sdgen.serve.app import create_app
from sdgen.serve.server import serving

from .serving import make_engine


@pytest.fixture(scope="module")
def server(tiny_model_dir, hf_home):
    engine = make_engine(tiny_model_dir)
    with serving(create_app(engine), engine) as url:
        yield url, engine
    engine.close()


@pytest.fixture
def api(server) -> webuiapi.WebUIApi:
    url, _ = server
    return webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", sampler="Euler a", steps=2)


def test_the_data_file_is_a1111s_option_set() -> None:
    defaults = a1111_defaults()
    assert len(defaults) > 200
    # a few of A1111's keys and defaults (modules/shared_options.py)
    assert defaults["samples_format"] == "png" and defaults["jpeg_quality"] == 80 and defaults["webp_lossless"] is False
    assert defaults["CLIP_stop_at_last_layers"] == 1 and defaults["eta_noise_seed_delta"] == 0
    assert defaults["randn_source"] == "GPU" and defaults["img2img_fix_steps"] is False
    assert defaults["quicksettings_list"] == ["sd_model_checkpoint"]
    assert set(ACTED_ON) <= set(defaults)
    defaults["quicksettings_list"].append("changed")
    assert a1111_defaults()["quicksettings_list"] == ["sd_model_checkpoint"]  # every call a fresh copy


def test_get_returns_every_a1111_key_with_sdgens_values(api) -> None:
    got = api.get_options()
    assert set(a1111_defaults()) <= set(got)
    assert got["randn_source"] == "CPU"  # sdgen draws its noise on the CPU
    assert got["enable_pnginfo"] is True and got["samples_format"] == "png"
    assert got["sd_model_checkpoint"] == api.util_get_current_model()
    assert got["outdir_txt2img_samples"] == "outputs/txt2img-images"  # A1111's default, not acted on


def test_post_keeps_and_echoes_the_keys_sdgen_does_not_act_on(api, server) -> None:
    url, _ = server
    got = api.get_options()
    api.set_options({**got, "outdir_samples": "/elsewhere", "my_extension_setting": {"a": [1, 2]}})
    again = api.get_options()
    assert again["outdir_samples"] == "/elsewhere" and again["my_extension_setting"] == {"a": [1, 2]}
    for bad in ({"samples_format": "gif"}, {"jpeg_quality": 101}, {"jpeg_quality": "80"}, {"webp_lossless": 1},
                {"eta_noise_seed_delta": -5}, {"randn_source": "TPU"}, {"CLIP_stop_at_last_layers": 13}):
        answer = requests.post(f"{url}/sdapi/v1/options", json=bad, timeout=30)
        assert answer.status_code == 422, (bad, answer.text)
        assert next(iter(bad)) in answer.text
    assert api.get_options()["samples_format"] == "png"  # nothing of a refused change is kept
    api.set_options({"outdir_samples": ""})


@pytest.mark.parametrize("kind", ["jpg", "webp"])
def test_samples_format_jpg_and_webp_carry_the_parameters_in_exif(api, kind) -> None:
    api.set_options({"samples_format": kind, "jpeg_quality": 90, "webp_lossless": kind == "webp"})
    try:
        result = requests.post(f"{api.baseurl}/txt2img", json={"prompt": "a fox\nin snow", "seed": 5, "steps": 2,
                                                                 "width": 64, "height": 64}, timeout=120).json()
    finally:
        api.set_options({"samples_format": "png", "jpeg_quality": 80, "webp_lossless": False})
    data = base64.b64decode(result["images"][0])
    image = Image.open(io.BytesIO(data))
    assert image.format == {"jpg": "JPEG", "webp": "WEBP"}[kind]
    comment = image.getexif().get_ifd(EXIF_IFD)[USER_COMMENT]
    assert comment.startswith(b"UNICODE\0")  # piexif's UserComment.dump(..., encoding="unicode"), as A1111
    infotext = comment[8:].decode("utf-16-be")
    assert infotext == json.loads(result["info"])["infotexts"][0]
    assert infotext.startswith("a fox\nin snow\n")
    parameters, record, _ = read_image_text(io.BytesIO(data), "the answer")
    assert parameters == infotext and record["seed"] == 5  # sdgen info and --from read it back


def test_ensd_changes_an_ancestral_samplers_noise_and_is_recorded(api) -> None:
    body = {"prompt": "a fox", "seed": 7, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler a"}
    plain = api.txt2img(**body)
    shifted = api.txt2img(**body, override_settings={"eta_noise_seed_delta": 31337})
    assert "ENSD: 31337" in shifted.info["infotexts"][0] and "ENSD" not in plain.info["infotexts"][0]
    assert not np.array_equal(np.asarray(plain.image), np.asarray(shifted.image))
    api.set_options({"eta_noise_seed_delta": 31337})
    try:
        again = api.txt2img(**body)
    finally:
        api.set_options({"eta_noise_seed_delta": 0})
    assert np.array_equal(np.asarray(again.image), np.asarray(shifted.image))
    euler = {**body, "sampler_name": "Euler"}  # no noise after the start: the same picture
    assert np.array_equal(np.asarray(api.txt2img(**euler).image),
                          np.asarray(api.txt2img(**euler, override_settings={"eta_noise_seed_delta": 31337}).image))


def test_hires_with_denoising_strength_0_upscales_only(api) -> None:
    body = {"prompt": "a fox", "seed": 3, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}
    result = api.txt2img(**body, enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0)
    assert result.image.size == (128, 128)
    text = result.info["infotexts"][0]
    assert "Denoising strength: 0, Hires upscale: 2" in text and "Hires steps" not in text


def test_the_keys_a_client_may_store_are_bounded(server) -> None:
    """Keys A1111 does not have are kept, up to MAX_OTHER_KEYS in all; past that a 422, and nothing is kept."""
    url, engine = server
    before = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()
    mine = {f"my_key_{i}": i for i in range(MAX_OTHER_KEYS + 1)}
    reply = requests.post(f"{url}/sdapi/v1/options", json=mine, timeout=30)
    assert reply.status_code == 422 and "at most" in reply.json()["detail"]
    assert requests.get(f"{url}/sdapi/v1/options", timeout=30).json() == before
    few = {"my_key_0": 0, "my_key_1": 1}
    assert requests.post(f"{url}/sdapi/v1/options", json=few, timeout=30).status_code == 200
    assert requests.get(f"{url}/sdapi/v1/options", timeout=30).json()["my_key_1"] == 1
