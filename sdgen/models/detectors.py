"""Detectors for detail repair (--detail, sdgen/engine/detail.py): what finds the faces, hands or people to
repaint.

Built in, needing no download: OpenCV's Haar cascades, which ship inside the opencv-python wheel (4.x):
`face` (frontal faces), `profile` (faces from the side), `eyes`, `upperbody`, `fullbody`. Any other cascade is
a `.xml` file. A YOLO model (`face_yolov8n.pt`, ADetailer's own detectors, `hand_yolov8n.pt`, ...) is a `.pt`
file read by ultralytics, which needs torchvision; where either is missing that is one line saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.errors import NAME, InvalidRequestError

CASCADES = {
    "face": "haarcascade_frontalface_default.xml",
    "profile": "haarcascade_profileface.xml",
    "eyes": "haarcascade_eye.xml",
    "upperbody": "haarcascade_upperbody.xml",
    "fullbody": "haarcascade_fullbody.xml",
}
MISSING_OPENCV = 'detail repair needs OpenCV 4.x with its cascades: pip install "sdgen[repair]"'


@dataclass(frozen=True)
class Detector:
    """A detector found, nothing loaded: its name as given and where its model is."""

    name: str
    kind: str  # "cascade" or "yolo"
    path: Path

    @property
    def label(self) -> str:
        """How the record names it: the built-in name, else the file's name (ADetailer's "ADetailer model")."""
        return self.name if self.name in CASCADES else self.path.name


def find_detector(name: str, key: str = "detail", allow_pickle: bool = True) -> Detector:
    """The detector `name`: a built-in cascade, a cascade .xml or a YOLO .pt file; InvalidRequestError
    naming it, with what to install, when it cannot run here."""
    if name in CASCADES:
        return Detector(name, "cascade", _cascade_folder(key) / CASCADES[name])
    path = Path(name).expanduser()
    if not path.is_file():
        raise InvalidRequestError(
            f"Invalid {NAME} {name!r}: no such detector; choose {', '.join(CASCADES)}, or give a cascade .xml or "
            "a YOLO .pt file.", key,
        )
    if path.suffix.lower() == ".xml":
        _cascade_folder(key)
        return Detector(name, "cascade", path)
    if path.suffix.lower() == ".pt":
        if not allow_pickle:
            raise InvalidRequestError(
                f"Invalid {NAME} {name!r}: a YOLO .pt file is a pickle that ultralytics loads whole, which can run "
                "code; pass --allow-unsafe-pickle if you trust the file.", key,
            )
        try:
            import ultralytics  # noqa: F401
        except Exception as error:  # missing, or its torchvision does not import beside this torch
            raise InvalidRequestError(
                f"Invalid {NAME} {name!r}: a YOLO detector needs ultralytics (and its torchvision), which cannot be "
                f"imported here ({type(error).__name__}); pip install ultralytics, or use a built-in detector.", key,
            ) from None
        return Detector(name, "yolo", path)
    raise InvalidRequestError(f"Invalid {NAME} {name!r}: a detector is a cascade .xml or a YOLO .pt file.", key)


def _cascade_folder(key: str) -> Path:
    try:
        import cv2
    except ImportError:
        raise InvalidRequestError(f"Invalid {NAME}: {MISSING_OPENCV}.", key) from None
    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    if not (folder / CASCADES["face"]).is_file():
        raise InvalidRequestError(f"Invalid {NAME}: this OpenCV ships no cascades (5.x dropped them); "
                                  f"{MISSING_OPENCV}.", key)
    return folder


def detect(detector: Detector, picture: Any, confidence: float = 0.3) -> list[tuple[int, int, int, int]]:
    """The boxes (left, top, right, bottom) the detector finds in an RGB picture, largest first."""
    import numpy as np

    if detector.kind == "cascade":
        import cv2

        gray = cv2.cvtColor(np.asarray(picture.convert("RGB")), cv2.COLOR_RGB2GRAY)
        smallest = max(16, min(gray.shape) // 20)
        found = cv2.CascadeClassifier(str(detector.path)).detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest)
        )
        boxes = [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]
    else:
        from ultralytics import YOLO

        result = YOLO(str(detector.path))(picture.convert("RGB"), conf=confidence, verbose=False)[0]
        boxes = [tuple(int(v) for v in box) for box in result.boxes.xyxy.tolist()]
    return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
