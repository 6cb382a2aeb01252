"""Runs: one command's work from request to files on disk, using the engine, the record and the hardware.

- generate.py    `sdgen PROMPT`: load once, generate, write and record each image
- batch/         `sdgen batch`: many prompts, one model load, a manifest, resume
- grid.py        X/Y grids of any generation options, from one model load
- progress.py    the progress bar and per-step reports
- convert.py     `sdgen convert`: a pickled checkpoint to .safetensors
- doctor.py      `sdgen doctor`: what is installed and what the machine can do
"""
