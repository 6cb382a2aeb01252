"""Pictures of the diffusion process, all drawn from the loop's per-step callback or the model's own parts.

- previews.py  latents -> RGB at three qualities: approx (a fixed linear map), tiny (TAESD), full (the VAE)
- sheets.py    labelled grids of images (contact sheets, X/Y grids), and animations
- sequence.py  the denoising sequence: x_t and predicted x0 at chosen steps, as a sheet and an animation
- live.py      the live preview: a PNG rewritten as the steps run, and the terminal's picture
- noising.py   forward noising q(x_t | x_0) at chosen timesteps, in latent or pixel space
- schedules.py noise schedules (alpha-bar against t) and the timesteps a scheduler visits
- grid.py      X/Y grids of any generation options, from one model load
"""
