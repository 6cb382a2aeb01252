"""`sdgen serve`'s command line: its checks come before any weights load; the real process answers and stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.cli.serve import is_loopback, parse_users

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


def test_listen_without_auth_warns(no_weights_load) -> None:
    result = runner.invoke(app, ["serve", "--listen", "--port", str(free_port()), "--model", "some/model"])
    assert "listening on 0.0.0.0 without --api-auth" in result.output
    assert isinstance(result.exception, AssertionError)  # then it went on to load (refused by the fixture)


def test_a_clear_message_when_the_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sdgen.serve.app", None)  # as if FastAPI were not installed
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert 'sdgen serve needs FastAPI and uvicorn: pip install "sdgen[serve]"' in result.output


def test_the_real_command_serves_and_stops_on_sigterm(tiny_model_dir, tmp_path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "sdgen", "serve", "--model", str(tiny_model_dir), "--device", "cpu",
               "--port", str(port), "--max-batch", "1", "--outdir", str(tmp_path / "kept")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                options = requests.get(f"http://127.0.0.1:{port}/sdapi/v1/options", timeout=5).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert options["sd_model_checkpoint"] == str(tiny_model_dir)
        body = {"prompt": "a fox", "steps": 1, "width": 64, "height": 64, "seed": 4, "save_images": True}
        url = f"http://127.0.0.1:{port}/sdapi/v1/txt2img"
        too_many = requests.post(url, json={**body, "n_iter": 2}, timeout=60)
        assert too_many.status_code == 422 and "--max-batch" in too_many.text
        assert requests.post(url, json=body, timeout=60).status_code == 200
        assert [path.name for path in (tmp_path / "kept").iterdir()] == ["00000-4-a-fox.png"]
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then dies by the signal it caught: 143 in a shell, as sdgen's other commands
        assert process.wait(timeout=30) == -signal.SIGTERM
        stderr = process.stderr.read()
        assert f"http://127.0.0.1:{port}/sdapi/v1" in stderr and "Traceback" not in stderr
    finally:
        process.kill()
