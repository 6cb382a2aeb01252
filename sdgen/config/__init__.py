"""Configuration: the option table and the layered settings, read before any model or tensor exists.

- options.py      the table of every generation option: flags, defaults, settings keys, record columns
- optiontable.py  the table's row type and the conversions its rows share
- settings.py     built-in < preset < user config < SDGEN_* environment: the layered settings
- schedulers.py   the schedulers by name (the table; diffusers' classes are made on use)
- images.py       the checked image loader: formats, sizes and pixel limits of input images

The request these make is checked against model files and prompts, in sdgen/engine/request.py.
"""
