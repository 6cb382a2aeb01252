"""Model names: a local diffusers folder, or a Hub id resolved through the Hugging Face cache.

A Hub id is looked up with one `model_info` request (with a timeout) that picks exactly the files sdgen
loads, then `snapshot_download` fetches only those into the usual cache. Offline (--offline or
HF_HUB_OFFLINE=1), or when the Hub cannot be reached, the cache alone is used.

Online, the first Hub id a process needs sends one quick request to HF_ENDPOINT (`hub_offline`). When that
finds no Hub (network down, a proxy refusing, a closed port), the process goes offline for the Hugging Face
libraries too, so no part retries for half a minute: a cached part is used (with one note), a missing one is
the one line below, before any weights load.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.config.options import DEFAULT_MODEL
from sdgen.errors import ModelLoadError, ModelNotFoundError, SdgenError, os_reason
from sdgen.models.layout import WEIGHTED_PARTS, download_patterns, weight_candidates

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.request import ModelSpec

log = logging.getLogger("sdgen")

# The Hub moved SD1.5 from runwayml/ to stable-diffusion-v1-5/; the old id still appears in every tutorial.
MODEL_ALIASES = {"runwayml/stable-diffusion-v1-5": DEFAULT_MODEL}
HUB_TIMEOUT_SECONDS = 15
PROBE_TIMEOUT_SECONDS = 3  # the one request that tells whether the Hub can be reached at all
_probe: dict[str, bool] = {}  # endpoint -> whether it answered (once per process)
_noted: list[str] = []  # the note on using the cache, said once
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where the weights came from, for metadata and error messages."""

    model: str  # what the user asked for, after aliases
    folder: Path  # local diffusers-layout folder (a Hub snapshot or the user's own)
    revision: str | None = None  # asked-for revision
    commit: str | None = None  # resolved Hub commit, when loaded from the Hub
    unet_sha256: str | None = None  # LFS sha256 of the U-Net weights when the Hub cache tells it for free


def canonical_model(model: str) -> str:
    """An old Hub id under its new name (quietly: for comparing records)."""
    return MODEL_ALIASES.get(model, model)


def canonical_model_id(model: str) -> str:
    """Map an old Hub id to its new home, with a note on stderr."""
    if model in MODEL_ALIASES:
        log.warning("Note: %s is now served as %s; using that.", model, MODEL_ALIASES[model])
    return canonical_model(model)


def hub_cache_dir(spec: ModelSpec) -> Path:
    from huggingface_hub import constants

    return Path(spec.cache_dir or constants.HF_HUB_CACHE)


def is_cached(model: str, spec: ModelSpec) -> bool:
    """Whether a Hub id has a snapshot in the cache (no network, nothing loaded)."""
    return (hub_cache_dir(spec) / ("models--" + model.replace("/", "--")) / "snapshots").is_dir()


def is_offline(spec: ModelSpec) -> bool:
    from huggingface_hub import constants

    return spec.offline or bool(constants.HF_HUB_OFFLINE)


def hub_offline(spec: ModelSpec) -> bool:
    """Whether only the cache may be used: offline mode, or (asked once per process, a short timeout) an
    HF_ENDPOINT that does not answer. Then the process goes offline for huggingface_hub, diffusers and
    transformers too (and for the processes it starts), so none of them retries."""
    if is_offline(spec):
        return True
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if endpoint not in _probe:
        _probe[endpoint] = _answers(endpoint)
        if not _probe[endpoint]:
            constants.HF_HUB_OFFLINE = True  # read at each call by huggingface_hub and transformers
            os.environ["HF_HUB_OFFLINE"] = "1"
    return not _probe[endpoint]


def _answers(endpoint: str) -> bool:
    """One HEAD request through huggingface_hub's own client (its proxies, its certificates); any answer but a
    proxy's refusal or a server error counts."""
    from huggingface_hub import get_session

    try:
        response = get_session().head(endpoint, timeout=PROBE_TIMEOUT_SECONDS)
    except Exception:  # connection refused, DNS, proxy, timeout, TLS
        return False
    return response.status_code != 407 and response.status_code < 500


def unreachable_endpoint(spec: ModelSpec) -> str | None:
    """The endpoint the probe found unreachable (None: it answered, was not asked, or offline mode is on)."""
    from huggingface_hub import constants

    if spec.offline or _probe.get(constants.ENDPOINT, True):
        return None
    return constants.ENDPOINT


