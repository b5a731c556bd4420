"""The lock file: which build each variant's alias pins.

Read by the Nexus server (``TemplateLock``, ``TemplateResolver``) and written
by the builder (``store``). Imports neither e2b nor click (importing e2b
costs about a second): only the model, tomllib and the standard library.

- format.py: TOML text <-> LockEntry (tomllib reads, tomli-w writes);
- store.py: merged atomic writes under a file lock;
- resolver.py: the server's resolver, following the file as it changes.
"""

from e2b_matrix.lock.format import SCHEMA, TemplateLock, dumps, loads
from e2b_matrix.lock.resolver import TemplateResolver
from e2b_matrix.lock.store import record_build, update, update_lock
from e2b_matrix.model import Build, LockEntry

__all__ = ["SCHEMA", "Build", "LockEntry", "TemplateLock", "TemplateResolver", "dumps", "loads", "record_build",
           "update", "update_lock"]
