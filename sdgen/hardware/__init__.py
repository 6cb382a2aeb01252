"""The machine a run uses.

- devices.py  the device and dtype a run uses (CUDA, MPS, CPU; auto precision)
- machine.py  the CPU's model and vector units, torch's threads, a measured matrix-multiply peak
- speed.py    speed and memory: what to do to the loaded parts for the device they run on
"""