def note_cached_copy(what: str, value: str, spec: ModelSpec) -> None:
    """Once per process: the Hub could not be reached and a cached part is used."""
    endpoint = unreachable_endpoint(spec)
    if endpoint and not _noted:
        _noted.append(value)
        log.warning("Note: the Hub (%s) could not be reached; using the cached copy (%s %s).", endpoint,
                    what.split(" (")[0], value)


def resolve_model_folder(spec: ModelSpec, variant: str | None, progress: Any = None) -> ModelSource:
    """Turn --model into a local diffusers folder, downloading from the Hub into its cache if needed."""
    model = canonical_model_id(spec.model)
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSource(model=model, folder=path.resolve(), revision=spec.revision)
    check_model_name(model, spec, downloading=progress is not None)
    return _resolve_hub(model, spec, variant, progress)


def check_model_name(model: str, spec: ModelSpec, downloading: bool = False) -> None:
    """Before anything loads: --model names a folder, a file or a Hub id, and offline that id is in the cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return
    if path.exists() or model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        missing = "" if path.exists() else " (there is no such file or folder)"
        raise ModelNotFoundError(
            f"Model {model!r} is not a model folder, a checkpoint file or a Hub id{missing}: pass a folder in "
            "diffusers layout (with unet/, vae/, text_encoder/, tokenizer/, scheduler/), a .safetensors checkpoint, "
            "or an id like owner/name (`sdgen models make-tiny DIR` makes a tiny one to try)."
        )
    repo = canonical_model(model)
    if repo != model and is_offline(spec) and not is_cached(repo, spec):
        canonical_model_id(model)  # the note on the old id, then the error naming the new one
    require_cached(repo, "Model", spec, downloading)


def _resolve_hub(repo_id: str, spec: ModelSpec, variant: str | None, progress: Any = None) -> ModelSource:
    """Download (or find in the cache) a Hub model's files; `progress` is a tqdm class for the bars."""
    from huggingface_hub import snapshot_download

    local_only = hub_offline(spec)
    patterns = None if local_only else _patterns_from_the_hub(repo_id, spec, variant, any_repo=progress is not None)
    local_only = local_only or patterns is None
    try:
        folder = snapshot_download(
            repo_id,
            revision=spec.revision,
            cache_dir=spec.cache_dir,
            local_files_only=local_only,
            allow_patterns=patterns,
            **({"tqdm_class": progress} if progress is not None else {}),
        )
    except Exception as error:
        raise _download_failure(repo_id, spec, error, not local_only, progress is not None) from error
    folder_path = Path(folder)
    commit = folder_path.name if folder_path.parent.name == "snapshots" else None
    return ModelSource(
        model=repo_id,
        folder=folder_path,
        revision=spec.revision,
        commit=commit,
        unet_sha256=_cached_blob_sha256(folder_path, "unet", variant),
    )


def _download_failure(
    repo_id: str, spec: ModelSpec, error: Exception, downloading: bool, progress_bars: bool = False
) -> SdgenError:
    """Say what really went wrong. huggingface_hub writes each file as `<blob>.incomplete` and renames it
    only when whole, so a failed download never leaves a file a later run takes for complete, and the
    next run resumes it."""
    cache = hub_cache_dir(spec)
    number = getattr(error, "errno", None)
    if number == errno.ENOSPC:
        return ModelLoadError(
            f"Downloading {repo_id!r} into {cache} failed: {os_reason(error)}. Free some space (SD1.5 needs "
            "2-4 GB) or set HF_HOME to a bigger disk, then run again: the download resumes where it stopped."
        )
    if number in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ModelLoadError(
            f"Cannot write the Hugging Face cache {cache} ({os_reason(error)}): set HF_HOME to a writable "
            "folder, or use --offline with a cache that has the model."
        )
    if downloading:
        return ModelLoadError(
            f"The download of {repo_id!r}{_revision_text(spec)} into {cache} broke off "
            f"({type(error).__name__}: {str(error).strip()[:200]}); run again to resume it."
        )
    return ModelNotFoundError(not_cached_message("Model", repo_id, spec, downloading=progress_bars))


def not_cached_message(what: str, repo_id: str, spec: ModelSpec, downloading: bool = False) -> str:
    """The one line for a Hub id that is not in the cache when the Hub cannot be asked: the main model's, a
    VAE's, a decoder's, a LoRA's ... (`downloading`: `sdgen models download` itself asked)."""
    cache = hub_cache_dir(spec)
    endpoint = unreachable_endpoint(spec)
    online = "when online" if endpoint or not is_offline(spec) else "with network access"
    if downloading:
        fix = f"run it again {online}" if endpoint else (
            "unset HF_HUB_OFFLINE (and drop --offline) and run it again with network access")
    else:
        fix = f"run `sdgen models download {repo_id}` {online}, or pass a local path"
    where = f"the Hugging Face cache ({cache})"
    return f"{what} {repo_id!r}{_revision_text(spec)} is not in {where} and {_why(spec)}: {fix}."


