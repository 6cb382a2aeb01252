"""Loading: local folders, Hub ids through the cache, variants, and the errors for broken models."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from sdgen.config import ModelSpec
from sdgen.devices import Placement
from sdgen.errors import ModelLoadError, ModelNotFoundError
from sdgen.models import _download_patterns, check_model_folder, load_model, resolve_model_folder

from .conftest import TINY_COMMIT, TINY_HUB_ID, run_cli

CPU = Placement("cpu", "float32", "float32")


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_loads_each_part_from_a_local_folder(tiny_parts, tiny_model_dir) -> None:
    import torch

    assert type(tiny_parts.unet).__name__ == "UNet2DConditionModel"
    assert type(tiny_parts.vae).__name__ == "AutoencoderKL"
    assert type(tiny_parts.text_encoder).__name__ == "CLIPTextModel"
    assert "CLIPTokenizer" in type(tiny_parts.tokenizer).__name__
    assert tiny_parts.unet.dtype == torch.float32 and tiny_parts.unet.device.type == "cpu"
    assert tiny_parts.scheduler_config["beta_schedule"] == "scaled_linear"
    assert tiny_parts.source.folder == tiny_model_dir.resolve()
    assert tiny_parts.vae_scale_factor == 2


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
    assert "offline mode is on" in message and "--model PATH" in message


def test_old_runwayml_id_is_an_alias_with_a_note(hf_home, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sdgen")
    with pytest.raises(ModelNotFoundError, match="'stable-diffusion-v1-5/stable-diffusion-v1-5'"):
        resolve_model_folder(ModelSpec(model="runwayml/stable-diffusion-v1-5"), None)
    assert "runwayml/stable-diffusion-v1-5 is now served as stable-diffusion-v1-5/stable-diffusion-v1-5" in caplog.text


def test_unreachable_hub_fails_fast_with_a_clear_message(tmp_path) -> None:
    """Online mode with the Hub unreachable (a closed local port): no hang, one clear line, exit 1."""
    result = run_cli(
        ["a fox", "--model", "nobody/nothing", "-o", str(tmp_path / "x.png")],
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_ETAG_TIMEOUT="2",
    )
    assert result.returncode == 1, result.stderr
    stderr = result.stderr.decode()
    assert "sdgen: error: Model 'nobody/nothing' is not in the Hugging Face cache" in stderr
    assert "the Hub is unreachable" in stderr
    assert "Traceback" not in stderr


def test_unreachable_hub_falls_back_to_the_cache(hf_home, tmp_path) -> None:
    result = run_cli(
        [
            "a fox",
            "--model",
            TINY_HUB_ID,
            "-W",
            "64",
            "-H",
            "64",
            "--steps",
            "1",
            "-o",
            str(tmp_path / "x.png"),
        ],
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT="http://127.0.0.1:9",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.png").is_file()


def test_fp16_variant_is_preferred_when_running_in_float16(tiny_model_dir) -> None:
    chosen = check_model_folder(tiny_model_dir, "tiny", "fp16")
    assert chosen["unet"].name == "diffusion_pytorch_model.fp16.safetensors"
    assert chosen["text_encoder"].name == "model.fp16.safetensors"
    assert check_model_folder(tiny_model_dir, "tiny", None)["unet"].name == "diffusion_pytorch_model.safetensors"


def test_fp16_variant_falls_back_to_full_weights(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    (model / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    chosen = check_model_folder(model, "m", "fp16")
    assert chosen["vae"].name == "diffusion_pytorch_model.safetensors"
    assert chosen["unet"].name == "diffusion_pytorch_model.fp16.safetensors"


def test_hub_download_asks_for_exactly_one_weights_file_per_part() -> None:
    files = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
    ]
    fp16 = _download_patterns(files, "fp16", "m")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fp16
    assert "unet/diffusion_pytorch_model.safetensors" not in fp16
    assert "vae/diffusion_pytorch_model.safetensors" in fp16  # no fp16 VAE: full weights
    full = _download_patterns(files, None, "m")
    assert "unet/diffusion_pytorch_model.safetensors" in full and not any(".bin" in p for p in full)


def test_pickle_only_weights_are_refused(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    for weights in (model / "unet").glob("*.safetensors"):
        weights.unlink()
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match=r"only pickled weights for unet \(unet/diffusion_pytorch_model.bin\)"):
        load_model(ModelSpec(model=str(model), device="cpu"))


def test_missing_part_names_the_file(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    shutil.rmtree(model / "vae")
    with pytest.raises(ModelLoadError, match=r"is incomplete: .*vae/config.json is missing"):
        load_model(ModelSpec(model=str(model), device="cpu"))


def test_corrupt_weights_name_the_file(tiny_model_dir, tmp_path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(ModelLoadError) as caught:
        load_model(ModelSpec(model=str(model), device="cpu", dtype="float32"))
    assert str(weights) in str(caught.value)
    assert "corrupt or truncated" in str(caught.value)


def test_not_a_folder_nor_a_hub_id(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="is not a model folder or a Hub id"):
        resolve_model_folder(ModelSpec(model=str(tmp_path / "missing")), None)
    with pytest.raises(ModelNotFoundError, match="is not a model folder or a Hub id"):
        resolve_model_folder(ModelSpec(model="not a hub id"), None)


def test_part_callback_reports_each_part_with_its_size(tiny_model_dir) -> None:
    seen = []
    load_model(
        ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32"), on_part=lambda p, n: seen.append((p, n))
    )
    assert [part for part, _ in seen] == ["tokenizer", "text_encoder", "unet", "vae"]
    sizes = dict(seen)
    assert sizes["unet"] == (tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
