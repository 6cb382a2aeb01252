"""Error classes. Each carries the exit code the CLI returns for it (DESIGN.md: exit codes)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # something went wrong while running: model missing, out of memory, NaN output ...
EXIT_USAGE = 2  # bad usage or bad input, always reported before any weights load
EXIT_INTERRUPTED = 130


class SdgenError(Exception):
    """Base class: an expected failure with a one-line message that names the problem and the fix."""

    exit_code = EXIT_FAILURE


class InvalidRequestError(SdgenError, ValueError):
    """A value the user gave breaks a rule (size, steps, strength, scheduler name ...)."""

    exit_code = EXIT_USAGE


class DeviceNotAvailableError(InvalidRequestError):
    """The requested device or dtype does not exist on this machine."""


class ModelNotFoundError(SdgenError):
    """The model is neither a local folder nor available from the Hub cache or network."""


class ModelLoadError(SdgenError):
    """The model was found but a part of it is missing or cannot be read."""


class GenerationError(SdgenError):
    """The denoising loop or the decoder failed (NaN output, out of memory ...)."""


class OutputError(SdgenError):
    """An image cannot be written where it was asked to go."""

    exit_code = EXIT_USAGE
