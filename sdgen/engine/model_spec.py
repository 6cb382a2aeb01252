"""Which weights to load and where to run them: ModelSpec as given, CheckedModelSpec once checked.

Defaults and the settings keys feeding each field come from the option table (sdgen/config/options.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.config.options import MODEL, default
from sdgen.config.specs import fields_for
from sdgen.errors import NAME, InvalidRequestError
from sdgen.hardware.devices import normalize_device, normalize_dtype, normalize_rng
from sdgen.hardware.threads import choose_threads

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.models.single_file import Checkpoint

DEFAULT_SIZE = 512  # the side of an SD 1.x image when neither the model's configs nor the request say


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to load and where to run them."""

    model: str = default("model")  # Hub id or local diffusers folder
    vae: str | None = default("vae")  # another VAE: file, folder or Hub id (sdgen/models/vae.py)
    models_dir: str | None = default("models_dir")  # where --model NAME finds NAME.safetensors (A1111's way)
    model_config: str | None = default("model_config")  # architecture configs of a single-file model
    prediction_type: str | None = default("prediction_type")  # epsilon or v_prediction; None: the model's
    allow_unsafe_pickle: bool = default("allow_unsafe_pickle")  # pickled checkpoints, read weights-only
    revision: str | None = default("revision")  # Hub branch, tag or commit to pin
    device: str = default("device")  # auto, cpu, mps, cuda, cuda:N
    dtype: str = default("dtype")  # auto, float32, float16, bfloat16
    rng: str = default("rng")  # where the initial noise is drawn: cpu (portable) or device
    threads: int | None = default("threads")  # torch's CPU threads; None: one per physical core (hardware/threads.py)
    offline: bool = default("offline")  # never touch the network; use the Hugging Face cache only
    cache_dir: str | None = None  # Hugging Face cache folder; None = the usual one (HF_HOME ...)
    # speed and memory (sdgen/hardware/speed.py)
    attention_slicing: bool = default("attention_slicing")
    vae_slicing: bool = default("vae_slicing")
    vae_tiling: bool = default("vae_tiling")
    offload: str = default("offload")  # none, model, sequential (CUDA only)
    compile: bool = default("compile")
    decoder: str | None = default("decoder")  # a tiny autoencoder for the final decode (TAESD)
    token_merging: float = default("token_merging")  # tomesd's ratio; 0: off
    backend: str = default("backend")  # torch, or openvino (sdgen/engine/openvino_parts.py)
    quantize: str = default("quantize")  # none, or int8 (OpenVINO's weights through NNCF)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> ModelSpec:
        """Build from effective settings (sdgen.config.settings keys); absent keys keep the defaults above."""
        return cls(**fields_for(cls, MODEL, values))

    def checked(self) -> CheckedModelSpec:
        """Check spellings and the checkpoint's header (read once, kept) without probing hardware or loading
        weights. A checked spec returns itself."""
        if not self.model or not self.model.strip():
            raise InvalidRequestError(
                f"Invalid {NAME} '': give a Hub id (owner/name) or a local model folder.", "model"
            )
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            raise InvalidRequestError(
                f"Invalid {NAME} {self.prediction_type!r}: choose epsilon or v_prediction.", "prediction_type"
            )
        from sdgen.models.catalog import find_in_models_dir
        from sdgen.models.single_file import inspect_checkpoint, is_checkpoint_file

        model = self.model
        if self.models_dir and not Path(model).expanduser().exists():
            if not Path(str(self.models_dir)).expanduser().is_dir():
                raise InvalidRequestError(f"Invalid {NAME} {str(self.models_dir)!r}: no such folder.", "models_dir")
            model = find_in_models_dir(model, str(self.models_dir)) or model
        checkpoint = None
        if is_checkpoint_file(model):  # which family, from the header: refused by name before loading
            checkpoint = inspect_checkpoint(model, self.allow_unsafe_pickle)
        if self.vae is not None:
            from sdgen.models.vae import vae_source

            vae_source(str(self.vae))  # a missing file or a pickle: an error now, before any weights load
        from sdgen.engine import plugins

        plugins.check_options(self, MODEL)  # --token-merging, --decoder ...: each plug-in checks its own
        if self.threads is not None:
            choose_threads(self.threads)  # a bad --threads: an error now
        from sdgen.models.openvino import check_backend, check_quantize_model

        check_backend(self)  # --backend openvino, --quantize int8 and what they cannot run with
        check_quantize_model(self.quantize, model, checkpoint.in_channels if checkpoint is not None else None)
        from sdgen.models.layout import native_size

        family = checkpoint.family if checkpoint is not None else None
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(ModelSpec)}
        return CheckedModelSpec(
            **values | {
                "model": model,
                "decoder": self.decoder or None,
                "device": "cpu" if self.backend == "openvino" else normalize_device(self.device),
                "dtype": normalize_dtype(self.dtype),
                "rng": normalize_rng(self.rng),
            },
            checkpoint=checkpoint,
            native_size=native_size(model, self.model_config, self.prediction_type, family) or DEFAULT_SIZE,
        )

@dataclass(frozen=True)
class CheckedModelSpec(ModelSpec):
    """A ModelSpec that passed ModelSpec.checked(): spellings normalized, --model found in --models-dir, and
    what the checkpoint file's header says (read once per run, so the loader does not read it again)."""

    checkpoint: Checkpoint | None = field(default=None, compare=False)  # a single-file model's header
    native_size: int = DEFAULT_SIZE  # the side the model was trained at (768 for SD 2.x 768-v)

    def checked(self) -> CheckedModelSpec:
        return self

    def changed(self, **changes: Any) -> CheckedModelSpec:
        """This spec with some fields changed, checked again (`replace` would keep a stale check); itself
        when nothing changes."""
        given = {field.name: getattr(self, field.name) for field in dataclasses.fields(ModelSpec)}
        if all(given[key] == value for key, value in changes.items()):
            return self
        return ModelSpec(**given | changes).checked()
