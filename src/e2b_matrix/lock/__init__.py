"""The lock file: which build each variant's alias pins.

Read by the Nexus server (``TemplateLock``, ``TemplateResolver``) and written
by the builder (``store``). Imports neither e2b nor click (importing e2b
costs about a second): only the model, tomllib and the standard library;
the writer (tomli-w) and the resolver load when first used.

- format.py: TOML text <-> LockEntry (tomllib reads, tomli-w writes);
- store.py: merged atomic writes under a file lock;
- resolver.py: the server's resolver, following the file as it changes.
"""

from e2b_matrix.errors import LockError, UnknownNameError
from e2b_matrix.lock.format import SCHEMA, TemplateLock, dumps, loads
from e2b_matrix.lock.model import Build, LockEntry

__all__ = [
    "SCHEMA",
    "Build",
    "LockEntry",
    "LockError",
    "TemplateLock",
    "TemplateResolver",
    "UnknownNameError",
    "dumps",
    "loads",
    "record_build",
    "update",
    "update_lock",
]

_LAZY = {"TemplateResolver": "resolver", "record_build": "store", "update": "store", "update_lock": "store"}


def __getattr__(name: str):
    """The resolver and the writer, imported on first use (a reader needs neither)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"e2b_matrix.lock.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
