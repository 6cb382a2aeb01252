"""Error answers without a server: any value a validation error echoes becomes one printable line of JSON."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError
from sdgen.serve.engine import Limits
from sdgen.serve.replies import SafeJSONResponse, error_reply, field_name, one_line, shown, validation_message
from sdgen.serve.schema import ErrorBody, OptionsChanges, Txt2ImgBody


@pytest.mark.parametrize(("value", "text"), [
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (True, "true"),
    (None, "null"), (7, "7"), (2.5, "2.5"), ("\ud800", '"\\ud800"'), (b"\xff\xfe", "(2 bytes, not JSON)"),
    ({"a": 1}, "an object"), ([1], "a list"), (10**400, "(a number of 400+ digits)"),
    ("x" * 100, '"' + "x" * 40 + '..."'),
])
def test_any_value_is_shown_as_printable_text(value, text) -> None:
    assert shown(value) == text
    shown(value).encode("utf-8")  # always encodable


def test_error_bodies_always_encode() -> None:
    response = error_reply(422, "InvalidRequest", "Invalid prompt \ud800\nsecond line " + "y" * 1000, "prompt")
    body = json.loads(response.body)
    assert ErrorBody.model_validate(body).field == "prompt" and "\n" not in body["detail"]
    assert len(body["detail"]) <= 400 and "\\ud800" in body["detail"]
    assert json.loads(SafeJSONResponse({"echo": "\udfff"}).body) == {"echo": "\udfff"}  # escaped, not a 500
    assert one_line("cannot identify image file <_io.BytesIO object at 0x7f3a2c1d9e40>") == \
        "cannot identify image file <_io.BytesIO object>"  # no memory addresses to a client


def test_validation_errors_name_the_field_and_the_rule() -> None:
    assert field_name(("body", "init_images", 0)) == "init_images[0]"
    assert field_name(("body", "override_settings", "sd_vae")) == "override_settings.sd_vae"
    assert field_name(("body",)) == "body"
    for body, field, message in [
        ({"steps": float("nan")}, "steps", "Invalid steps NaN: must be a whole number (a JSON integer)."),
        ({"steps": True}, "steps", "Invalid steps true: must be a whole number (a JSON integer)."),
        ({"steps": 2.5}, "steps", "Invalid steps 2.5: must be a whole number (a JSON integer)."),
        ({"cfg_scale": "7"}, "cfg_scale", 'Invalid cfg_scale "7": must be a number (a JSON number).'),
        ({"cfg_scale": float("inf")}, "cfg_scale", "Invalid cfg_scale Infinity: must be a finite number."),
        ({"prompt": "a \ud83d"}, "prompt", "must be valid Unicode text (character 3 is a lone surrogate)"),
        ({"override_settings": {"CLIP_stop_at_last_layers": 13}}, "override_settings.CLIP_stop_at_last_layers",
         "Invalid override_settings.CLIP_stop_at_last_layers 13: must be at most 12."),
    ]:
        with pytest.raises(ValidationError) as raised:
            Txt2ImgBody.model_validate(body)
        named, text = validation_message(raised.value.errors()[0])
        assert named == field and message in text, text
    with pytest.raises(ValidationError) as raised:
        OptionsChanges.model_validate({"sd_vae": None})
    assert validation_message(raised.value.errors()[0]) == ("sd_vae", "Invalid sd_vae null: must be text (a JSON "
                                                                      "string).")
    assert Txt2ImgBody.model_validate({"steps": 20.0, "cfg_scale": 7}).steps == 20  # as JSON Schema counts


def test_the_servers_defaults_must_be_within_its_limits() -> None:
    defaults = check_request(GenerationRequest("a check", num_inference_steps=25))
    Limits(max_steps=25).check_defaults(defaults)
    with pytest.raises(InvalidRequestError, match="own defaults ask 25 steps") as raised:
        Limits(max_steps=8).check_defaults(defaults)
    assert raised.value.key == "max_steps"
    with pytest.raises(InvalidRequestError, match="512x512 = 262144 pixels") as raised:
        Limits(max_pixels=256 * 256).check_defaults(defaults)
    assert raised.value.key == "max_pixels"
