"""The algorithm, in reading order: the checked request -> the model's parts -> prompt embeddings -> latents ->
the denoising loop (with its plug-ins) -> the image.

- request.py     GenerationRequest, ModelSpec, OutputSpec, PicturesSpec: checked once, before any weights load
                 (the checks read model files and prompt limits, so the request sits above models/ and prompts/)
- loader.py      load_model: each part loaded on its own and placed; StableDiffusionParts and its switches
- text.py        prompt text -> CLIP embeddings, A1111's way (75-token chunks, emphasis, clip skip)
- latents.py     initial noise, the img2img starting point, the VAE's encode and decode
- denoise.py     the denoising loop and its protocol types (noise predictor, step-end hook, per-step info)
- inpaint.py     masks and the inpainting models' extra input channels, the per-step blend
- pipeline.py    generate(): one request through the steps above
- plugins/       step savers and guidance modifiers, called by the loader and the loop
"""
