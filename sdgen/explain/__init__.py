"""Pictures that explain diffusion itself, without generating an image from a prompt.

- noising.py    forward noising q(x_t | x_0) at chosen timesteps, in latent or pixel space
- schedules.py  noise schedules (alpha-bar against t) and the timesteps a scheduler visits
"""
