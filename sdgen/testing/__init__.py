"""Test models: tiny random Stable Diffusion parts, saved as normal model folders.

No weights can be shipped or downloaded where sdgen is tested, so tests (and `sdgen doctor`) build tiny
random models in code and drive sdgen's real loading code and loop with them.
"""
