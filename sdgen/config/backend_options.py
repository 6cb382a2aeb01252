"""The option table's rows of the back end that runs the model's parts: PyTorch (the default, the exact
float32 path) or OpenVINO (sdgen/models/openvino.py, sdgen/engine/openvino_parts.py, docs/openvino.md), and
OpenVINO's int8 weight compression. The rest of the table, and what a row says: sdgen/config/options.py."""

from __future__ import annotations

from sdgen.config.optiontable import MODEL, Option

BACKENDS = ("torch", "openvino")
QUANTIZE_CHOICES = ("none", "int8", "int8-hybrid")

BACKEND_ROWS: tuple[Option, ...] = (
    Option(
        "backend", str, "torch",
        "torch, or openvino (pip install \"sdgen[openvino]\"): the U-Net, VAE and text encoder converted to "
        "OpenVINO and compiled for the CPU, sdgen's own loop unchanged; changes the picture slightly.",
        MODEL, shapes_picture=True,
    ),
    Option(
        "quantize", str, "none",
        "none, int8 (NNCF's int8 weight compression of the OpenVINO models), or int8-hybrid (the U-Net's "
        "activations in int8 too, calibrated on a few prompts run once); needs --backend openvino; changes the "
        "picture.",
        MODEL, shapes_picture=True,
    ),
)
