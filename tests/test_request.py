"""Request validation: every rule, with the value and the fix in the message."""

from __future__ import annotations

import re

import pytest

from sdgen.config.options import describe
from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import InvalidRequestError


def valid(**overrides) -> GenerationRequest:
    return check_request(GenerationRequest(prompt="a fox", **overrides))


def test_defaults_are_filled_in() -> None:
    request = valid(seed=3)
    assert (request.width, request.height) == (512, 512)
    assert request.scheduler == "dpm++2m-karras"
    assert request.num_inference_steps == 25 and request.guidance_scale == 7.5
    assert request.seeds == [3]
    assert valid(seed=10, num_images=3).seeds == [10, 11, 12]


def test_request_is_frozen() -> None:
    request = valid(seed=1)
    with pytest.raises(AttributeError):
        request.seed = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(width=513),
            "Invalid --width 513: must be a multiple of 8 (the VAE works on 8x8 pixel blocks); try 512 or 520.",
        ),
        (dict(width=8192), "Invalid --width 8192: must be a whole number from 64 to 4096."),
        (dict(num_inference_steps=0), "Invalid --steps 0: must be a whole number from 1 to 1000."),
        (dict(num_images=0), "Invalid --num-images 0"),
        (dict(batch_size=0), "Invalid --batch-size 0"),
        (dict(guidance_scale=-0.5), "Invalid --guidance-scale -0.5: must be between 0 and 100"),
        (dict(seed=2**63), "Invalid --seed"),
        (dict(scheduler="euler_a"), "Unknown --scheduler 'euler_a'"),
    ],
)
def test_rules(overrides, message) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        valid(**overrides)
    assert message in describe(caught.value)


def test_strength_rules(tmp_path) -> None:
    from PIL import Image

    path = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(path)
    with pytest.raises(InvalidRequestError) as caught:
        valid(init_image=path, strength=1.5)
    assert re.search(r"Invalid --strength 1.5: must be greater than 0 and at most 1", describe(caught.value))
    with pytest.raises(InvalidRequestError, match=r"steps x strength >= 1"):
        valid(init_image=path, strength=0.1, num_inference_steps=5)
    assert valid(init_image=path, strength=1.0).is_img2img


def test_unreadable_init_image(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(InvalidRequestError, match="not an image sdgen reads"):
        valid(init_image=path)


def test_model_spec_checks_spelling_only() -> None:
    assert ModelSpec(device="CUDA:1", dtype="fp16").checked().dtype == "float16"
    with pytest.raises(InvalidRequestError) as caught:
        ModelSpec(model=" ").checked()
    assert re.search("Invalid --model ''", describe(caught.value))


def test_the_library_default_size_is_the_models_own(tiny_parts) -> None:
    """GenerationRequest leaves the size unset: generate() makes the model's own (64 for the tiny model), not 512."""
    from sdgen import generate

    assert GenerationRequest("a fox").width is None and GenerationRequest("a fox").height is None
    (image,) = generate(GenerationRequest("a fox", num_inference_steps=1, seed=1), tiny_parts)
    assert image.image.size == (tiny_parts.spec.native_size,) * 2 == (64, 64)
