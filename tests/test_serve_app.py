"""sdgen serve end to end: a real server on a free loopback port over the tiny model, driven by the real
`webuiapi` client and by raw HTTP. Generation requests run one at a time, so these share one server."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app as cli_app
from sdgen.engine.request import ModelSpec
from sdgen.serve.app import create_app
from sdgen.serve.engine import Engine, Limits
from sdgen.serve.server import serving

from .conftest import TINY_HUB_ID
from .serving import make_engine, server_settings

runner = CliRunner()


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-images")


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, hf_home: Path, outdir: Path):
    engine = make_engine(tiny_model_dir, outdir=outdir)
    with serving(create_app(engine), engine) as url:
        yield url, engine
    engine.close()


@pytest.fixture
def api(server) -> webuiapi.WebUIApi:
    url, _ = server
    return webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", sampler="Euler a", steps=4)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def cli_image(tmp_path: Path, model: Path, *args: str) -> Image.Image:
    target = tmp_path / f"cli-{len(list(tmp_path.glob('cli-*.png')))}.png"
    flags = ["--model", str(model), "--device", "cpu", "--dtype", "float32", "-o", str(target), *args]
    result = runner.invoke(cli_app, flags)
    assert result.exit_code == 0, result.output
    return Image.open(target)


def post(url: str, path: str, body: object, **kwargs) -> requests.Response:
    return requests.post(f"{url}/sdapi/v1/{path}", json=body, timeout=120, **kwargs)


def test_webuiapi_txt2img_is_the_command_lines_image(api, tiny_model_dir, tmp_path) -> None:
    result = api.txt2img(prompt="a red fox", negative_prompt="blur", seed=7, cfg_scale=7.5, width=64, height=64)
    expected = cli_image(tmp_path, tiny_model_dir, "a red fox", "-N", "blur", "--seed", "7", "--steps", "4",
                         "--scheduler", "euler-a", "-g", "7.5", "-W", "64", "-H", "64")
    assert len(result.images) == 1
    assert np.array_equal(pixels(result.image), pixels(expected))
    assert result.info["all_seeds"] == [7] and result.info["seed"] == 7
    assert result.info["sampler_name"] == "Euler a" and result.info["steps"] == 4
    infotext = result.info["infotexts"][0]
    assert "Seed: 7" in infotext and "Sampler: Euler a" in infotext
    assert result.image.info["parameters"] == infotext  # the PNG carries A1111's metadata
    assert result.parameters["prompt"] == "a red fox"


def test_prompt_editing_and_and_reach_the_server_through_the_prompt(api, tiny_model_dir, tmp_path) -> None:
    prompt, negative = "a [red:blue:0.5] fox AND [snow|ice] :0.6", "[blur::2]"
    result = api.txt2img(prompt=prompt, negative_prompt=negative, seed=7, cfg_scale=7.5, width=64, height=64)
    expected = cli_image(tmp_path, tiny_model_dir, prompt, "-N", negative, "--seed", "7", "--steps", "4",
                         "--scheduler", "euler-a", "-g", "7.5", "-W", "64", "-H", "64")
    assert np.array_equal(pixels(result.image), pixels(expected))
    assert result.info["infotexts"][0].splitlines()[:2] == [prompt, f"Negative prompt: {negative}"]


def test_batches_take_seed_plus_i_and_random_seeds_are_reported(server) -> None:
    url, _ = server
    body = {"prompt": "a fox", "seed": 40, "steps": 2, "width": 64, "height": 64, "batch_size": 2, "n_iter": 2,
            "sampler_name": "DPM++ 2M", "scheduler": "Karras", "no_such_field": {"ignored": True}}
    answer = post(url, "txt2img", body)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["all_seeds"] == [40, 41, 42, 43] and len(answer.json()["images"]) == 4
    assert "Schedule type: Karras" in info["infotexts"][0]
    random = json.loads(post(url, "txt2img", {"prompt": "a fox", "seed": -1, "steps": 1, "width": 64,
                                              "height": 64}).json()["info"])
    assert random["seed"] >= 0 and random["all_seeds"] == [random["seed"]]


def test_img2img_with_a_mask_is_the_command_lines_image(api, server, tiny_model_dir, tmp_path) -> None:
    init = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    init.save(tmp_path / "init.png")
    mask.save(tmp_path / "mask.png")
    result = api.img2img(images=[init], mask_image=mask, denoising_strength=0.6, seed=3, cfg_scale=7.5,
                         width=64, height=64, prompt="a cat", sampler_name="Euler")
    common = ("a cat", "--init-image", str(tmp_path / "init.png"), "--mask", str(tmp_path / "mask.png"), "--strength",
              "0.6", "--seed", "3", "--steps", "4", "--scheduler", "euler", "-g", "7.5")
    filled = cli_image(tmp_path, tiny_model_dir, *common, "--inpaint-fill", "fill")  # webuiapi sends inpainting_fill 0
    assert np.array_equal(pixels(result.image), pixels(filled))
    expected = cli_image(tmp_path, tiny_model_dir, *common)
    assert "Denoising strength: 0.4" in result.info["infotexts"][0]  # A1111 runs int(0.4 x 4) + 1 = 2 steps too
    # the same image sent without the data: prefix and no inpainting_fill: the server's default, original
    url, _ = server
    raw = base64.b64encode((tmp_path / "init.png").read_bytes()).decode()
    body = {"prompt": "a cat", "init_images": [raw], "mask": base64.b64encode((tmp_path / "mask.png").read_bytes())
            .decode(), "denoising_strength": 0.6, "seed": 3, "steps": 4, "sampler_name": "Euler", "cfg_scale": 7.5}
    answer = post(url, "img2img", body)
    assert answer.status_code == 200, answer.text
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert np.array_equal(pixels(image), pixels(expected))
    assert answer.json()["parameters"]["init_images"] is None  # not echoed back, as A1111


def test_models_are_listed_and_switched_through_options(api) -> None:
    titles = api.util_get_model_names()
    assert TINY_HUB_ID in titles  # the Hugging Face cache's models are offered
    served = api.util_get_current_model()
    assert served in titles
    api.util_set_model(TINY_HUB_ID, find_closest=False)
    try:
        assert api.get_options()["sd_model_checkpoint"] == TINY_HUB_ID
        result = api.txt2img(prompt="a fox", seed=1, width=64, height=64, steps=1)
        assert result.info["sd_model_name"] == TINY_HUB_ID
    finally:
        api.set_options({"sd_model_checkpoint": served})
    assert api.get_options()["sd_model_checkpoint"] == served
    # for one request only, through override_settings
    result = api.txt2img(prompt="a fox", seed=1, width=64, height=64, steps=1,
                         override_settings={"sd_model_checkpoint": TINY_HUB_ID, "CLIP_stop_at_last_layers": 2})
    assert result.info["sd_model_name"] == TINY_HUB_ID and "Clip skip: 2" in result.info["infotexts"][0]
    assert api.get_options()["sd_model_checkpoint"] == served
    refused = requests.post(f"{api.baseurl}/options", json={"sd_model_checkpoint": "nope.safetensors"}, timeout=10)
    assert refused.status_code == 422 and "not one of this server's models" in refused.text
    api.set_options({**api.get_options(), "some_a1111_setting": 3})  # the whole dict back: accepted


def test_samplers_schedulers_and_lists(api, server) -> None:
    names = api.util_get_sampler_names()
    assert {"Euler a", "DPM++ 2M", "DDIM", "UniPC", "LCM"} <= set(names)
    assert set(api.util_get_scheduler_names()) == {
        "automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "kl_optimal",
        "align_your_steps", "simple", "normal", "ddim", "beta"}
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    url, _ = server
    for path in ("sd-vae", "loras", "upscalers", "latent-upscale-modes", "face-restorers", "prompt-styles",
                 "hypernetworks"):
        assert isinstance(requests.get(f"{url}/sdapi/v1/{path}", timeout=10).json(), list), path
    assert requests.get(f"{url}/sdapi/v1/embeddings", timeout=10).json() == {"loaded": {}, "skipped": {}}
    assert "/sdapi/v1/txt2img" in requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    assert requests.get(f"{url}/docs", timeout=10).status_code == 200


def test_every_a1111_sampler_and_schedule_type_is_listed_and_taken(api, server, tiny_model_dir, tmp_path) -> None:
    """A1111 1.10's shapes; sampler_name + scheduler make the command line's picture of the same pair."""
    url, _ = server
    listed = {entry["name"]: entry for entry in requests.get(f"{url}/sdapi/v1/samplers", timeout=10).json()}
    assert {"DPM++ SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "DPM2 a"} <= set(listed)
    assert listed["DPM++ 3M SDE"] == {"name": "DPM++ 3M SDE", "aliases": ["k_dpmpp_3m_sde", "dpm++3m-sde"],
                                      "options": {"scheduler": "exponential"}}
    schedules = requests.get(f"{url}/sdapi/v1/schedulers", timeout=10).json()
    assert schedules[5] == {"name": "sgm_uniform", "label": "SGM Uniform", "aliases": ["SGMUniform"],
                            "default_rho": -1.0, "need_inner_model": True}
    assert schedules[2]["default_rho"] == 7.0 and len(schedules) == 12
    result = api.txt2img(prompt="a red fox", seed=9, width=64, height=64, steps=3, cfg_scale=7.5,
                         sampler_name="k_dpmpp_2s_a", scheduler="Beta")
    assert result.info["sampler_name"] == "DPM++ 2S a" and result.info["scheduler"] == "Beta"
    assert "Sampler: DPM++ 2S a, Schedule type: Beta," in result.info["infotexts"][0]
    expected = cli_image(tmp_path, tiny_model_dir, "a red fox", "--seed", "9", "--steps", "3", "-W", "64", "-H",
                         "64", "--scheduler", "dpm++2s-a", "--schedule", "beta")
    assert np.array_equal(pixels(result.image), pixels(expected))


def start_slow(url: str, results: list, **fields) -> threading.Thread:
    body = {"prompt": "slow", "steps": 1000, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler", **fields}
    thread = threading.Thread(target=lambda: results.append(post(url, "txt2img", body)))
    thread.start()
    return thread


def wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def progress(url: str, image: bool = False) -> dict:
    return requests.get(f"{url}/sdapi/v1/progress", params={"skip_current_image": not image}, timeout=10).json()


def test_progress_reports_steps_and_skip_and_interrupt_stop_the_run(server) -> None:
    url, _ = server
    results: list = []
    thread = start_slow(url, results, n_iter=3)
    first = wait_for(lambda: (p := progress(url, image=True))["state"]["sampling_step"] >= 2 and p)
    assert first["state"]["sampling_steps"] == 1000 and first["state"]["job_count"] == 3
    assert 0 < first["progress"] < 1 and first["eta_relative"] > 0 and first["textinfo"].startswith("Step ")
    preview = Image.open(io.BytesIO(base64.b64decode(first["current_image"])))
    assert preview.size == (64, 64)
    later = wait_for(lambda: (p := progress(url))["state"]["sampling_step"] > first["state"]["sampling_step"] and p)
    assert later["state"]["job_no"] == 0
    requests.post(f"{url}/sdapi/v1/skip", timeout=10)  # ends the first batch, goes on with the second
    wait_for(lambda: progress(url)["state"]["job_no"] == 1)
    requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)  # ends the request
    thread.join(timeout=60)
    answer = results[0]
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["all_seeds"] == [5, 6]  # the third batch never started; the two stopped ones are decoded
    wait_for(lambda: progress(url)["state"]["job_count"] == 0)
    assert progress(url)["progress"] == 0.0


def queue_size(url: str) -> int:
    return requests.get(f"{url}/queue/status", timeout=10).json()["queue_size"]


def test_eight_concurrent_requests_complete_in_order(server) -> None:
    url, _ = server
    slow: list = []
    blocker = start_slow(url, slow)
    wait_for(lambda: progress(url)["state"]["sampling_step"] >= 1)
    finished: list[tuple[int, requests.Response]] = []
    threads = []
    for number in range(8):
        body = {"prompt": f"fox {number}", "seed": 100 + number, "steps": 2, "width": 64, "height": 64}
        thread = threading.Thread(target=lambda n=number, b=body: finished.append((n, post(url, "txt2img", b))))
        thread.start()
        threads.append(thread)
        wait_for(lambda n=number: queue_size(url) == n + 1)  # queued in this order
    requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
    for thread in [blocker, *threads]:
        thread.join(timeout=120)
    assert [number for number, _ in finished] == list(range(8))
    for number, answer in finished:
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.json()["info"])["all_seeds"] == [100 + number]


def test_a_full_queue_answers_503_and_a_client_that_leaves_is_dropped(server) -> None:
    url, engine = server
    limits = engine.limits
    engine.limits = Limits(max_steps=5000, max_queue=2)
    slow: list = []
    blocker = start_slow(url, slow)
    wait_for(lambda: progress(url)["state"]["sampling_step"] >= 1)
    body = json.dumps({"prompt": "leaves", "steps": 1, "width": 64, "height": 64}).encode()
    leaving = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    leaving.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    waiting: list = []
    staying = threading.Thread(target=lambda: waiting.append(post(url, "txt2img", {"prompt": "stays", "steps": 1,
                                                                                   "width": 64, "height": 64})))
    try:
        wait_for(lambda: queue_size(url) == 1)
        staying.start()
        wait_for(lambda: queue_size(url) == 2)
        full = post(url, "txt2img", {"prompt": "one too many", "steps": 1, "width": 64, "height": 64})
        assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1
        leaving.close()  # the client goes away before its request starts: it is dropped
        wait_for(lambda: queue_size(url) == 1)
        assert progress(url)["state"]["job"] == "txt2img"  # while the slow one still runs
    finally:
        engine.limits = limits
        requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
        blocker.join(timeout=60)
        staying.join(timeout=60)
    assert waiting[0].status_code == 200


def bomb_png(side: int = 100_000) -> bytes:
    """A tiny file whose header claims side x side pixels: Pillow must refuse it before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_bad_requests_get_a_4xx_and_the_server_goes_on(server) -> None:
    url, _ = server
    good = {"prompt": "a fox", "steps": 1, "width": 64, "height": 64}
    bomb = base64.b64encode(bomb_png()).decode()
    cases = [
        ("txt2img", b'{"prompt": "a fox", "steps": ', 422, "JSON"),
        ("txt2img", {**good, "steps": "many"}, 422, "steps"),
        ("txt2img", b'{"prompt": "a fox", "steps": NaN}', 422, "Invalid steps NaN"),
        ("txt2img", {**good, "steps": True}, 422, "Invalid steps true"),
        ("txt2img", b'{"prompt": "\\ud83d", "steps": 1, "width": 64, "height": 64}', 422, "lone surrogate"),
        ("txt2img", b'{"prompt": "a fox", "hr_scale": 1e999}', 422, "Invalid hr_scale Infinity"),
        ("txt2img", {**good, "width": 100}, 422, "multiple of 8"),
        ("txt2img", {**good, "sampler_name": "Not A Sampler"}, 422, "Not A Sampler"),
        ("txt2img", {**good, "width": 4096, "height": 4096}, 422, "--max-pixels"),
        ("txt2img", b'{"prompt": "' + b"a" * (50 * 1024 * 1024) + b'"}', 413, "larger than"),
        ("img2img", {**good, "init_images": ["data:image/png;base64,not base64!"]}, 422, "base64"),
        ("img2img", {**good, "init_images": [base64.b64encode(b"not an image").decode()]}, 422, "init_images"),
        ("img2img", {**good, "init_images": [bomb]}, 422, "too many pixels"),
        ("img2img", {**good, "init_images": []}, 422, "exactly one"),
    ]
    for path, body, status, words in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = requests.post(f"{url}/sdapi/v1/{path}", data=data, headers={"Content-Type": "application/json"},
                               timeout=60)
        assert answer.status_code == status, (words, answer.text[:300])
        assert words.lower() in answer.text.lower(), answer.text[:300]
        assert set(answer.json()) == {"error", "detail", "field"}  # the ErrorBody of the schema, every time
        assert post(url, "txt2img", good).status_code == 200  # and the server goes on


