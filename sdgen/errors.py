"""Error classes. Each carries the exit code the CLI returns for it (docs/troubleshooting.md).

| code | meaning                                                                       |
| 0    | success                                                                       |
| 2    | bad usage or bad input, always reported before any weights load               |
| 1    | a failure while running: model missing, out of memory, NaN output ...         |
| 130  | interrupted (Ctrl-C); finished images are kept                                |
| 143  | stopped by SIGTERM (129: SIGHUP): 128 + the signal's number, as shells do     |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

NAME = "{name}"  # where a message names the parameter it is about


class SdgenError(Exception):
    """Base class: an expected failure with a one-line message that names the problem and the fix."""

    exit_code = EXIT_FAILURE


class UsageError(SdgenError):
    """Bad usage or bad input, found before any weights load.

    `key` is the setting it is about (steps, width ...). The message says `{name}` where it names that
    setting, so each front end names it its own way: the library by its key ("Invalid steps 0: ..."),
    the command line by its flag and where the value came from ("Invalid --steps 0: ... (set by env
    SDGEN_STEPS)"; see `named`).
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, key: str | None = None) -> None:
        self.template = message
        self.key = key
        super().__init__(message.replace(NAME, key or "value"))

    def named(self, name: str, suffix: str = "") -> UsageError:
        """The same error, its setting named `name` (a flag, say), with `suffix` appended."""
        error = type(self)(self.template.replace(NAME, name) + suffix)
        error.key = self.key
        return error


class InvalidRequestError(UsageError, ValueError):
    """A value the user gave breaks a rule (size, steps, strength, scheduler name ...)."""


class DeviceNotAvailableError(InvalidRequestError):
    """The requested device or dtype does not exist on this machine."""


class OutputError(UsageError):
    """An image cannot be written where it was asked to go."""


class ModelNotFoundError(SdgenError):
    """The model is neither a local folder nor available from the Hub cache or network."""


class ModelLoadError(SdgenError):
    """The model was found but a part of it is missing or cannot be read."""


class GenerationError(SdgenError):
    """The denoising loop or the decoder failed (NaN output, out of memory ...)."""


class WriteError(SdgenError):
    """An image or record could not be written while running (disk full, read-only, permission)."""


def os_reason(error: OSError) -> str:
    """`No space left on device`, `Read-only file system`, `Permission denied` ... for one-line messages."""
    return error.strerror or type(error).__name__
