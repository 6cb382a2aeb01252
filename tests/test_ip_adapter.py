"""IP-Adapter (sdgen/engine/plugins/ip_adapter.py) against diffusers' StableDiffusionPipeline after `load_ip_adapter`
and `set_ip_adapter_scale` on the tiny model, float32, within 1/255: base with one image, Plus with two; the U-Net
back to its own attention afterwards; finding the files (a folder, a file, a Hub id in the cache); refusals before
loading; the record, A1111's text and the read-back; the command line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from sdgen.engine.pipeline import generate
from sdgen.errors import InvalidRequestError

from .conftest import SIZE, put_in_hub_cache
from .test_pipeline import PROMPT, STEPS, pixels, reference_pipeline, request

SEED = 5
BASE, PLUS = "ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors"


@pytest.fixture(scope="module")
def ip_repo(tiny_parts, tmp_path_factory) -> Path:
    """h94/IP-Adapter's layout in little: models/{base, plus}.safetensors and models/image_encoder/."""
    from sdgen.testing.tiny_ip_adapter import save_tiny_ip_adapter_repo

    return save_tiny_ip_adapter_repo(tiny_parts.unet, tmp_path_factory.mktemp("ip") / "IP-Adapter")


@pytest.fixture(scope="module")
def ip_images(tmp_path_factory) -> list[Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("ip-images")
    y, x = np.mgrid[0:48, 0:40]
    arrays = [np.stack([x * 6, y * 5, x * 0 + 90], -1), np.repeat((((x - 20) ** 2 + (y - 24) ** 2) < 150)[..., None]
                                                                  * 255, 3, axis=-1)]
    paths = [root / "gradient.png", root / "disc.png"]
    for path, array in zip(paths, arrays, strict=True):
        Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(path)
    return paths


def diffusers_ip_image(parts, repo: Path, weight_name: str, images, scale: float, guidance: float) -> np.ndarray:
    """diffusers' pipeline on a copy of the tiny U-Net (load_ip_adapter changes the U-Net it is given)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    base = reference_pipeline(parts, "euler-a")
    pipe = StableDiffusionPipeline(
        **{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "scheduler")},
        unet=copy.deepcopy(parts.unet), safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(str(repo), subfolder="models", weight_name=weight_name)
    pipe.set_ip_adapter_scale(scale)
    pictures = [Image.open(path).convert("RGB") for path in images]
    result = pipe(
        PROMPT, ip_adapter_image=[pictures], num_inference_steps=STEPS, width=SIZE, height=SIZE,
        guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(SEED),
    )
    return pixels(result.images[0])


def ours(parts, guidance: float = 7.5, **ip) -> np.ndarray:
    [result] = generate(request(scheduler="euler-a", seed=SEED, guidance_scale=guidance, **ip), parts)
    return pixels(result.image)


@pytest.fixture(scope="module")
def plain(tiny_parts) -> dict[float, np.ndarray]:
    """The pictures without an IP-Adapter, by guidance scale (made before any IP-Adapter run of this module)."""
    return {guidance: ours(tiny_parts, guidance) for guidance in (7.5,)}


@pytest.mark.parametrize(
    ("weight_name", "count", "scale", "guidance"),
    [(BASE, 1, 0.7, 7.5), (PLUS, 2, 0.5, 7.5)],
)
def test_ip_adapter_matches_diffusers_load_ip_adapter(
    tiny_parts, plain, ip_repo, ip_images, weight_name: str, count: int, scale: float, guidance: float
) -> None:
    expected = diffusers_ip_image(tiny_parts, ip_repo, weight_name, ip_images[:count], scale, guidance)
    model = str(ip_repo) if weight_name == BASE else str(ip_repo / "models" / weight_name)  # the folder finds BASE
    images = tuple(str(path) for path in ip_images[:count])
    got = ours(tiny_parts, guidance, ip_adapter=model, ip_images=images, ip_scale=scale)
    assert np.abs(got - expected).max() <= 1
    assert np.abs(got - plain[guidance]).max() > 2, "the IP-Adapter must change the picture"


def test_the_unet_gets_its_own_attention_back(tiny_parts, plain, ip_repo, ip_images) -> None:
    """Run after the comparisons: the U-Net has had both adapters on and off; scale 0 is the plain picture."""
    unet = tiny_parts.unet
    zero = ours(tiny_parts, ip_adapter=str(ip_repo), ip_images=(str(ip_images[0]),), ip_scale=0.0)
    assert np.abs(zero - plain[7.5]).max() <= 1, "scale 0: the adapter's tokens count for nothing"
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None
    assert not any("IPAdapter" in type(processor).__name__ for processor in unet.attn_processors.values())
    assert np.array_equal(ours(tiny_parts), plain[7.5])


def test_finding_the_adapter_and_its_encoder(ip_repo, tmp_path, monkeypatch) -> None:
    from sdgen.models.ip_adapter import adapter_file, encoder_folder, find_ip_adapter

    assert find_ip_adapter(str(ip_repo)).file == str(ip_repo / "models" / BASE)
    plus = find_ip_adapter(str(ip_repo / "models" / PLUS))
    assert plus.name == "ip-adapter-plus_sd15" and encoder_folder(plus, None) == ip_repo / "models" / "image_encoder"
    assert encoder_folder(plus, str(tmp_path)) == tmp_path
    put_in_hub_cache(ip_repo, "sdgen-test/tiny-ip-adapter", "89abcdef0123456789abcdef0123456789abcdef")
    hub = find_ip_adapter("sdgen-test/tiny-ip-adapter")
    assert (hub.repo, hub.file) == ("sdgen-test/tiny-ip-adapter", f"models/{BASE}")
    assert adapter_file(hub).read_bytes() == (ip_repo / "models" / BASE).read_bytes()
    assert (encoder_folder(hub, None) / "config.json").is_file()
    assert find_ip_adapter(f"sdgen-test/tiny-ip-adapter/models/{PLUS}").file == f"models/{PLUS}"
    (tmp_path / "ip-adapter_sd15.bin").write_bytes(b"x")
    for name, message in [(str(tmp_path / "ip-adapter_sd15.bin"), "pickled"), (str(tmp_path), "holds neither"),
                          ("./nothing-here", "no such file")]:
        with pytest.raises(InvalidRequestError, match=message):
            find_ip_adapter(name)


def test_bad_ip_adapter_requests_are_refused_before_loading(
    ip_repo, ip_images, tmp_path, tiny_model_dir, no_weights_load
) -> None:
    from sdgen.config.options import describe
    from sdgen.engine.checking import check_request

    image = (str(ip_images[0]),)
    for values, message in [
        ({"ip_images": image}, "--ip-image: images for an IP-Adapter need --ip-adapter"),
        ({"ip_adapter": str(ip_repo)}, "--ip-adapter"),
        ({"ip_adapter": str(ip_repo), "ip_images": image, "ip_scale": 11.0}, "--ip-scale 11.0: from 0 to 10"),
        ({"ip_adapter": str(ip_repo), "ip_images": image, "pag_scale": 3.0}, "with --pag-scale"),
        ({"ip_adapter": str(ip_repo), "ip_images": (str(tmp_path / "none.png"),)}, "no such file"),
        ({"ip_adapter": str(ip_repo), "ip_images": image, "ip_encoder": str(tmp_path)}, "not an image encoder"),
    ]:
        with pytest.raises(InvalidRequestError) as caught:
            check_request(request(**values))
        assert message in describe(caught.value), describe(caught.value)
    from sdgen.engine.request import ModelSpec
    from sdgen.errors import ModelNotFoundError

    model = ModelSpec(model=str(tiny_model_dir)).checked()  # offline, a Hub adapter: in the cache, as every Hub part
    with pytest.raises(ModelNotFoundError, match="'sdgen-test/not-cached/models/ip-adapter_sd15.safetensors' is"):
        check_request(request(ip_adapter="sdgen-test/not-cached", ip_images=image), model)


def test_the_record_a1111_text_and_replay_of_an_ip_adapter(tiny_parts, ip_repo, ip_images, tmp_path) -> None:
    from sdgen.engine.request import GenerationRequest
    from sdgen.record.metadata import a1111_parameters, png_info, result_record
    from sdgen.record.replay import request_values_from_image

    images = tuple(str(path) for path in ip_images)
    asked = request(seed=SEED, num_inference_steps=2, ip_adapter=str(ip_repo), ip_images=images, ip_scale=0.8)
    [result] = generate(asked, tiny_parts)
    record = result_record(result, tiny_parts)
    assert (record["ip_adapter"], record["ip_image"], record["ip_scale"]) == (str(ip_repo), list(images), 0.8)
    assert (
        'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15, Weight: 0.8, Resize Mode: Crop and '
        'Resize, Guidance Start: 0.0, Guidance End: 1.0, Control Mode: Balanced"'
    ) in a1111_parameters(result, tiny_parts)
    result.image.save(tmp_path / "made.png", pnginfo=png_info(result, tiny_parts))
    values = request_values_from_image(tmp_path / "made.png")
    [again] = generate(GenerationRequest.from_settings(values), tiny_parts)
    assert np.array_equal(pixels(again.image), pixels(result.image))


def test_the_command_line_takes_both_adapters_and_records_them(tiny_model_dir, ip_repo, ip_images, tmp_path) -> None:
    """In process (Typer's runner): the flags reach the PNG's record (replayed by --from in the record tests), and
    a bad flag exits 2 with one line."""
    from PIL import Image
    from typer.testing import CliRunner

    from sdgen.cli.app import app
    from sdgen.testing.tiny_t2i_adapter import save_tiny_t2i_adapter

    adapter = f"{save_tiny_t2i_adapter(tmp_path / 't2iadapter_tiny')}={ip_images[1]}:0.7"
    common = ["-m", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "--steps", "2", "-W", "64", "-H",
              "64", "-s", "3"]
    first = tmp_path / "first.png"
    args = ["a fox", *common, "--adapter", adapter, "--ip-adapter", str(ip_repo), "--ip-image", str(ip_images[0]),
            "--ip-scale", "0.6", "-o", str(first)]
    runner = CliRunner()
    done = runner.invoke(app, args, env={"HF_HUB_OFFLINE": "1"})
    assert done.exit_code == 0, done.output
    record = json.loads(Image.open(first).info["sdgen"])
    assert record["adapter"] == [adapter] and record["ip_image"] == [str(ip_images[0])] and record["ip_scale"] == 0.6
    done = runner.invoke(app, ["a fox", *common, "--ip-image", str(ip_images[0]), "-o", str(tmp_path / "x.png")])
    lines = done.stderr.strip().splitlines()
    assert done.exit_code == 2 and len(lines) == 1 and "--ip-image" in lines[0], done.stderr