def _why(spec: ModelSpec) -> str:
    endpoint = unreachable_endpoint(spec)
    if endpoint:
        return f"the Hub ({endpoint}) could not be reached"
    return "offline mode is on (--offline or HF_HUB_OFFLINE=1)" if is_offline(spec) else "the Hub is unreachable"


def looks_like_hub_id(value: str) -> bool:
    """owner/name, and not a path on this machine."""
    return bool(_HUB_ID.match(value)) and not Path(value).expanduser().exists()


def require_cached(value: str | None, what: str, spec: ModelSpec, downloading: bool = False) -> None:
    """A Hub id a run needs (the model, a VAE, a decoder, a preview model, a LoRA ...): when only the cache may be
    used (offline, or the Hub unreachable: `hub_offline`) and it is not there, the one line the main model
    gives, now, before any weights load; otherwise nothing (a path is checked by its own part, and online the
    Hub is asked when the part loads)."""
    if not value or Path(value).expanduser().exists():
        return
    one_file = value.count("/") >= 2 and value.endswith(".safetensors")  # owner/name/file: one file of a repo
    if not (one_file or looks_like_hub_id(value)) or not hub_offline(spec):
        return
    if one_file:
        _require_cached_file(value, what, spec)
    elif not is_cached(value, spec):
        raise ModelNotFoundError(not_cached_message(what, value, spec, downloading))
    note_cached_copy(what, value, spec)


def _require_cached_file(value: str, what: str, spec: ModelSpec) -> None:
    from huggingface_hub import try_to_load_from_cache

    owner, name, filename = value.split("/", 2)
    online = "when online" if unreachable_endpoint(spec) else "with network access"
    if not isinstance(try_to_load_from_cache(f"{owner}/{name}", filename, cache_dir=hub_cache_dir(spec)), str):
        raise ModelNotFoundError(
            f"{what} {value!r} is not in the Hugging Face cache ({hub_cache_dir(spec)}) and {_why(spec)}: run "
            f"`hf download {owner}/{name} {filename}` {online}, or pass a local path."
        )


def _patterns_from_the_hub(
    repo_id: str, spec: ModelSpec, variant: str | None, any_repo: bool = False
) -> list[str] | None:
    """The files to download, from the Hub's listing; None when the Hub cannot be reached (use the cache).
    `any_repo` (`sdgen models download`): a repo that is not a whole model (a VAE, TAESD, a LoRA, a ControlNet)
    gets its configs and safetensors weights."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = _list_repo_files(repo_id, spec)
        if any_repo and "model_index.json" not in files:
            return [name for name in files if name.endswith((".json", ".safetensors", ".txt"))]
        return download_patterns(files, variant, repo_id)
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise ModelNotFoundError(
            f"Model {repo_id!r} is not on the Hugging Face Hub or needs a login "
            f"({error.__class__.__name__}); check the id, or run `hf auth login` for gated models."
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(
            f"Revision {spec.revision!r} of model {repo_id!r} does not exist on the Hub; check --revision."
        ) from None
    except ModelLoadError:
        raise
    except Exception as error:  # network down, DNS, proxy, timeouts: use the cache if it has the model
        log.warning("Could not reach the Hugging Face Hub (%s); looking in the cache.", type(error).__name__)
        return None


def _revision_text(spec: ModelSpec) -> str:
    return f" at revision {spec.revision!r}" if spec.revision else ""


def _list_repo_files(repo_id: str, spec: ModelSpec) -> list[str]:
    """One request with a timeout (the tree-listing API retries for ~25 s when the Hub is unreachable)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, revision=spec.revision, timeout=HUB_TIMEOUT_SECONDS)
    return [sibling.rfilename for sibling in info.siblings or []]


def _cached_blob_sha256(folder: Path, part_name: str, variant: str | None) -> str | None:
    """In the Hub cache a weights file links to a blob named by its sha256: a free file hash."""
    part = next(part for part in WEIGHTED_PARTS if part.name == part_name)
    for name in weight_candidates(part, variant):
        path = folder / part.name / name
        if path.is_symlink():
            blob = os.path.basename(os.readlink(path))
            if re.fullmatch(r"[0-9a-f]{64}", blob):
                return blob
    return None
