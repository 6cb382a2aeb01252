"""T2I-Adapter (sdgen/engine/plugins/t2i_adapter.py) against diffusers' StableDiffusionAdapterPipeline on the tiny
model, float32, within 1/255: guided, with weight 1 and 0.5 (its adapter_conditioning_scale) and a
one-channel adapter fed in grey; the spelling of --adapter, finding the folders, the record and its read-back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdgen.engine.pipeline import generate
from sdgen.engine.plugins.t2i_adapter import AdapterUnit, parse_adapter
from sdgen.errors import InvalidRequestError

from .conftest import SIZE
from .test_pipeline import PROMPT, STEPS, pixels, reference_pipeline, request

SEED = 11


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny colour adapter and a tiny one-channel (sketch-like) one, as diffusers folders."""
    from sdgen.testing.tiny_t2i_adapter import save_tiny_t2i_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {
        "rgb": save_tiny_t2i_adapter(root / "t2iadapter_depth_tiny", 0),
        "grey": save_tiny_t2i_adapter(root / "t2iadapter_sketch_tiny", 1, in_channels=1),
    }


@pytest.fixture(scope="module")
def adapter_image(tmp_path_factory) -> Path:
    from PIL import Image

    y, x = np.mgrid[0:SIZE, 0:SIZE]
    array = np.stack([x * 4, (((x - 30) ** 2 + (y - 34) ** 2) < 200) * 255, y * 4], axis=-1)
    path = tmp_path_factory.mktemp("adapter-image") / "map.png"
    Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(path)
    return path


def diffusers_adapter_image(parts, folder: Path, image: Path, guidance: float, scale: float) -> np.ndarray:
    import torch
    from diffusers import StableDiffusionAdapterPipeline, T2IAdapter
    from PIL import Image

    base = reference_pipeline(parts, "euler-a")
    adapter = T2IAdapter.from_pretrained(folder).eval()
    pipe = StableDiffusionAdapterPipeline(
        **{name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        adapter=adapter, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    picture = Image.open(image).convert("L" if adapter.config.in_channels == 1 else "RGB")
    result = pipe(
        PROMPT, image=picture, num_inference_steps=STEPS, width=SIZE, height=SIZE, guidance_scale=guidance,
        adapter_conditioning_scale=scale, generator=torch.Generator("cpu").manual_seed(SEED),
    )
    return pixels(result.images[0])


def ours(parts, adapters: list[str], guidance: float = 7.5) -> np.ndarray:
    asked = request(scheduler="euler-a", seed=SEED, guidance_scale=guidance, adapters=tuple(adapters))
    [result] = generate(asked, parts)
    return pixels(result.image)


@pytest.fixture(scope="module")
def plain(tiny_parts) -> dict[float, np.ndarray]:
    """The pictures without an adapter, by guidance scale."""
    return {guidance: ours(tiny_parts, [], guidance) for guidance in (7.5,)}


@pytest.mark.parametrize(("kind", "guidance", "weight"), [("rgb", 7.5, 1.0), ("grey", 7.5, 0.5)])
def test_an_adapter_matches_diffusers_adapter_pipeline(
    tiny_parts, plain, adapter_dirs, adapter_image, kind: str, guidance: float, weight: float
) -> None:
    expected = diffusers_adapter_image(tiny_parts, adapter_dirs[kind], adapter_image, guidance, weight)
    got = ours(tiny_parts, [f"{adapter_dirs[kind]}={adapter_image}:{weight}"], guidance)
    assert np.abs(got - expected).max() <= 1
    assert np.abs(got - plain[guidance]).max() > 2, "the adapter must change the picture"


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("sketch=lines.png", AdapterUnit("sketch", "lines.png")),
        ("sketch=lines.png:0.5", AdapterUnit("sketch", "lines.png", 0.5)),
        ("a/b=C:\\maps\\e.png:0.5:fill:canny", AdapterUnit("a/b", "C:\\maps\\e.png", 0.5, "fill", "canny")),
        ("depth=d.png:resize", AdapterUnit("depth", "d.png", resize="resize")),
    ],
)
def test_the_spelling_of_adapter(text: str, unit: AdapterUnit) -> None:
    assert parse_adapter(text) == unit


