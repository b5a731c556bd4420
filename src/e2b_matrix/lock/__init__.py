"""The lock file: which build each variant's alias pins.

Read by the Nexus server (``TemplateLock``, ``TemplateResolver``) and written
by the builder (``store``). Imports neither e2b nor click (importing e2b
costs about a second): only the model, tomllib, tomli-w and the standard
library; the writer (``store``) and the resolver load when first used.

- format.py: TOML text <-> LockEntry (tomllib reads, tomli-w writes);
- store.py: merged atomic writes under a file lock;
- resolver.py: the server's resolver, following the file as it changes.
"""

import importlib
from typing import TYPE_CHECKING

from e2b_matrix.errors import LockError, UnknownNameError
from e2b_matrix.lock.format import SCHEMA, TemplateLock, dumps, loads
from e2b_matrix.lock.model import Build, LockEntry

if TYPE_CHECKING:  # loaded on first use (__getattr__); named here for the type checker
    from e2b_matrix.lock.resolver import TemplateResolver
    from e2b_matrix.lock.store import record_build, update, update_lock

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

# Imported on first use: a reader needs neither. The resolver brings settings (and with it retry,
# random, logging): about 13 ms on top of `import e2b_matrix.lock` (45 ms, attrs included), which
# bench's lock_load_ratio counts; the writer about 1.4 ms.
_LAZY = {"TemplateResolver": "resolver", "record_build": "store", "update": "store", "update_lock": "store"}


def __getattr__(name: str) -> object:
    """The resolver and the writer, imported on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"e2b_matrix.lock.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
