"""`sdgen serve`'s command line: its checks come before any weights load; the real process answers hostile
input with 4xx bodies its schema declares, and stops as documented on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.cli.serve import is_loopback, parse_users
from sdgen.serve.schema import ErrorBody

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_api_auth_users() -> None:
    assert parse_users("alice:pw,bob:a:b") == {"alice": "pw", "bob": "a:b"}
    assert parse_users(None) is None
    result = runner.invoke(app, ["serve", "--api-auth", "alice"])
    assert result.exit_code == 2 and "Invalid --api-auth entry 'alice': write user:password" in result.output


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_a_port_in_use_is_an_error_before_loading(no_weights_load) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port), "--model", "some/model"])
    assert result.exit_code == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in result.output and "--port" in result.output


def test_bad_defaults_and_limits_are_refused_before_loading(no_weights_load) -> None:
    result = runner.invoke(app, ["serve", "--steps", "0"])
    assert result.exit_code == 2 and "Invalid --steps 0" in result.output
    result = runner.invoke(app, ["serve", "--max-steps", "-1"])
    assert result.exit_code == 2 and "Invalid --max-steps -1" in result.output


def test_limits_that_refuse_the_servers_own_defaults_stop_it_at_start_up(no_weights_load) -> None:
    """--max-steps 8 with the default 25 steps would refuse every request that leaves steps out."""
    result = runner.invoke(app, ["serve", "--max-steps", "8", "--model", "some/model"])
    assert result.exit_code == 2, result.output
    assert "Invalid --max-steps 8: the server's own defaults ask 25 steps (--steps)" in result.output
    result = runner.invoke(app, ["serve", "--max-pixels", "100000", "-W", "512", "--model", "some/model"])
    assert result.exit_code == 2 and "Invalid --max-pixels 100000" in result.output
    assert "512x512 = 262144 pixels (--width, --height)" in result.output
    with socket.socket() as taken:  # within the limits: it goes on (to the port, then to loading)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--max-steps", "8", "--steps", "8", "--max-pixels", "65536", "-W",
                                     "256", "-H", "256", "--port", str(port), "--model", "some/model"])
    assert result.exit_code == 2 and "Cannot listen on" in result.output


def test_listen_without_auth_warns(no_weights_load) -> None:
    result = runner.invoke(app, ["serve", "--listen", "--port", str(free_port()), "--model", "some/model"])
    assert "listening on 0.0.0.0 without --api-auth" in result.output
    # then it went on to the model (here offline and not cached: refused in one line before any loading)
    assert "Model 'some/model' is not in the Hugging Face cache" in result.output


def test_a_clear_message_when_the_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sdgen.serve.app", None)  # as if FastAPI were not installed
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert 'sdgen serve needs FastAPI and uvicorn: pip install "sdgen[serve]"' in result.output


class RealServer:
    """`sdgen serve` as a user starts it: its own process on a free loopback port, its log in a file."""

    def __init__(self, model: Path, log: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "sdgen", "serve", "--model", str(model), "--device", "cpu",
                   "--port", str(self.port), *flags]
        with log.open("w") as stderr:
            self.process = subprocess.Popen(command, stderr=stderr, env={**os.environ, **(env or {})})

    def wait_ready(self, auth: tuple[str, str] | None = None) -> dict:
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                return requests.get(f"{self.url}/sdapi/v1/options", auth=auth, timeout=5).json()
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)

    def post(self, path: str, body: object, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/sdapi/v1/{path}", json=body, timeout=120, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def test_the_real_command_serves_and_stops_on_sigterm(tiny_model_dir, tmp_path) -> None:
    server = RealServer(tiny_model_dir, tmp_path / "log", "--max-batch", "1", "--outdir", str(tmp_path / "kept"))
    try:
        options = server.wait_ready()
        assert options["sd_model_checkpoint"] == str(tiny_model_dir)
        body = {"prompt": "a fox", "steps": 1, "width": 64, "height": 64, "seed": 4, "save_images": True}
        too_many = server.post("txt2img", {**body, "n_iter": 2})
        assert too_many.status_code == 422 and "--max-batch" in too_many.text
        assert server.post("txt2img", body).status_code == 200
        assert [path.name for path in (tmp_path / "kept").iterdir()] == ["00000-4-a-fox.png"]
        server.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then dies by the signal it caught: 143 in a shell, as sdgen's other commands
        assert server.process.wait(timeout=30) == -signal.SIGTERM
        log = server.log.read_text()
        assert f"http://127.0.0.1:{server.port}/sdapi/v1" in log and "Traceback" not in log
    finally:
        server.stop()


def progress(url: str) -> dict:
    return requests.get(f"{url}/sdapi/v1/progress", params={"skip_current_image": True}, timeout=10).json()


def wait_until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_answers_the_queue_503_and_the_running_request_with_what_it_has(tiny_model_dir, tmp_path) -> None:
    """Issue 22, item 5: queued clients get the documented 503 (not a 500 with a CancelledError), the running
    request stops at its next step and returns its image, and the process exits within a few seconds."""
    server = RealServer(tiny_model_dir, tmp_path / "log", "--max-steps", "1000")
    answers: dict[str, requests.Response] = {}

    def send(name: str, body: dict) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.__setitem__(name, server.post("txt2img", body)))
        thread.start()
        return thread

    try:
        server.wait_ready()
        running = send("running", {"prompt": "slow", "steps": 1000, "width": 64, "height": 64, "seed": 9})
        wait_until(lambda: progress(server.url)["state"]["sampling_step"] >= 2)
        queued = send("queued", {"prompt": "waits", "steps": 2, "width": 64, "height": 64})
        wait_until(lambda: requests.get(f"{server.url}/queue/status", timeout=10).json()["queue_size"] == 1)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == -signal.SIGTERM
        took = time.monotonic() - signalled
        running.join(timeout=30)
        queued.join(timeout=30)
    finally:
        server.stop()
    assert took < 8, f"the server took {took:.1f} s to stop"
    assert answers["queued"].status_code == 503, answers["queued"].text
    assert ErrorBody.model_validate(answers["queued"].json()).error == "ShuttingDown"
    assert answers["running"].status_code == 200, answers["running"].text
    stopped = answers["running"].json()
    assert len(stopped["images"]) == 1 and json.loads(stopped["info"])["all_seeds"] == [9]
    log = server.log.read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log


USER = ("alice", "s3cret")


@pytest.fixture(scope="module")
def guarded(tiny_model_dir, tmp_path_factory) -> Iterator[RealServer]:
    """One real server with --api-auth (from SDGEN_API_AUTH, as docs/server.md advises) for the hostile requests."""
    log = tmp_path_factory.mktemp("guarded") / "log"
    server = RealServer(tiny_model_dir, log, env={"SDGEN_API_AUTH": ":".join(USER)})
    server.wait_ready(auth=USER)
    yield server
    server.stop()


def raw_post(server: RealServer, path: str, data, auth=USER, content_type="application/json") -> requests.Response:
    return requests.post(f"{server.url}{path}", data=data, auth=auth, headers={"Content-Type": content_type},
                         timeout=120)


def error_of(answer: requests.Response, status: int) -> ErrorBody:
    """The answer's ErrorBody, after checking its status and that it has exactly the published fields."""
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"].startswith("application/json")
    assert set(answer.json()) == {"error", "detail", "field"}, answer.text[:300]
    error = ErrorBody.model_validate(answer.json())
    assert "Traceback" not in error.detail and "\n" not in error.detail and " at 0x" not in error.detail
    return error


