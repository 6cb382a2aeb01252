"""The option table's rows of the few-step recipes: TCD's eta (gamma), the stochastic share of each TCD step
(sdgen/config/schedulers.py's `tcd`, docs/fast.md). The rest of the table, and what a row says:
sdgen/config/options.py."""

from __future__ import annotations

from sdgen.config.optiontable import REQUEST, Option

# TCD's paper and diffusers' TCDScheduler.step: eta 0.3 by default; 0 is deterministic (like a consistency ODE
# step), higher values add more fresh noise per step (less detail, sometimes cleaner with more steps).
TCD_ETA_DEFAULT = 0.3

FAST_ROWS: tuple[Option, ...] = (
    Option(
        "tcd_eta", float, TCD_ETA_DEFAULT,
        "TCD's eta (gamma), 0 to 1: the share of fresh noise in each step of --scheduler tcd (0: deterministic).",
        REQUEST, shapes_picture=True, needs="scheduler",
    ),
)
