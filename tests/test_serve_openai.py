"""sdgen serve's OpenAI images API (sdgen/serve/openai_api.py) end to end: the real `openai` client against a
real server on a free loopback port over the tiny model, with --api-auth on and a small body limit; its images
are the A1111 route's, its errors OpenAI's shape. One server for the module: generations run one at a time."""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import openai
import pytest
import requests
from PIL import Image

from sdgen.serve.app import create_app
from sdgen.serve.engine import Limits
from sdgen.serve.server import serving

from .serving import make_engine

USERS = {"alice": "s3cret"}
KEY = "alice:s3cret"
MAX_BODY = 64 * 1024
SMALL = {"seed": 7, "steps": 2, "negative_prompt": "blur", "sampler_name": "Euler a", "cfg_scale": 6.5}


@pytest.fixture(scope="module")
def server(tiny_model_dir, hf_home):
    engine = make_engine(tiny_model_dir, width=64, height=64)
    with serving(create_app(engine, USERS, max_body=MAX_BODY), engine) as url:
        yield url, engine
    engine.close()


@pytest.fixture
def client(server) -> openai.OpenAI:
    url, _ = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def a1111(url: str, body: dict) -> dict:
    answer = requests.post(f"{url}/sdapi/v1/txt2img", json=body, auth=("alice", "s3cret"), timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def openai_post(url: str, body: object, key: str = KEY, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.post(f"{url}/v1/images/generations", json=body, headers=headers, timeout=120, **kwargs)


def test_the_openai_clients_images_are_the_a1111_routes_images(client, server) -> None:
    url, _ = server
    answer = client.images.generate(prompt="a red fox", n=2, size="72x64", response_format="b64_json",
                                    extra_body=SMALL)
    expected = a1111(url, {"prompt": "a red fox", "width": 72, "height": 64, "n_iter": 2, **SMALL})
    assert len(answer.data) == 2
    for got, want in zip(answer.data, expected["images"], strict=True):
        assert got.b64_json is not None and np.array_equal(pixels(got.b64_json), pixels(want))
    assert pixels(answer.data[0].b64_json).shape == (64, 72, 3)
    extra = [item.model_extra for item in answer.data]
    assert [item["seed"] for item in extra] == [7, 8]  # seed + i, as the A1111 route
    assert extra[0]["infotext"] == json.loads(expected["info"])["infotexts"][0]
    assert answer.data[0].revised_prompt == "a red fox"


def test_batch_size_hires_and_output_format_go_through_the_a1111_translation(client, server) -> None:
    url, _ = server
    fields = {**SMALL, "batch_size": 2, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent"}
    answer = client.images.generate(prompt="an owl", n=2, size="64x64", output_format="jpeg", extra_body=fields)
    expected = a1111(url, {"prompt": "an owl", "width": 64, "height": 64,
                           "override_settings": {"samples_format": "jpg"}, **fields})
    assert answer.output_format == "jpeg"
    for got, want in zip(answer.data, expected["images"], strict=True):
        assert base64.b64decode(got.b64_json)[:2] == b"\xff\xd8"  # a JPEG
        assert got.b64_json == want  # the same bytes: hires, batching and format all taken
    assert pixels(answer.data[0].b64_json).shape == (96, 96, 3)


def test_models_are_listed_and_a_listed_or_openai_name_generates(client, server) -> None:
    served = [model.id for model in client.models.list()]
    assert served and served[0] == str(server[1].spec.model)
    for name in (served[0], "dall-e-3", "gpt-image-1"):
        answer = client.images.generate(prompt="a fox", model=name, extra_body={"steps": 1, "seed": 3})
        assert pixels(answer.data[0].b64_json).shape == (64, 64, 3)  # the server's own size
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.images.generate(prompt="a fox", model="sd-xl-nope")
    assert refused.value.param == "model" and "GET /v1/models" in refused.value.message
    assert refused.value.type == "invalid_request_error" and refused.value.code == "invalid_request"


@pytest.mark.parametrize("body, param, words", [
    ({"prompt": "x", "size": "big"}, "size", "WIDTHxHEIGHT"),
    ({"prompt": "x", "response_format": "url"}, "response_format", "b64_json"),
    ({"prompt": "x", "n": 0}, "n", "at least 1"),
    ({"prompt": "x", "n": 17}, None, "--max-batch"),
    ({"prompt": ""}, "prompt", "empty"),
    ({"n": 1}, "prompt", "required"),
    ({"prompt": "x", "steps": "many"}, "steps", "whole number"),
    ({"prompt": "x", "width": 64}, "width", "size"),
    ({"prompt": "x", "sampler_name": "no such sampler"}, "sampler_name", "no such sampler"),
    ({"prompt": "x", "size": "64x64", "n": 3, "batch_size": 2}, "batch_size", "multiple"),
    ({"prompt": "x", "size": "64x64", "n": 3, "batch_size": 2.0}, "batch_size", "multiple"),
    ({"prompt": "x", "output_format": "gif"}, "output_format", "webp"),
    ({"prompt": "x", "size": "100000x64"}, "size", "Invalid size"),
])
def test_bad_fields_get_a_422_in_openais_error_shape(server, body, param, words) -> None:
    answer = openai_post(server[0], body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and words in error["message"] and error["type"] == "invalid_request_error"


def test_unreadable_oversized_and_unknown_requests_get_openais_shape_and_a1111_routes_keep_theirs(server) -> None:
    url, _ = server
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    broken = requests.post(f"{url}/v1/images/generations", data=b'{"prompt": ', headers=headers, timeout=10)
    assert broken.status_code == 422 and broken.json()["error"]["param"] == "body"
    huge = openai_post(url, {"prompt": "x" * MAX_BODY})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    missing = requests.get(f"{url}/v1/nothing", headers=headers, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    a1111_error = requests.post(f"{url}/sdapi/v1/txt2img", json={"steps": "x"}, auth=("alice", "s3cret"), timeout=10)
    assert a1111_error.status_code == 422 and a1111_error.json()["field"] == "steps"  # A1111's ErrorBody


def test_the_api_key_is_the_servers_user_and_password(server) -> None:
    url, _ = server
    for key in ("alice:wrong", "alice", "eve:s3cret"):
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            wrong.models.list()
        assert refused.value.code == "invalid_api_key" and "user:password" in refused.value.message
    assert openai_post(url, {"prompt": "x"}, key="nope").status_code == 401
    unsent = requests.post(f"{url}/v1/images/generations", data=b"{", timeout=10)  # refused before the body
    assert unsent.status_code == 401 and unsent.json()["error"]["type"] == "authentication_error"
    bearer_on_a1111 = requests.get(f"{url}/sdapi/v1/sd-models", headers={"Authorization": f"Bearer {KEY}"},
                                   timeout=10)
    assert bearer_on_a1111.status_code == 401  # the A1111 routes keep HTTP Basic, as A1111 has it
    basic = requests.get(f"{url}/v1/models", auth=("alice", "s3cret"), timeout=10)
    assert basic.status_code == 200  # Basic works here too
    _, engine = server
    with serving(create_app(engine), engine) as open_url:  # no --api-auth: any key (the client needs one)
        assert openai.OpenAI(base_url=f"{open_url}/v1", api_key="anything", max_retries=0).models.list().data


def test_the_openai_route_waits_in_the_a1111_routes_queue(client, server) -> None:
    url, engine = server
    limits, release = engine.limits, threading.Event()
    engine.limits = Limits(max_steps=5000, max_queue=1)
    started = threading.Event()
    running = engine.submit(lambda: (started.set(), release.wait(60)))  # holds the worker
    try:
        assert started.wait(60)
        engine.submit(lambda: None)  # one waiting: the queue is full
        with pytest.raises(openai.InternalServerError) as full:
            client.images.generate(prompt="one too many", extra_body={"steps": 1})
        assert full.value.status_code == 503 and full.value.code == "queue_full"
        assert int(full.value.response.headers["Retry-After"]) >= 1
        status = requests.get(f"{url}/queue/status", auth=("alice", "s3cret"), timeout=10).json()
        assert status["queue_size"] == 1 and status["running"] is False  # the held job is not a generation
    finally:
        engine.limits = limits
        release.set()
        running.result(timeout=60)
    assert client.images.generate(prompt="after", extra_body={"steps": 1}).data
