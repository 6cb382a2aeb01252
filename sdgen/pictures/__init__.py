"""Pictures of the diffusion process, all drawn from the loop's per-step callback or the model's own parts.

- previews.py  latents -> RGB at three qualities: approx (a fixed linear map), tiny (TAESD), full (the VAE)
- sheets.py    labelled grids of images (contact sheets, X/Y grids), and animations
- sequence.py  the denoising sequence: x_t and predicted x0 at chosen steps, as a sheet and an animation
- live.py      the live preview: a PNG rewritten as the steps run, and the terminal's picture
- watch.py     what a run draws besides its images (the per-step callbacks, the pictures at the end)

The pictures that explain noising and schedules are in sdgen/explain/; X/Y grids of generation options are a
run, sdgen/runs/grid.py.
"""