@pytest.mark.parametrize(
    ("text", "message"),
    [("lines.png", "joined by '='"), ("s=l.png:11", "from 0 to 10"), ("s=l.png:1:0.5", "one number only")],
)
def test_bad_spellings_name_the_value_and_the_form(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        parse_adapter(text)
    assert text in str(caught.value) and "MODEL=IMAGE" in str(caught.value)


def test_finding_adapters_by_short_name_and_refusing_files(adapter_dirs, tmp_path) -> None:
    from sdgen.models.t2i_adapter import find_t2i_adapter, t2i_adapter_name

    root = str(adapter_dirs["rgb"].parent)
    assert find_t2i_adapter("sketch", root) == str(adapter_dirs["grey"])
    assert t2i_adapter_name(find_t2i_adapter("depth", root)) == "t2iadapter_depth_tiny"
    assert find_t2i_adapter("TencentARC/t2iadapter_canny_sd15v2") == "TencentARC/t2iadapter_canny_sd15v2"
    (tmp_path / "t2iadapter_canny_sd15v2.pth").write_bytes(b"x")
    with pytest.raises(InvalidRequestError, match="pickled"):
        find_t2i_adapter(str(tmp_path / "t2iadapter_canny_sd15v2.pth"))
    with pytest.raises(InvalidRequestError, match="tiny"):  # two folders hold the word
        find_t2i_adapter("tiny", root)
    with pytest.raises(InvalidRequestError, match="no such folder"):
        find_t2i_adapter("nothing-here", root)


def test_bad_adapters_are_refused_before_loading(adapter_dirs, adapter_image, tmp_path, no_weights_load) -> None:
    from sdgen.engine.checking import check_request

    for adapters, extra, message in [
        ((f"{adapter_dirs['rgb']}={tmp_path / 'missing.png'}",), {}, "no such file"),
        ((f"{tmp_path / 'none'}={adapter_image}",), {}, "no such folder"),
        ((f"{adapter_dirs['rgb']}={adapter_image}",), {"cache_interval": 3}, "cache-interval"),
    ]:
        with pytest.raises(InvalidRequestError, match=message):
            check_request(request(adapters=adapters, **extra))


def test_the_record_a1111_text_and_replay_of_an_adapter(tiny_parts, adapter_dirs, adapter_image, tmp_path) -> None:
    from sdgen.engine.request import GenerationRequest
    from sdgen.record.metadata import a1111_parameters, png_info, result_record
    from sdgen.record.replay import request_values_from_image

    adapter = f"{adapter_dirs['grey']}={adapter_image}:0.5:fill"
    asked = request(seed=SEED, num_inference_steps=2, adapters=(adapter,), adapter_dir=str(tmp_path))
    [result] = generate(asked, tiny_parts)
    assert result_record(result, tiny_parts)["adapter"] == [adapter]
    assert (
        'ControlNet 0: "Module: none, Model: t2iadapter_sketch_tiny, Weight: 0.5, Resize Mode: Resize and Fill, '
        'Guidance Start: 0.0, Guidance End: 1.0, Control Mode: Balanced"'
    ) in a1111_parameters(result, tiny_parts)
    result.image.save(tmp_path / "made.png", pnginfo=png_info(result, tiny_parts))
    values = request_values_from_image(tmp_path / "made.png")
    assert values["adapter"] == [adapter] and values["adapter_dir"] == str(tmp_path)
    [again] = generate(GenerationRequest.from_settings(values), tiny_parts)
    assert np.array_equal(pixels(again.image), pixels(result.image))
