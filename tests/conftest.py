"""Shared fixtures: the tiny random Stable Diffusion, saved as a model folder and as a Hub cache entry.

Nothing here touches the network: HF_HUB_OFFLINE=1 and a private HF_HOME are set before any Hugging Face
library is imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="sdgen-test-hf-home-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ.pop("HF_ENDPOINT", None)
# The developer's own sdgen settings must not leak in: no SDGEN_* variables, a user config that does not exist.
for _name in [name for name in os.environ if name.startswith("SDGEN_")]:
    del os.environ[_name]
os.environ["SDGEN_CONFIG"] = os.path.join(_HF_HOME, "no-user-config.toml")
os.environ["SDGEN_CACHE_DIR"] = os.path.join(_HF_HOME, "sdgen-cache")  # model hashes, compile cache: not ~/.cache
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _one_share_of_the_cpus_per_test_process() -> None:
    """pytest-xdist's workers (pyproject's -n 2) each on their own share of the CPUs, before torch starts its
    threads: two processes with a thread per core each would spin on one another's cores (OpenMP waits busy),
    slower than one process. sdgen counts the cores of its affinity (hardware/threads.py), so every torch,
    OpenVINO and subprocess of a worker stays on the worker's share."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= count:
        os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) % count::count])


_one_share_of_the_cpus_per_test_process()

import pytest  # noqa: E402

TINY_HUB_ID = "sdgen-test/tiny-sd"
TINY_COMMIT = "0123456789abcdef0123456789abcdef01234567"
SIZE = 64  # 64x64 images: 32x32 latents with the tiny VAE's 2x downsampling


@pytest.fixture(autouse=True)
def _sdgen_logger_as_pytest_left_it():
    """A CLI run sets the "sdgen" logger up for a terminal (its own handler, no propagation, maybe quiet),
    which would hide notes from caplog; a CLI run inside a module fixture does so before any test-level
    fixture could save the state, so each test starts from the logger as Python makes it."""
    import logging

    logger = logging.getLogger("sdgen")  # every sdgen module's `log` (one object: checked)
    logger.handlers[:], logger.propagate, logger.disabled = [], True, False
    logger.setLevel(logging.NOTSET)  # also clears the cached isEnabledFor answers
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a local diffusers folder, with fp32 and fp16-variant weights."""
    from sdgen.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd", fp16_variant=True)


@pytest.fixture(scope="session")
def hf_home(tiny_model_dir: Path) -> Path:
    """Put the tiny model in the Hugging Face cache under TINY_HUB_ID."""
    put_in_hub_cache(tiny_model_dir, TINY_HUB_ID, TINY_COMMIT)
    return Path(_HF_HOME)


def put_in_hub_cache(folder: Path, repo_id: str, commit: str) -> None:
    """A folder as a Hub repo in the Hugging Face cache, in the hub's own layout: blobs named by sha256,
    snapshots/<commit>/ of symlinks to them, refs/main holding the commit."""
    repo = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for source in folder.rglob("*"):
        if source.is_file():
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
            blob = repo / "blobs" / digest
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, blob)
            link = snapshot / source.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture(scope="session")
def tiny_parts(tiny_model_dir: Path):
    """The tiny model loaded once on the CPU in float32 (the reference-exact setting)."""
    from sdgen.engine.loader import load_model
    from sdgen.engine.request import ModelSpec

    return load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture
def no_weights_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to load weights (for 'rejected before loading' tests)."""
    import sdgen.engine.loader
    import sdgen.models.hub

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights were loaded, but the input should have been rejected first")

    monkeypatch.setattr(sdgen.engine.loader, "load_model", refuse)
    monkeypatch.setattr(sdgen.models.hub, "resolve_model_folder", refuse)


def run_cli(args: list[str], **env: str):
    """Run the real console entry point in a subprocess; returns CompletedProcess with bytes."""
    import subprocess
    import sys

    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "sdgen", *args], capture_output=True, env=full_env, timeout=240, check=False
    )


@pytest.fixture(scope="session")
def tiny_autoencoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random AutoencoderTiny: the stand-in for TAESD (madebyollin/taesd) in --preview tiny."""
    from sdgen.testing.tiny_model import build_tiny_autoencoder

    return build_tiny_autoencoder(tmp_path_factory.mktemp("models") / "tiny-taesd")


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    """A test module's own cache folder of OpenVINO's converted models (and sdgen's other caches)."""
    cache = tmp_path_factory.mktemp("openvino-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SDGEN_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="module")
def ov_parts(tiny_model_dir, ov_cache):
    """The tiny model on OpenVINO in float32, its parts converted into the module's own ov_cache."""
    from sdgen.engine.loader import load_model
    from sdgen.engine.model_spec import ModelSpec

    return load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", backend="openvino", dtype="float32"))
