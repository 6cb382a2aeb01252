"""The preprocessors that need a detector model, through `controlnet_aux` (the `detect` extra), with the
detector weights of lllyasviel/Annotators from the Hugging Face cache (sdgen/models/annotators.py).

controlnet_aux's package __init__ imports every detector at once, and some need torchvision or scikit-image,
which may not import beside the installed torch (torchvision from PyPI does not beside torch's CPU wheels).
So each detector's own submodule is imported alone, under a package object made without running that
__init__: the detectors whose submodule imports work, the others are refused with the import's reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

INSTALL = "pip install 'sdgen[detect]' && pip install --no-deps controlnet_aux==0.0.10"


@dataclass(frozen=True)
class Detector:
    """One detector preprocessor: controlnet_aux's submodule and class, the Annotators files it loads, and
    the call's fixed arguments (the thresholds, where it has them, are added per unit)."""

    submodule: str
    detector_class: str
    files: tuple[str, ...]
    call: dict[str, Any] = field(default_factory=dict)
    thresholds: tuple[str, str] | None = None  # the call's names for threshold_a and threshold_b


# A1111's ControlNet extension's module names -> the detector behind each
DETECTORS = {
    "openpose": Detector("open_pose", "OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth",
                         "facenet.pth"), {"include_hand": False, "include_face": False}),
    "openpose_full": Detector("open_pose", "OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth",
                              "facenet.pth"), {"include_hand": True, "include_face": True}),
    "depth": Detector("midas", "MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",)),
    "depth_zoe": Detector("zoe", "ZoeDetector", ("ZoeD_M12_N.pt",)),
    "depth_leres": Detector("leres", "LeresDetector", ("res101.pth", "latest_net_G.pth"),
                            thresholds=("thr_a", "thr_b")),
    "normal_bae": Detector("normalbae", "NormalBaeDetector", ("scannet.pt",)),
    "hed": Detector("hed", "HEDdetector", ("ControlNetHED.pth",)),
    "pidinet": Detector("pidi", "PidiNetDetector", ("table5_pidinet.pth",)),
    "lineart": Detector("lineart", "LineartDetector", ("sk_model.pth", "sk_model2.pth"), {"coarse": False}),
    "lineart_coarse": Detector("lineart", "LineartDetector", ("sk_model.pth", "sk_model2.pth"), {"coarse": True}),
    "lineart_anime": Detector("lineart_anime", "LineartAnimeDetector", ("netG.pth",)),
    "mlsd": Detector("mlsd", "MLSDdetector", ("mlsd_large_512_fp32.pth",), thresholds=("thr_v", "thr_d")),
}
# the extension's segmenters (UniFormer, OneFormer) are not in controlnet_aux: named, and refused
NOT_AVAILABLE = {
    name: "controlnet_aux has no ADE20k/COCO segmenter; make the map elsewhere and give it with :none"
    for name in ("seg_ofade20k", "seg_ufade20k", "seg_ofcoco")
}

_loaded: dict[tuple[str, str], Any] = {}  # (module, folder) -> the detector, loaded once per process
_loading = threading.Lock()


def _submodule(name: str) -> Any:
    """controlnet_aux.<name>, imported without the package's __init__ when that fails."""
    import importlib
    import importlib.util
    import sys

    if "controlnet_aux" not in sys.modules:
        spec = importlib.util.find_spec("controlnet_aux")
        if spec is None:
            raise ModuleNotFoundError("controlnet_aux")
        sys.modules["controlnet_aux"] = importlib.util.module_from_spec(spec)  # its __init__ is not run
    return importlib.import_module(f"controlnet_aux.{name}")


def detector_problem(module: str) -> str | None:
    """Why the detector `module` cannot run here (None: it can, if its weights are there)."""
    import importlib.util

    if module in NOT_AVAILABLE:
        return f"the {module} preprocessor is not available: {NOT_AVAILABLE[module]}"
    if importlib.util.find_spec("controlnet_aux") is None:
        return f"the {module} preprocessor needs controlnet_aux: {INSTALL}"
    try:
        _submodule(DETECTORS[module].submodule)
    except ImportError as error:
        return (f"the {module} preprocessor does not work with the libraries installed here (controlnet_aux's "
                f"{DETECTORS[module].submodule} fails to import: {error}); make the map elsewhere, give it with :none")
    return None


def check_detector(module: str, key: str | None = "control") -> None:
    """InvalidRequestError, before anything loads, when the detector cannot run: the library, or its weights."""
    from sdgen.models.annotators import annotator_folder

    problem = detector_problem(module)
    if problem:
        raise InvalidRequestError(f"Invalid {{name}} {module!r}: {problem}.", key)
    annotator_folder(module, DETECTORS[module].files, key)


def _detector(module: str) -> Any:
    from sdgen.models.annotators import annotator_folder

    folder = str(annotator_folder(module, DETECTORS[module].files))
    with _loading:
        if (module, folder) not in _loaded:
            spec = DETECTORS[module]
            detector_class = getattr(_submodule(spec.submodule), spec.detector_class)
            _loaded[(module, folder)] = detector_class.from_pretrained(folder)
        return _loaded[(module, folder)]


def detect(module: str, image: Image.Image, resolution: int, threshold_a: float, threshold_b: float) -> Image.Image:
    """The map the detector `module` makes of `image` (RGB), at `resolution` on its short side."""
    from sdgen.engine.plugins.control_builtins import check_scaled_size

    check_scaled_size(*image.size, resolution)  # controlnet_aux scales by the short side too
    import torch

    check_detector(module)
    spec = DETECTORS[module]
    arguments = dict(spec.call)
    if spec.thresholds is not None:
        arguments.update(zip(spec.thresholds, (threshold_a, threshold_b), strict=True))
    with torch.inference_mode():
        made = _detector(module)(
            image, detect_resolution=resolution, image_resolution=resolution, output_type="pil", **arguments
        )
    return made.convert("RGB")
