"""A1111 bodies -> sdgen's settings, images in and out: no server, no model."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from sdgen.errors import InvalidRequestError
from sdgen.serve.schema import Img2ImgBody, Txt2ImgBody
from sdgen.serve.translate import decode_image, named, request_values, samplers

DEFAULTS = {"scheduler": "dpm++2m-karras", "steps": 25, "guidance_scale": 7.5, "negative_prompt": "ugly"}


def png64(size=(16, 8), prefix: bool = False) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, "PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return "data:image/png;base64," + text if prefix else text


def test_a_bare_body_takes_the_servers_settings() -> None:
    values = request_values(Txt2ImgBody(prompt="a fox"), DEFAULTS)
    assert values["prompt"] == "a fox" and values["seed"] is None  # -1: random
    assert (values["steps"], values["guidance_scale"], values["scheduler"]) == (25, 7.5, "dpm++2m-karras")
    assert values["negative_prompt"] == "ugly" and values["hires_scale"] is None and values["init_image"] is None


def test_the_bodys_fields_map_to_sdgens_names() -> None:
    body = Txt2ImgBody(prompt="p", negative_prompt="", seed=9, steps=30, cfg_scale=5, width=320, height=256,
                       sampler_name="DPM++ 2M", scheduler="Uniform", batch_size=2, n_iter=3,
                       override_settings={"CLIP_stop_at_last_layers": 2})
    values = request_values(body, DEFAULTS)
    assert values["negative_prompt"] == "" and values["seed"] == 9 and values["clip_skip"] == 2
    assert (values["steps"], values["guidance_scale"], values["width"], values["height"]) == (30, 5, 320, 256)
    assert values["scheduler"] == "dpm++2m" and (values["batch_size"], values["num_images"]) == (2, 6)


@pytest.mark.parametrize(
    ("sampler", "schedule", "expected"),
    [
        ("Euler a", None, "euler-a"), ("DPM++ 2M", "automatic", "dpm++2m-karras"),
        ("DPM++ 2M Karras", None, "dpm++2m-karras"), ("k_lms", "Karras", "lms-karras"), ("unipc", None, "unipc"),
        (None, "karras", "dpm++2m-karras"),
    ],
)
def test_samplers_by_a1111_names_aliases_and_sdgens(sampler, schedule, expected) -> None:
    body = Txt2ImgBody(sampler_name=sampler, scheduler=schedule)
    assert request_values(body, {**DEFAULTS, "scheduler": "dpm++2m"})["scheduler"] == expected


def test_sampler_index_is_the_old_sampler_name_and_unknown_names_are_refused() -> None:
    assert request_values(Txt2ImgBody(sampler_index="Heun"), DEFAULTS)["scheduler"] == "heun"
    with pytest.raises(InvalidRequestError) as error:
        request_values(Txt2ImgBody(sampler_name="DPM++ 4M"), DEFAULTS)
    assert named(error.value).startswith("Unknown sampler_name 'DPM++ 4M': choose one of dpm++2m")
    with pytest.raises(InvalidRequestError) as error:
        request_values(Txt2ImgBody(sampler_name="DDIM", scheduler="Karras"), DEFAULTS)
    assert named(error.value).startswith("Invalid scheduler 'Karras' for sampler 'DDIM': it takes no schedule type")


def test_the_hires_fields() -> None:
    body = Txt2ImgBody(enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", hr_second_pass_steps=7,
                       denoising_strength=0.4)
    values = request_values(body, DEFAULTS)
    assert (values["hires_scale"], values["hires_upscaler"], values["hires_steps"], values["hires_strength"]) == (
        1.5, "lanczos", 7, 0.4)
    assert request_values(Txt2ImgBody(enable_hr=True), DEFAULTS)["hires_steps"] is None  # 0: the same steps
    # another name must be an upscaler the server lists (a file of its --upscaler-dir), never a path
    for name in ("R-ESRGAN 4x+", "/etc/hostname", "../x.safetensors"):
        with pytest.raises(InvalidRequestError, match="GET /sdapi/v1/upscalers"):
            request_values(Txt2ImgBody(enable_hr=True, hr_upscaler=name), DEFAULTS)
    with pytest.raises(InvalidRequestError, match="hr_scale"):
        request_values(Txt2ImgBody(enable_hr=True, hr_resize_x=1024), DEFAULTS)


def test_img2img_images_with_or_without_a_data_prefix_and_the_mask_fields() -> None:
    body = Img2ImgBody(init_images=[png64(prefix=True)], mask=png64(), denoising_strength=0.3, mask_blur=0,
                       inpainting_mask_invert=1, inpainting_fill=2)
    values = request_values(body, DEFAULTS)
    assert values["init_image"].size == (16, 8) and values["init_image"].mode == "RGB"
    assert values["mask"].mode == "L" and values["invert_mask"] is True and values["mask_blur"] == 0
    assert values["inpaint_fill"] == "noise"  # A1111's 2, latent noise
    assert values["strength"] == 0.3
    assert request_values(Img2ImgBody(init_images=[png64()]), DEFAULTS)["mask"] is None
    with pytest.raises(InvalidRequestError, match="exactly one"):
        request_values(Img2ImgBody(init_images=[png64(), png64()]), DEFAULTS)


@pytest.mark.parametrize(
    ("text", "words"),
    [("@@@", "not valid base64"), ("", "empty image"), (base64.b64encode(b"GIF89a").decode(), "not an image"),
     (png64()[:40], "not an image")],
)
def test_broken_images_are_refused_naming_the_field(text, words) -> None:
    with pytest.raises(InvalidRequestError, match=words) as error:
        decode_image(text, "init_image")
    assert named(error.value).startswith("Invalid init_images[0]")


def test_samplers_list_each_a1111_name_once_with_sdgens_names_as_aliases() -> None:
    listed = {entry["name"]: entry for entry in samplers()}
    assert listed["DPM++ 2M"]["options"] == {"scheduler": "karras"}
    assert {"k_dpmpp_2m", "dpm++2m", "dpm++2m-karras"} <= set(listed["DPM++ 2M"]["aliases"])
    assert listed["Euler a"]["options"] == {}
    assert all(len(entry["aliases"]) == len(set(entry["aliases"])) for entry in listed.values())


def test_eta_is_tcds_gamma_with_sampler_tcd_only() -> None:
    assert request_values(Txt2ImgBody(sampler_name="TCD", eta=0.7), DEFAULTS)["tcd_eta"] == 0.7
    assert "tcd_eta" not in request_values(Txt2ImgBody(sampler_name="Euler a", eta=0.7), DEFAULTS)
    assert named(InvalidRequestError("Invalid {name} 2.0: must be between 0 and 1.", "tcd_eta")).startswith(
        "Invalid eta 2.0")
