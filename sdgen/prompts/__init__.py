"""Prompts as people write them for AUTOMATIC1111: emphasis and BREAK (emphasis.py), `<lora:name:0.8>`
tags and the LoRA and embedding files a prompt names (networks.py), wildcards and alternatives through
dynamicprompts, read only inside --wildcard-dir (wildcards.py), and the limits on the work a prompt may ask
for (limits.py). Standard library only at import time: every prompt is checked before any weights load."""
