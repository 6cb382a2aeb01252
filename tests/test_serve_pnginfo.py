"""POST /sdapi/v1/png-info (issue 24): A1111's answer (info, items, parameters) for any image: one A1111 made
(PNG, and JPEG with the parameters in EXIF), one sdgen made, one with none; a body that is no image is a 422."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdgen.errors import InvalidRequestError
from sdgen.record.formats import image_bytes
from sdgen.serve.pnginfo import parse_generation_parameters, png_info

A1111_TEXT = ("masterpiece, a fox\nin the snow\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, "
              "Schedule type: Karras, CFG scale: 7, Seed: 965400086, Size: 512x768, Model hash: 45dee52b, "
              'Model: "dream, v8", Version: v1.10.1')


def encoded(image: Image.Image, **save) -> str:
    buffer = io.BytesIO()
    image.save(buffer, **save)
    return base64.b64encode(buffer.getvalue()).decode()


def test_an_a1111_png() -> None:
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    answer = png_info(encoded(Image.new("RGB", (8, 8)), format="PNG", pnginfo=info))
    assert answer["info"] == A1111_TEXT and answer["items"] == {}
    parameters = answer["parameters"]
    assert parameters["Prompt"] == "masterpiece, a fox\nin the snow" and parameters["Negative prompt"] == "blurry"
    assert (parameters["Size-1"], parameters["Size-2"], parameters["Seed"]) == ("512", "768", "965400086")
    assert parameters["Model"] == "dream, v8" and parameters["Schedule type"] == "Karras"
    # what A1111 fills in for fields an infotext leaves out
    assert parameters["Clip skip"] == "1" and parameters["RNG"] == "GPU" and parameters["Mask mode"] == "Inpaint masked"


def test_an_a1111_jpeg_and_an_sdgen_webp_with_a_data_prefix() -> None:
    jpeg = image_bytes(Image.new("RGB", (8, 8)), "jpg", A1111_TEXT)
    answer = png_info(base64.b64encode(jpeg).decode())
    assert answer["info"] == A1111_TEXT and answer["items"]["exif comment"] == A1111_TEXT
    webp = image_bytes(Image.new("RGB", (8, 8)), "webp", "a cat\nSteps: 2, Sampler: Euler, Seed: 3, RNG: CPU",
                       '{"seed": 3}')
    answer = png_info("data:image/webp;base64," + base64.b64encode(webp).decode())
    assert answer["parameters"]["RNG"] == "CPU" and answer["parameters"]["Prompt"] == "a cat"


def test_an_image_without_parameters_and_an_empty_body() -> None:
    assert png_info(encoded(Image.new("RGB", (8, 8)), format="PNG")) == {"info": "", "items": {}, "parameters": {}}
    assert png_info("") == {"info": "", "items": {}, "parameters": {}}
    with pytest.raises(InvalidRequestError, match="not valid base64"):
        png_info("not base64!")
    with pytest.raises(InvalidRequestError, match="not an image|cannot|not a readable"):
        png_info(base64.b64encode(b"hello world").decode())


def test_a1111s_rules_for_prompts_without_fields() -> None:
    parsed = parse_generation_parameters("just a prompt\nNegative prompt: a, b")
    assert parsed["Prompt"] == "just a prompt" and parsed["Negative prompt"] == "a, b"
    assert parse_generation_parameters("  padded  \nSteps: 2, Seed: 1, Size: 64x64")["Prompt"] == "padded"


def test_the_route_over_a_server(tiny_model_dir, hf_home) -> None:
    import requests

    from sdgen.serve.app import create_app
    from sdgen.serve.server import serving

    from .serving import make_engine

    engine = make_engine(tiny_model_dir)
    try:
        with serving(create_app(engine), engine) as url:
            made = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a fox", "seed": 2, "steps": 1,
                                                                   "width": 64, "height": 64}, timeout=120).json()
            answer = requests.post(f"{url}/sdapi/v1/png-info", json={"image": made["images"][0]}, timeout=30)
            assert answer.status_code == 200
            body = answer.json()
            assert body["parameters"]["Seed"] == "2" and body["parameters"]["RNG"] == "CPU"
            assert "sdgen" in body["items"]  # sdgen's record, a PNG text chunk like any other
            bad = requests.post(f"{url}/sdapi/v1/png-info", json={"image": "%%%"}, timeout=30)
            assert bad.status_code == 422 and bad.json()["field"] == "image"
    finally:
        engine.close()
