"""--backend openvino's U-Net (sdgen/engine/openvino_unet.py) on the tiny model: ControlNet's residuals,
T2I-Adapter's features and IP-Adapter's image embeddings and scale as inputs of its converted forms, each
picture within one level (1/255) of torch float32's with the same options (the bound: tests/test_openvino.py's
first test)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import SIZE
from .test_openvino import _load, _pixels, _request


@pytest.fixture(scope="module")
def steering(tiny_parts, tmp_path_factory):
    """A tiny ControlNet, a tiny T2I-Adapter and a control image (sdgen/testing)."""
    from PIL import Image

    from sdgen.testing.tiny_controlnet import save_tiny_controlnet
    from sdgen.testing.tiny_t2i_adapter import save_tiny_t2i_adapter

    root = tmp_path_factory.mktemp("steering")
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    array = np.stack([x * 4, (((x - 30) ** 2 + (y - 34) ** 2) < 200) * 255, y * 4], axis=-1)
    Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(root / "map.png")
    controlnet = save_tiny_controlnet(tiny_parts.unet, root / "tiny-controlnet", 0)
    return controlnet, save_tiny_t2i_adapter(root / "t2iadapter_tiny", 0), root / "map.png"


def test_controlnet_and_t2i_adapter_steer_the_converted_unet_as_they_steer_torchs(tiny_parts, ov_parts, steering):
    # the residuals and features are inputs of the converted U-Net ("unet-control", "unet-adapter"); the ControlNet
    # itself is converted once (weight 1, scaled after) and serves every weight and mode
    controlnet, adapter, image = steering
    plain = _pixels(tiny_parts)
    for given in ({"controls": (f"{controlnet}={image}:0.7:prompt",)},
                  {"controls": (f"{controlnet}={image}:1.2:0.2:0.8",), "adapters": (f"{adapter}={image}:0.8",)}):
        torch_image, ov_image = _pixels(tiny_parts, _request(**given)), _pixels(ov_parts, _request(**given))
        difference = np.abs(torch_image - ov_image)
        assert difference.max() <= 1 and difference.mean() < 0.05, (given, difference.max(), difference.mean())
        assert np.abs(torch_image - plain).mean() > 1, given  # it steers: the picture moved
    slots = set(ov_parts.openvino.compiled)
    assert {"unet-control", "unet-control-adapter"} <= slots, slots
    assert len([slot for slot in slots if slot.startswith("controlnet:")]) == 1, slots


def test_ip_adapter_runs_in_the_converted_unet_at_any_scale(tiny_parts, ov_parts, tiny_model_dir, steering, tmp_path):
    # the image embeddings and the scale are inputs of the converted U-Net ("unet-ip"), the adapter's projection
    # and attention traced into it: base and Plus, two scales on one converted model, beside a ControlNet's
    # residuals ("unet-control-ip"), each torch float32's picture within the bound; a new load with it
    # cached loads no torch weights
    from PIL import Image

    from sdgen.testing.tiny_ip_adapter import save_tiny_ip_adapter_repo

    repo = save_tiny_ip_adapter_repo(tiny_parts.unet, tmp_path / "IP-Adapter")
    y, x = np.mgrid[0:48, 0:40]
    Image.fromarray(np.stack([x * 6, y * 5, x * 0 + 90], -1).astype(np.uint8)).save(tmp_path / "look.png")
    plain = _pixels(tiny_parts)
    controlnet, _, image = steering
    for model, scale, controls in ((repo, 0.7, ()), (repo, 1.3, ()), (repo, 1.3, (f"{controlnet}={image}:0.7",)),
                                   (repo / "models" / "ip-adapter-plus_sd15.safetensors", 0.6, ())):
        request = _request(ip_adapter=str(model), ip_images=(str(tmp_path / "look.png"),), ip_scale=scale,
                           controls=controls)
        torch_image, ov_image = _pixels(tiny_parts, request), _pixels(ov_parts, request)
        difference = np.abs(torch_image - ov_image)
        assert difference.max() <= 1 and difference.mean() < 0.05, (model, scale, difference.max())
        assert np.abs(torch_image - plain).mean() > 1, (model, scale)  # it steers: the picture moved
    assert {"unet-ip", "unet-control-ip"} <= set(ov_parts.openvino.compiled), set(ov_parts.openvino.compiled)
    assert ov_parts.openvino.unet_extra is None
    warm = _load(tiny_model_dir, dtype="float32")
    assert np.array_equal(_pixels(warm, request), ov_image)
    assert warm.openvino.weights.loads == [], warm.openvino.weights.loads
