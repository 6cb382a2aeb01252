"""Face restoration (sdgen/engine/face_restore.py): a GFPGAN file (blank weights, sdgen/testing/tiny_upscalers.py)
found and recognised, each face of a photograph restored only inside its pasted ellipse, the checks before
loading, and the server's restore_faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdgen.engine.checking import check_request
from sdgen.engine.face_restore import ellipse_mask, face_square, restore_faces
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError
from sdgen.models.detectors import detect, find_detector
from sdgen.models.upscalers import identify, import_spandrel, load_upscaler

PHOTO = Path(__file__).parent / "data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def restorer_dir(tmp_path_factory) -> Path:
    import_spandrel()
    from sdgen.testing.tiny_upscalers import save_blank_gfpgan, save_tiny_upscalers

    folder = tmp_path_factory.mktemp("GFPGAN")
    save_blank_gfpgan(folder / "GFPGANv1.4.safetensors")
    save_tiny_upscalers(folder)
    return folder


def test_the_square_around_a_face_stays_inside_the_picture() -> None:
    assert face_square((100, 100, 150, 140), (512, 512)) == (85, 80, 165, 160)
    assert face_square((0, 0, 100, 100), (120, 300)) == (0, 0, 120, 120)


def test_each_face_is_restored_inside_its_ellipse_only(restorer_dir) -> None:
    found = identify(restorer_dir / "GFPGANv1.4.safetensors")
    assert found.architecture == "GFPGAN"
    model = load_upscaler(found)
    photo = Image.open(PHOTO).convert("RGB")
    fixed = np.asarray(restore_faces(model, photo)).astype(int)
    [box] = detect(find_detector("face"), photo)
    outside = np.asarray(ellipse_mask(photo.size, face_square(box, photo.size))) == 0
    before = np.asarray(photo).astype(int)
    assert np.array_equal(fixed[outside], before[outside])
    assert np.abs(fixed[~outside] - before[~outside]).mean() > 5


def test_face_restoration_is_checked_before_loading(no_weights_load, restorer_dir) -> None:
    folder = str(restorer_dir)
    check_request(GenerationRequest(prompt="a fox", restore_faces="GFPGANv1.4", upscaler_dir=folder))
    for overrides, message in [
        ({"restore_faces": "4x-tiny-esrgan"}, "not a face restorer \\(it is ESRGAN"),
        ({"restore_faces": "missing"}, "no such upscaler file"),
        ({"restore_faces": "GFPGANv1.4", "restore_faces_visibility": 0.0}, "must be more than 0"),
    ]:
        with pytest.raises(InvalidRequestError, match=message):
            check_request(GenerationRequest(prompt="a fox", upscaler_dir=folder, **overrides))


def test_the_servers_restore_faces_uses_its_model_and_is_off_unless_asked() -> None:
    from sdgen.serve.listings import face_restorers
    from sdgen.serve.schema import Txt2ImgBody
    from sdgen.serve.translate import request_values

    served = {"restore_faces": "GFPGANv1.4", "upscaler_dir": "/models/GFPGAN"}
    assert request_values(Txt2ImgBody(prompt="a", restore_faces=True), served)["restore_faces"] == "GFPGANv1.4"
    assert request_values(Txt2ImgBody(prompt="a"), served)["restore_faces"] is None
    with pytest.raises(InvalidRequestError, match="start sdgen serve with --restore-faces MODEL"):
        request_values(Txt2ImgBody(prompt="a", restore_faces=True), {})
    assert face_restorers(served) == [{"name": "GFPGANv1.4", "cmd_dir": "/models/GFPGAN"}]
    assert face_restorers({}) == []
