"""The one error root of e2b-matrix; the CLI maps each kind to an exit code.

Imports nothing heavy: the lock reader and the Nexus server use it.
"""


class MatrixError(Exception):
    """Root of every error e2b-matrix raises on purpose."""

    exit_code = 1


class ConfigError(MatrixError):
    """Bad input or configuration: a variant file, a parameter, a lock file.

    The message is one line that names the file and the key.
    """

    exit_code = 2

    def __init__(self, message: str, *, path=None, key=None):
        self.path = str(path) if path is not None else None
        self.key = key
        where = ""
        if self.path and key:
            where = f"{self.path}: {key}: "
        elif self.path:
            where = f"{self.path}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")


class LockError(ConfigError):
    """A lock file that cannot be read: bad TOML, wrong type, newer schema."""


class UnknownNameError(MatrixError, KeyError):
    """A variant or alias that is not defined (or not in the lock)."""

    exit_code = 1

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CredentialsError(MatrixError):
    """No E2B API key, or E2B refused it."""

    exit_code = 2


class BuildFailed(MatrixError):
    """One or more builds or checks failed."""

    exit_code = 1
