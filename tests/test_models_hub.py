"""Model names: local folders, Hub ids through the cache, revisions, aliases, an unreachable Hub."""

from __future__ import annotations

import logging

import pytest

from sdgen.engine.loader import load_model
from sdgen.engine.request import ModelSpec
from sdgen.errors import ModelNotFoundError
from sdgen.models.hub import resolve_model_folder

from .conftest import TINY_COMMIT, TINY_HUB_ID, run_cli


def test_hub_id_resolves_from_the_cache_offline(hf_home) -> None:
    parts = load_model(ModelSpec(model=TINY_HUB_ID, device="cpu", dtype="float32"))
    assert parts.source.model == TINY_HUB_ID
    assert parts.source.commit == TINY_COMMIT
    assert parts.source.folder.parent.name == "snapshots"
    # the cache names blobs by their sha256: the U-Net's hash comes for free
    unet_file = parts.source.folder / "unet" / "diffusion_pytorch_model.safetensors"
    import hashlib

    assert parts.source.unet_sha256 == hashlib.sha256(unet_file.read_bytes()).hexdigest()


def test_hub_revision_pins_a_commit(hf_home) -> None:
    source = resolve_model_folder(ModelSpec(model=TINY_HUB_ID, revision=TINY_COMMIT), None)
    assert source.commit == TINY_COMMIT
    with pytest.raises(ModelNotFoundError, match="at revision 'v9'"):
        resolve_model_folder(ModelSpec(model=TINY_HUB_ID, revision="v9"), None)


def test_model_missing_from_cache_offline_names_model_cache_and_fix(hf_home) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model_folder(ModelSpec(model="nobody/nothing"), None)
    message = str(caught.value)
    assert "'nobody/nothing'" in message
    assert str(hf_home / "hub") in message
    assert "offline mode is on" in message
    assert "run `sdgen models download nobody/nothing` with network access, or pass a local path" in message


