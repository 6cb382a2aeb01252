"""Finding weights: model names, folders, checkpoint files, VAEs and adapters (loading them onto a device is
sdgen/engine/loader.py).

- layout.py  the parts of a Stable Diffusion 1.x model in diffusers' folder layout, and its checks
- hub.py     model names: local folders, Hub ids through the Hugging Face cache, old ids mapped to new
- single_file.py  one LDM/A1111 checkpoint file: its family from the header, pickles read weights-only
- vae.py          --vae: another VAE from a file, a folder or a Hub id
- adapters.py     LoRAs (fused, put back exactly) and textual-inversion embeddings
- catalog.py      `sdgen models`: the cache and the models folder
"""

from __future__ import annotations

from sdgen.models.hub import ModelSource, canonical_model_id, hub_cache_dir, is_cached

__all__ = ["ModelSource", "canonical_model_id", "hub_cache_dir", "is_cached"]