def test_values_json_cannot_type_strictly_get_a_422_not_a_500(guarded) -> None:
    """Issue 22, item 4, and strict types: NaN, Infinity, a lone surrogate, booleans and strings as numbers."""
    good = '{"prompt": "a fox", "width": 64, "height": 64, "steps": 1'
    cases = [
        (good + ', "seed": NaN}', "seed", "Invalid seed NaN: must be a whole number"),
        (good + ', "n_iter": Infinity}', "n_iter", "Invalid n_iter Infinity"),
        (good + ', "cfg_scale": -Infinity}', "cfg_scale", "must be a finite number"),
        (r'{"prompt": "a fox \ud800", "width": 64, "height": 64, "steps": 1}', "prompt", "lone surrogate"),
        (good + r', "styles": ["\udfff"]}', "styles[0]", "lone surrogate"),
        ('{"prompt": "a fox", "width": 64, "height": 64, "steps": true}', "steps", "Invalid steps true"),
        ('{"prompt": "a fox", "width": "64", "height": 64, "steps": 1}', "width", 'Invalid width "64"'),
        (good + ', "send_images": 1}', "send_images", "must be true or false"),
        (good + ', "override_settings": {"CLIP_stop_at_last_layers": 2.5}}',
         "override_settings.CLIP_stop_at_last_layers", "must be a whole number"),
    ]
    for body, field, words in cases:
        error = error_of(raw_post(guarded, "/sdapi/v1/txt2img", body.encode()), 422)
        assert error.error == "InvalidRequest" and error.field == field and words in error.detail, (body, error)
    # what A1111 clients send is accepted: an integer where a number goes, a whole number written 2.0
    answer = guarded.post("txt2img", {"prompt": "a fox", "width": 64, "height": 64, "steps": 1.0, "cfg_scale": 7,
                                      "seed": 3}, auth=USER)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["info"])["cfg_scale"] == 7.0


