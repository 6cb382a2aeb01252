"""The one place that finds and loads weights.

- layout.py  the parts of a Stable Diffusion 1.x model in diffusers' folder layout, and its checks
- hub.py     model names: local folders, Hub ids through the Hugging Face cache, old ids mapped to new
- loader.py  load each part on its own and place it: StableDiffusionParts, which also owns the
             speed and memory switches (as diffusers keeps `enable_*` on the pipeline that owns them)
- single_file.py  one LDM/A1111 checkpoint file: its family from the header, pickles read weights-only
- convert.py      `sdgen convert`: a pickled checkpoint to .safetensors
- vae.py          --vae: another VAE from a file, a folder or a Hub id
- adapters.py     LoRAs (fused, put back exactly) and textual-inversion embeddings
- catalog.py      `sdgen models`: the cache and the models folder
"""

from __future__ import annotations

from sdgen.models.hub import ModelSource, canonical_model_id, hub_cache_dir, is_cached
from sdgen.models.loader import StableDiffusionParts, load_model

__all__ = ["ModelSource", "StableDiffusionParts", "canonical_model_id", "hub_cache_dir", "is_cached", "load_model"]
