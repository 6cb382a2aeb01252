"""The option table's rows of scaling out on Ray: `sdgen batch --ray` (sdgen/runs/batch/ray_run.py, the cluster
in sdgen/hardware/ray_cluster.py) and `sdgen serve --replicas` (sdgen/serve/ray_serve.py); docs/ray.md. The rest
of the table, and what a row says: sdgen/config/options.py."""

from __future__ import annotations

from sdgen.config.optiontable import BATCH, RUN, SERVE, Option

SCALE_ROWS: tuple[Option, ...] = (
    Option(
        "ray", str, None,
        "Run the batch on Ray: local (or --ray alone) starts a cluster on this machine, auto joins the running "
        "one, ray://HOST:PORT or HOST:PORT names one. Needs sdgen[ray].",
        RUN, commands=frozenset({BATCH}), layered=False, empty="off: this process (or accelerate's)",
    ),
    Option(
        "workers", int, None, "--ray: model copies (Ray actors), each taking the next chunk when it is free.",
        RUN, commands=frozenset({BATCH}), layered=False,
        empty="the cluster's GPUs, else its CPUs / 4 (4 threads each)",
    ),
    Option(
        "gather", bool, False,
        "--ray: send each image back to this machine and write it here (no shared folder needed).",
        RUN, commands=frozenset({BATCH}), layered=False,
    ),
    Option(
        "replicas", int, None, "Serve from N model replicas on Ray Serve, each with its own queue. Needs sdgen[ray].",
        RUN, commands=frozenset({SERVE}), layered=False, empty="off: one process, no Ray",
    ),
    Option(
        "min_replicas", int, None, "Ray Serve autoscaling: fewest replicas (with --max-replicas).",
        RUN, commands=frozenset({SERVE}), layered=False, empty="--replicas, fixed",
    ),
    Option(
        "max_replicas", int, None, "Ray Serve autoscaling: most replicas, added while requests wait.",
        RUN, commands=frozenset({SERVE}), layered=False, empty="--replicas, fixed",
    ),
)
