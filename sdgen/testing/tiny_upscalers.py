"""Tiny random upscalers for the tests, saved as .safetensors in the layouts spandrel recognises: ESRGAN
(RRDBNet, 4x), Real-ESRGAN's compact net (SRVGGNetCompact, 2x) and SwinIR (2x). Random weights make noise,
not pictures; what the tests check is that sdgen reads them as spandrel does and tiles them faithfully.
Where torchvision cannot be imported, import spandrel through sdgen.models.upscalers.import_spandrel first."""

from __future__ import annotations

from pathlib import Path


def tiny_upscaler_modules(seed: int = 0) -> dict[str, object]:
    """name -> a small random network of each architecture, built with spandrel's own classes."""
    import torch
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    return {
        "4x-tiny-esrgan": ESRGAN(num_filters=8, num_blocks=1, scale=4),
        "2x-tiny-compact": Compact(num_feat=8, num_conv=2, upscale=2),
        "2x-tiny-swinir": SwinIR(
            img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
            upsampler="pixelshuffledirect",
        ),
    }


def save_tiny_upscalers(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write each tiny upscaler as NAME.safetensors in `folder`; returns name -> file."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, module in tiny_upscaler_modules(seed).items():
        state = {key: value.contiguous() for key, value in module.state_dict().items()}  # type: ignore[attr-defined]
        files[name] = folder / f"{name}.safetensors"
        save_file(state, str(files[name]))
    return files


def save_blank_gfpgan(path: Path) -> Path:
    """A GFPGAN file spandrel recognises, every weight zero (in float16, half the size): GFPGAN's size is fixed
    (86 M weights), so the file is 173 MB, written without drawing a random number. It makes a flat picture,
    which is all the tests need: a face changed where it was pasted, nothing else."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.GFPGAN import GFPGAN

    with torch.device("meta"):
        module = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                        fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    state = {key: torch.zeros(value.shape, dtype=torch.float16) for key, value in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
