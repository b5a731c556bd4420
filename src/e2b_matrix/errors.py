"""The one error root of e2b-matrix; the CLI maps each kind to an exit code.

Imports nothing heavy: the lock reader and the Nexus server use it.
"""

from __future__ import annotations

import os


class MatrixError(Exception):
    """Root of every error e2b-matrix raises on purpose."""

    exit_code = 1


class ConfigError(MatrixError):
    """Bad input or configuration: a variant file, a parameter, a variable, a lock file.

    The message is one line that names the file (or variable) and the key.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, key: str | None = None):
        self.path = str(path) if path is not None else None
        self.key = key
        self.bare = message
        where = ": ".join(str(p) for p in (self.path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class FieldError(ValueError):
    """A model field that failed its check: the field's name (``layers.nexus``) and what is wrong, as
    fields; a reader adds its file and table to them, never parsing them back from text."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class LockError(ConfigError):
    """A lock file that cannot be read or written: bad TOML, wrong type, newer schema, a secret."""


class UnknownNameError(ConfigError, KeyError):
    """A variant or alias that is not defined (or not in the lock): bad input, as in every command."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CredentialsError(MatrixError):
    """No E2B API key, or E2B refused it."""

    exit_code = 2


class BuildError(MatrixError):
    """The build itself failed (E2B said error, docker build failed): not retried."""


class CompileError(MatrixError):
    """uv could not resolve a pip step's requirements (or stopped): the files stay as they were."""


class TransientError(MatrixError):
    """Worth another attempt: 429, 5xx, a reset connection, a timeout (the SDK has already honoured
    any Retry-After before it gave up)."""


class SlotsFull(TransientError):
    """E2B refused a build because the team's concurrent builds are all taken (429): the runner
    lowers its concurrency and starts the build again when one of its own builds ends."""


class Cancelled(MatrixError):
    """Stopped on request (fail-fast, Ctrl-C) before the work finished."""


class NothingToDo(MatrixError):
    """A request that cannot be met, for a reason that is not bad input (rollback with no history)."""

    exit_code = 1


class Gone(NothingToDo):
    """What a command would act on is no longer on the backend (a build E2B does not have): nothing changed."""