def test_save_images_writes_into_outdir_only_when_asked(server, outdir) -> None:
    url, _ = server
    before = set(outdir.iterdir())
    body = {"prompt": "kept fox", "steps": 1, "width": 64, "height": 64, "seed": 11}
    assert post(url, "txt2img", body).status_code == 200
    assert set(outdir.iterdir()) == before  # save_images false: nothing written
    answer = post(url, "txt2img", {**body, "save_images": True})
    (saved,) = set(outdir.iterdir()) - before
    assert saved.name.endswith("-11-kept-fox.png")
    assert saved.read_bytes() == base64.b64decode(answer.json()["images"][0])
    assert "Seed: 11" in Image.open(saved).text["parameters"]


@pytest.mark.parametrize("error", [RuntimeError("broke on <_io.BytesIO object at 0x7f3a2c1d9e40>"), ZeroDivisionError(),
                                   UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")])
def test_whatever_checking_a_body_raises_is_a_422_not_a_500(server, monkeypatch, error) -> None:
    url, engine = server

    def broken(body):
        raise error

    monkeypatch.setattr(engine, "prepare", broken)
    answer = post(url, "txt2img", {"prompt": "a fox"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "InvalidRequest" and type(error).__name__ in answer.json()["detail"]
    assert " at 0x" not in answer.text and "Traceback" not in answer.text


def test_a_request_stuck_in_one_long_step_gets_503_soon_after_the_server_stops(tiny_model_dir) -> None:
    """The engine cannot stop a step half-way: past its grace, the running request is answered 503, so the
    process exits within seconds (the queued one gets its 503 at once)."""
    chosen = server_settings(tiny_model_dir)
    engine = Engine(chosen, ModelSpec.from_settings(chosen).checked(), Limits(), load=lambda spec: spec,
                    shutdown_grace=0.5)
    in_step, release = threading.Event(), threading.Event()

    def one_long_step(job) -> dict:
        in_step.set()
        release.wait(60)
        return {}

    engine.run = one_long_step
    engine.start()
    answers: dict = {}
    try:
        with serving(create_app(engine), engine) as url:
            threads = {name: threading.Thread(target=lambda name=name: answers.__setitem__(
                name, post(url, "txt2img", {"prompt": name, "steps": 2}))) for name in ("running", "queued")}
            threads["running"].start()
            assert in_step.wait(30)
            threads["queued"].start()
            wait_for(lambda: engine.waiting() == 1)
            closed = time.monotonic()
            engine.close()
            for thread in threads.values():
                thread.join(timeout=30)
            took = time.monotonic() - closed
    finally:
        release.set()
    assert answers["queued"].status_code == 503 and answers["queued"].json()["error"] == "ShuttingDown"
    assert answers["running"].status_code == 503
    assert "did not reach its next step within 0.5 s" in answers["running"].json()["detail"]
    assert took < 3


def test_auth_refuses_a_wrong_password(server) -> None:
    _, engine = server
    with serving(create_app(engine, {"alice": "s3cret", "bob": "pw:with:colons"}), engine) as url:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert requests.get(f"{url}{path}", timeout=10).status_code == 401
            assert requests.get(f"{url}{path}", auth=("alice", "s3cret"), timeout=10).status_code == 200
        assert requests.post(f"{url}/sdapi/v1/txt2img", data=b"{", timeout=10).status_code == 401  # before JSON
        assert requests.get(f"{url}/sdapi/v1/sd-models", timeout=10).status_code == 401
        assert requests.get(f"{url}/sdapi/v1/sd-models", auth=("alice", "wrong"), timeout=10).status_code == 401
        assert requests.get(f"{url}/sdapi/v1/options", auth=("eve", "s3cret"), timeout=10).status_code == 401
        assert requests.get(f"{url}/queue/status", auth=("alice", "nope"), timeout=10).status_code == 401
        client = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", username="bob", password="pw:with:colons")
        assert client.util_get_current_model()
        result = client.txt2img(prompt="a fox", width=64, height=64, steps=1, seed=2)
        assert result.info["all_seeds"] == [2]


def test_sd_vae_switches_between_the_servers_vae_and_the_models_own(tiny_model_dir) -> None:
    vae = str(tiny_model_dir / "vae")
    engine = make_engine(tiny_model_dir, vae=vae)
    try:
        with serving(create_app(engine), engine) as url:
            client = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1")
            assert client.get_sd_vae()[0]["filename"] == vae  # then the Hugging Face cache's VAEs
            assert client.txt2img(prompt="a fox", width=64, height=64, steps=1).info["sd_vae_name"] == "vae"
            client.set_options({"sd_vae": "None"})
            assert client.get_options()["sd_vae"] == "None"
            assert client.txt2img(prompt="a fox", width=64, height=64, steps=1).info["sd_vae_name"] is None
            refused = requests.post(f"{url}/sdapi/v1/options", json={"sd_vae": None}, timeout=10)
            assert refused.status_code == 422 and refused.json()["field"] == "sd_vae"
            assert client.get_options()["sd_vae"] == "None"  # not stored
            client.set_options({"sd_vae": "Automatic"})
            assert client.txt2img(prompt="a fox", width=64, height=64, steps=1).info["sd_vae_name"] == "vae"
    finally:
        engine.close()