def test_old_runwayml_id_is_an_alias_with_a_note(hf_home, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sdgen")
    with pytest.raises(ModelNotFoundError, match="'stable-diffusion-v1-5/stable-diffusion-v1-5'"):
        resolve_model_folder(ModelSpec(model="runwayml/stable-diffusion-v1-5"), None)
    assert "runwayml/stable-diffusion-v1-5 is now served as stable-diffusion-v1-5/stable-diffusion-v1-5" in caplog.text


def _closed_port() -> int:
    """A local port nothing listens on (bound, then closed): connecting is refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch) -> str:
    """In process, online with HF_ENDPOINT at a closed port and the probe not yet made (all put back after)."""
    import huggingface_hub

    from sdgen.models import hub

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # restored after; the probe sets it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub, "_probe", {})
    monkeypatch.setattr(hub, "_noted", [])
    return endpoint


def test_unreachable_hub_is_one_quick_line_without_retries(tiny_model_dir, tmp_path) -> None:
    """Online (HF_HUB_OFFLINE unset only here) with the Hub unreachable (a closed local port), stderr not a
    terminal: one probe, then the one line, no retry lines (23 s of them before), no library warnings."""
    import time

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    args = ["a fox", "--model", str(tiny_model_dir), "--vae", "stabilityai/sd-vae-ft-mse", "-o", f"{tmp_path}/out/"]
    start = time.monotonic()
    result = run_cli(args, HF_HUB_OFFLINE="", HF_ENDPOINT=endpoint)
    took = time.monotonic() - start
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr == (
        "sdgen: error: VAE (--vae) 'stabilityai/sd-vae-ft-mse' is not in the Hugging Face cache "
        f"({hf_home_cache()}) and the Hub ({endpoint}) could not be reached: run `sdgen models download "
        "stabilityai/sd-vae-ft-mse` when online, or pass a local path.\n"
    )
    assert took < 15, took


def hf_home_cache() -> str:
    import os

    return os.environ["HF_HUB_CACHE"]


def test_unreachable_hub_the_model_missing_is_one_line_before_loading(unreachable_hub, tmp_path, no_weights_load):
    result = CliRunner().invoke(app, ["a fox", "--model", "nobody/nothing", "--progress", "none", "-o", f"{tmp_path}/"])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        f"sdgen: error: Model 'nobody/nothing' is not in the Hugging Face cache ({hf_home_cache()}) and the Hub "
        f"({unreachable_hub}) could not be reached: run `sdgen models download nobody/nothing` when online, or pass "
        "a local path."
    ), result.stderr
    assert "Retry" not in result.stderr and "Could not reach" not in result.stderr


def test_unreachable_hub_falls_back_to_the_cache_with_one_note(unreachable_hub, hf_home, tmp_path) -> None:
    import huggingface_hub

    args = ["a fox", "--model", TINY_HUB_ID, "-W", "64", "-H", "64", "--steps", "1", "--progress", "none",
            "-o", str(tmp_path / "x.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.png").is_file()
    note = f"Note: the Hub ({unreachable_hub}) could not be reached; using the cached copy (Model {TINY_HUB_ID})."
    assert result.stderr.count("could not be reached") == 1 and note in result.stderr, result.stderr
    assert "Retry" not in result.stderr and "Could not reach" not in result.stderr
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True  # the libraries too: no part asks the Hub again


def test_models_download_with_the_hub_unreachable_says_to_run_it_again_online(unreachable_hub) -> None:
    from sdgen.models import hub

    result = CliRunner().invoke(app, ["models", "download", "nobody/nothing"])
    assert result.exit_code == 1, result.output
    assert result.stderr.endswith(f"and the Hub ({unreachable_hub}) could not be reached: run it again when online.\n")
    assert result.stderr.count("\n") == 1
    assert hub._probe == {unreachable_hub: False}


def test_not_a_folder_nor_a_hub_id(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="is not a model folder, a checkpoint file or a Hub id"):
        resolve_model_folder(ModelSpec(model=str(tmp_path / "missing")), None)
    with pytest.raises(ModelNotFoundError, match="is not a model folder, a checkpoint file or a Hub id"):
        resolve_model_folder(ModelSpec(model="not a hub id"), None)


@pytest.fixture
def online_listing(monkeypatch):
    """The Hub's file listing answers (as if online); the download itself is what each test breaks."""
    import huggingface_hub

    from sdgen.models import hub

    files = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        *(f"{p}/config.json" for p in ("unet", "vae", "text_encoder")),
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probe", {huggingface_hub.constants.ENDPOINT: True})  # as if it answered
    monkeypatch.setattr(hub, "_list_repo_files", lambda repo_id, spec: files)

    def breaks_with(error: Exception) -> None:
        def download(*args, **kwargs):
            assert kwargs["local_files_only"] is False
            raise error

        monkeypatch.setattr(huggingface_hub, "snapshot_download", download)

    return breaks_with


@pytest.mark.parametrize(
    "error, message",
    [
        (OSError(28, "No space left on device"), "Downloading 'someone/model' into {cache} failed: No space left"),
        (OSError(30, "Read-only file system"), "Cannot write the Hugging Face cache {cache} (Read-only file system)"),
        (PermissionError(13, "Permission denied"), "Cannot write the Hugging Face cache {cache} (Permission denied)"),
        (ConnectionResetError(104, "Connection reset by peer"), "The download of 'someone/model' into {cache} broke"),
        (TimeoutError("read timed out"), "The download of 'someone/model' into {cache} broke off (TimeoutError"),
    ],
)
def test_download_failures_say_what_happened(online_listing, hf_home, error, message) -> None:
    from sdgen.errors import ModelLoadError

    online_listing(error)
    with pytest.raises(ModelLoadError) as caught:
        resolve_model_folder(ModelSpec(model="someone/model"), None)
    assert message.format(cache=hf_home / "hub") in str(caught.value)
    assert "not in the Hugging Face cache" not in str(caught.value)
    if "broke off" in message or "No space" in message:
        assert "run again" in str(caught.value) and "resume" in str(caught.value)


# --- every Hub-backed part, offline, before anything loads ----------------------------------------------

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sdgen.cli import app  # noqa: E402


@pytest.mark.parametrize(
    ("extra", "what", "repo"),
    [
        (["--vae", "stabilityai/sd-vae-ft-mse"], "VAE (--vae)", "stabilityai/sd-vae-ft-mse"),
        (["--preset", "turbo"], "Decoder (--decoder)", "madebyollin/taesd"),
        (["--preview", "tiny", "--preview-file", "live.png"], "Preview model", "madebyollin/taesd"),
        (["--preset", "lcm"], "LoRA", "latent-consistency/lcm-lora-sdv1-5"),
        (["--control", "lllyasviel/sd-controlnet-canny=CONTROL"], "ControlNet", "lllyasviel/sd-controlnet-canny"),
        (["--adapter", "TencentARC/t2iadapter_canny_sd15v2=CONTROL"], "T2I-Adapter",
         "TencentARC/t2iadapter_canny_sd15v2"),
        (["--model", "nobody/nothing"], "Model", "nobody/nothing"),
    ],
)
def test_offline_each_hub_part_missing_from_the_cache_is_one_line_before_loading(
    tiny_model_dir, tmp_path, no_weights_load, extra, what, repo
) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "control.png")
    extra = [value.replace("CONTROL", str(tmp_path / "control.png")) for value in extra]
    args = ["a fox", "--model", str(tiny_model_dir), "-o", f"{tmp_path}/out/", *extra]
    result = CliRunner().invoke(app, [arg.replace("live.png", str(tmp_path / "live.png")) for arg in args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"sdgen: error: {what}") and result.stderr.count("\n") == 1, result.stderr
    assert f"{repo!r} is not in the Hugging Face cache" in result.stderr
    assert f"offline mode is on (--offline or HF_HUB_OFFLINE=1): run `sdgen models download {repo}`" in result.stderr


def test_offline_a_presets_lora_file_of_a_repo_of_several_is_one_line_before_loading(
    tiny_model_dir, tmp_path, no_weights_load
) -> None:
    """--preset hyper names one file of Hyper-SD's repo (owner/name/file.safetensors): checked in the cache too."""
    args = ["a fox", "--model", str(tiny_model_dir), "-o", f"{tmp_path}/out/", "--preset", "hyper"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("sdgen: error: LoRA 'ByteDance/Hyper-SD/Hyper-SD15-1step-lora.safetensors' is not")
    assert "run `hf download ByteDance/Hyper-SD Hyper-SD15-1step-lora.safetensors`" in result.stderr


def test_offline_an_ip_adapter_of_the_hub_is_checked_in_the_cache_before_loading(
    tmp_path, tiny_model_dir, no_weights_load
) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "face.png")
    args = ["a fox", "--model", str(tiny_model_dir), "-o", f"{tmp_path}/out/", "--ip-adapter", "h94/IP-Adapter",
            "--ip-image", str(tmp_path / "face.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(
        "sdgen: error: IP-Adapter (--ip-adapter) 'h94/IP-Adapter/models/ip-adapter_sd15.safetensors' is not in the "
        "Hugging Face cache"
    )
    assert "run `hf download h94/IP-Adapter models/ip-adapter_sd15.safetensors` with network access" in result.stderr


def test_offline_an_ip_adapters_image_encoder_is_checked_too(tmp_path, tiny_model_dir, no_weights_load) -> None:
    from PIL import Image

    from .conftest import put_in_hub_cache

    adapter = tmp_path / "repo" / "models" / "ip-adapter_sd15.safetensors"
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"not read before loading")
    put_in_hub_cache(tmp_path / "repo", "sdgen-test/ip-no-encoder", "0123456789abcdef0123456789abcdef01234567")
    Image.new("RGB", (64, 64)).save(tmp_path / "face.png")
    args = ["a fox", "--model", str(tiny_model_dir), "-o", f"{tmp_path}/out/", "--ip-adapter",
            "sdgen-test/ip-no-encoder", "--ip-image", str(tmp_path / "face.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(
        "sdgen: error: IP-Adapter image encoder 'sdgen-test/ip-no-encoder/models/image_encoder/model.safetensors' is "
        "not in the Hugging Face cache"
    )


def test_models_download_offline_says_to_go_online() -> None:
    result = CliRunner().invoke(app, ["models", "download", "nobody/nothing"])
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "offline mode is on (--offline or HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE (and drop --offline) and run it "
        "again with network access.\n"
    )
    assert "--model PATH" not in result.stderr


def test_a_model_path_that_is_not_there_is_refused_by_name(tmp_path, no_weights_load) -> None:
    result = CliRunner().invoke(app, ["a fox", "--model", str(tmp_path / "nothere"), "-o", f"{tmp_path}/"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"sdgen: error: Model '{tmp_path}/nothere' is not a model folder")
    assert "(there is no such file or folder)" in result.stderr and "sdgen models make-tiny DIR" in result.stderr


def test_models_download_of_a_part_fetches_its_configs_and_safetensors(monkeypatch) -> None:
    from sdgen.engine.request import ModelSpec
    from sdgen.models import hub

    files = ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "README.md"]
    monkeypatch.setattr(hub, "_list_repo_files", lambda repo_id, spec: files)
    patterns = hub._patterns_from_the_hub("madebyollin/taesd", ModelSpec(), None, any_repo=True)
    assert patterns == ["config.json", "diffusion_pytorch_model.safetensors"]
    with pytest.raises(hub.ModelLoadError, match="madebyollin/taesd"):  # as --model it is no whole model
        hub._patterns_from_the_hub("madebyollin/taesd", ModelSpec(), None)
