"""The detector weights of the preprocessors that need a model (openpose, hed, lineart, ...): the files of
lllyasviel/Annotators, found in the Hugging Face cache only (never downloaded: a run must not fetch hundreds of
megabytes unasked); a one-line error with the command that fetches a missing one."""

from __future__ import annotations

from pathlib import Path

from sdgen.errors import InvalidRequestError

ANNOTATORS_REPO = "lllyasviel/Annotators"


def cached_annotator(filename: str) -> Path | None:
    """The file `filename` of ANNOTATORS_REPO in the Hugging Face cache (None: not there)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ANNOTATORS_REPO, filename)
    return Path(found) if isinstance(found, str) else None


def annotator_folder(module: str, filenames: tuple[str, ...], key: str | None = "control") -> Path:
    """The cache snapshot holding every one of `filenames`, or InvalidRequestError naming the first missing one
    and how to fetch it."""
    folders = []
    for filename in filenames:
        found = cached_annotator(filename)
        if found is None:
            raise InvalidRequestError(
                f"Invalid {{name}}: the {module} preprocessor needs {filename} from {ANNOTATORS_REPO}, which is not "
                f"in the Hugging Face cache; fetch it with: huggingface-cli download {ANNOTATORS_REPO} {filename}",
                key,
            )
        folders.append(found.parent)
    return folders[0]