def test_docs_and_schema_are_behind_auth_and_auth_comes_before_the_body(guarded) -> None:
    """Issue 22, item 6: /docs, /redoc, /openapi.json need the password; a JSON syntax error without it is a 401."""
    for path in ("/docs", "/redoc", "/openapi.json", "/sdapi/v1/options", "/no/such/route"):
        refused = requests.get(f"{guarded.url}{path}", timeout=10)
        assert error_of(refused, 401).error == "Unauthorized"
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert requests.get(f"{guarded.url}{path}", auth=USER, timeout=10).status_code == 200
    assert error_of(raw_post(guarded, "/sdapi/v1/txt2img", b'{"prompt": ', auth=None), 401).error == "Unauthorized"
    assert error_of(raw_post(guarded, "/sdapi/v1/txt2img", b'{"prompt": ', auth=("alice", "wrong")), 401)
    error = error_of(raw_post(guarded, "/sdapi/v1/txt2img", b'{"prompt": '), 422)
    assert error.field == "body" and "not valid JSON" in error.detail


def test_a_40_mb_body_gets_the_documented_413(guarded) -> None:
    """Issue 22, item 6: not a reset connection, whether the body says its length or comes in chunks."""
    big = b'{"prompt": "' + b"a" * (40 * 1024 * 1024) + b'"}'
    assert "too large" not in error_of(raw_post(guarded, "/sdapi/v1/txt2img", big), 413).detail.lower()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 1024 * 1024):
            yield big[start:start + 1024 * 1024]

    error = error_of(raw_post(guarded, "/sdapi/v1/txt2img", chunks()), 413)
    assert error.error == "TooLarge" and "33554432 bytes" in error.detail
    assert guarded.post("txt2img", {"prompt": "after", "width": 64, "height": 64, "steps": 1}, auth=USER).ok


def test_options_are_typed_and_errors_match_the_published_schema(guarded) -> None:
    """Issue 22, item 6: {"sd_vae": null} is refused, not stored; the 422 body is the schema's ErrorBody."""
    before = requests.get(f"{guarded.url}/sdapi/v1/options", auth=USER, timeout=10).json()
    for changes, field in (({"sd_vae": None}, "sd_vae"), ({"sd_model_checkpoint": None}, "sd_model_checkpoint"),
                           ({"CLIP_stop_at_last_layers": True}, "CLIP_stop_at_last_layers")):
        error = error_of(guarded.post("options", changes, auth=USER), 422)
        assert error.field == field and ("null" in error.detail or "true" in error.detail), error
    assert requests.get(f"{guarded.url}/sdapi/v1/options", auth=USER, timeout=10).json() == before
    assert guarded.post("options", {**before, "an_a1111_setting": None}, auth=USER).status_code == 200
    schema = requests.get(f"{guarded.url}/openapi.json", auth=USER, timeout=10).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status != "200":  # OpenAI's routes (/v1) answer errors in OpenAI's own shape
                    body = "OpenAIErrorBody" if path.startswith("/v1/") else "ErrorBody"
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": f"#/components/schemas/{body}"}, (method, path, status)
            assert "401" in operation["responses"], (method, path)
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "detail", "field"}
