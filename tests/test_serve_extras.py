"""A1111's Extras endpoints and upscaler listing over --upscaler-dir (sdgen/serve/extras.py), through webuiapi's
own extra_single_image / extra_batch_images; hr_upscaler naming an upscaler model."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from sdgen.serve.app import create_app
from sdgen.serve.server import serving

from .serving import make_engine


@pytest.fixture(scope="module")
def server(tiny_model_dir, hf_home, tmp_path_factory):
    from sdgen.models.upscalers import import_spandrel
    from sdgen.testing.tiny_upscalers import save_tiny_upscalers

    import_spandrel()
    folder = tmp_path_factory.mktemp("ESRGAN")
    save_tiny_upscalers(folder)
    engine = make_engine(tiny_model_dir, upscaler_dir=str(folder))
    with serving(create_app(engine), engine) as url:
        yield url, folder
    engine.close()


@pytest.fixture
def api(server) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=f"{server[0]}/sdapi/v1", sampler="Euler a", steps=2)


def picture(width: int = 40, height: int = 24) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def test_the_upscalers_listed_are_the_folders_files(server) -> None:
    listed = requests.get(f"{server[0]}/sdapi/v1/upscalers", timeout=30).json()
    assert [entry["name"] for entry in listed] == ["None", "Lanczos", "2x-tiny-compact", "2x-tiny-swinir",
                                                   "4x-tiny-esrgan"]
    assert listed[-1]["scale"] == 4 and listed[-1]["model_path"].endswith("4x-tiny-esrgan.safetensors")


def test_extra_single_image_equals_sdgens_own_upscaler(api, server) -> None:
    from sdgen.engine.upscaling import upscale_image
    from sdgen.models.upscalers import identify, load_upscaler

    result = api.extra_single_image(picture(), upscaler_1="2x-tiny-compact", upscaling_resize=3)
    model = load_upscaler(identify(server[1] / "2x-tiny-compact.safetensors"))
    expected = upscale_image(model, picture(), 120, 72)  # 40x24 * 3, multiples of 8 as A1111 rounds
    assert result.image.size == (120, 72)
    assert np.array_equal(np.asarray(result.image), np.asarray(expected))
    assert "Postprocess upscale by: 3, Postprocess upscaler: 2x-tiny-compact" in result.info


def test_extra_batch_images_to_a_size_blends_a_second_upscaler_and_crops(api) -> None:
    result = api.extra_batch_images(
        [picture(), picture(32, 32)], resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=48,
        upscaler_1="Lanczos", upscaler_2="4x-tiny-esrgan", extras_upscaler_2_visibility=0.5,
    )
    assert [image.size for image in result.images] == [(64, 48), (64, 48)]
    assert "Postprocess upscaler 2: 4x-tiny-esrgan, Postprocess crop to: 64x48" in result.info


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"upscaler_1": "8x-missing"}, "upscaler_1"),
        ({"upscaler_1": "Lanczos", "gfpgan_visibility": 0.5}, "gfpgan_visibility"),
        ({"upscaler_1": "Lanczos", "upscaling_resize": 0}, "upscaling_resize"),
        ({"upscaler_1": "Lanczos", "image": "not base64!"}, "image"),
        ({"upscaler_1": "Lanczos", "upscaling_resize": 16, "image": (600, 40)}, "upscaling_resize"),  # 9600 wide
    ],
)
def test_bad_extras_bodies_are_422_naming_the_field(server, body, field) -> None:
    import base64
    import io

    buffer = io.BytesIO()
    sides = body["image"] if isinstance(body.get("image"), tuple) else (40, 24)
    picture(*sides).save(buffer, format="PNG")
    sent = {"image": base64.b64encode(buffer.getvalue()).decode(), **body}
    if isinstance(body.get("image"), tuple):
        sent["image"] = base64.b64encode(buffer.getvalue()).decode()
    reply = requests.post(f"{server[0]}/sdapi/v1/extra-single-image", json=sent, timeout=30)
    assert reply.status_code == 422, reply.text
    assert field in reply.json()["field"], reply.json()


def test_hr_upscaler_takes_an_upscaler_model_by_name(api) -> None:
    result = api.txt2img(prompt="a fox", seed=1, width=64, height=64, steps=2, enable_hr=True, hr_scale=2,
                         hr_upscaler="2x-tiny-compact", denoising_strength=0.5)
    assert result.image.size == (128, 128)
    assert "Hires upscaler: 2x-tiny-compact" in result.info["infotexts"][0]
