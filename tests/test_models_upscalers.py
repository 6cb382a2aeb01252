"""Finding and recognising upscaler files (sdgen/models/upscalers.py): by name in --upscaler-dir, from the
header alone, unknown files and pickles refused in one line, a pickle never running code."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from sdgen.errors import InvalidRequestError
from sdgen.models.upscalers import find_upscaler, identify, list_upscaler_files, load_upscaler


@pytest.fixture(scope="module")
def upscaler_dir(tmp_path_factory) -> Path:
    from sdgen.models.upscalers import import_spandrel
    from sdgen.testing.tiny_upscalers import save_tiny_upscalers

    import_spandrel()  # without torchvision where it cannot be imported

    folder = tmp_path_factory.mktemp("ESRGAN")
    save_tiny_upscalers(folder)
    return folder


def test_an_upscaler_is_found_by_name_and_recognised_from_its_header(upscaler_dir, monkeypatch) -> None:
    import safetensors.torch

    path = find_upscaler("4X-Tiny-ESRGAN", str(upscaler_dir))  # A1111 matches names without case
    assert path == upscaler_dir / "4x-tiny-esrgan.safetensors"
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("weights were read"))
    assert identify(path).architecture == "ESRGAN"
    assert [p.stem for p in list_upscaler_files(upscaler_dir)] == ["2x-tiny-compact", "2x-tiny-swinir",
                                                                  "4x-tiny-esrgan"]


def test_a_file_spandrel_does_not_know_is_one_line_naming_it(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"some.weight": torch.zeros(3, 3)}, str(tmp_path / "mystery.safetensors"))
    with pytest.raises(InvalidRequestError, match="mystery.safetensors'.*spandrel knows no upscaler architecture"):
        identify(tmp_path / "mystery.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"not a file")
    with pytest.raises(InvalidRequestError, match="not a readable .safetensors file"):
        identify(tmp_path / "broken.safetensors")


class Boom:
    def __reduce__(self):
        return (Path.touch, (Path(RAN),))


RAN = ""


def test_a_pickled_upscaler_is_refused_then_read_weights_only_and_never_runs_code(upscaler_dir, tmp_path) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(upscaler_dir / "2x-tiny-compact.safetensors"))
    torch.save({"params_ema": weights}, tmp_path / "2x-compact.pth")  # Real-ESRGAN's own layout
    with pytest.raises(InvalidRequestError, match=r"pickled file \(.pth\).*sdgen convert.*--allow-unsafe-pickle"):
        find_upscaler("2x-compact", str(tmp_path))
    found = identify(find_upscaler("2x-compact", str(tmp_path), allow_pickle=True))
    assert found.architecture == "RealESRGAN Compact" and load_upscaler(found).scale == 2
    global RAN
    RAN = str(tmp_path / "ran")
    with open(tmp_path / "evil.pth", "wb") as file:
        pickle.dump({"conv.weight": Boom()}, file)
    with pytest.raises(InvalidRequestError, match="cannot be read safely"):
        identify(find_upscaler(str(tmp_path / "evil.pth"), None, allow_pickle=True))
    assert not Path(RAN).exists()
