"""scripts/make_random_sd15.py builds the real SD1.5 architecture (checked on the meta device: no memory)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "make_random_sd15.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_random_sd15", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_configs_give_sd15_parameter_counts() -> None:
    from accelerate import init_empty_weights

    with init_empty_weights():
        unet, vae, text_encoder = load_script().build_sd15_modules()

    def millions(module) -> float:
        return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)

    assert millions(unet) == 859.5  # SD1.5's U-Net
    assert millions(vae) == 83.7
    assert millions(text_encoder) == 123.1  # CLIP ViT-L/14 text tower
    assert text_encoder.config.vocab_size == 49408
    assert unet.config.cross_attention_dim == 768 == text_encoder.config.hidden_size
