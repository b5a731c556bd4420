"""The Nexus server's resolver: the template reference to hand to ``Sandbox.create``.

``resolve()`` answers for the server's *default* template (``name``, the
variant ``latest`` unless told): ``E2B_TEMPLATE_ID`` in the environment wins
(the seed's variable), then the lock's pinned build, then ``default`` — only
while there is no lock at all. ``resolve(NAME)`` answers for a named variant
or alias, always from the lock: ``E2B_TEMPLATE_ID`` never overrides it, and
``default`` never stands in for it. A name the lock lacks always raises
UnknownNameError (importable from ``e2b_matrix.lock``).

The lock is re-read only when its (mtime, size, inode) changes: a call costs
one ``os.stat`` (at most one per ``min_interval`` seconds). When the file
goes bad (a half-written file, a merge conflict) the last good lock stays in
use and one error is logged until a good lock is read again (a writer that
is not atomic makes many bad states in a row: they are one problem); when
the file is deleted the last good lock stays in use and one warning is
logged (a server must not lose its templates because a file moved). Safe to
share between threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

from e2b_matrix import files, settings
from e2b_matrix.errors import LockError
from e2b_matrix.lock.format import TemplateLock

log = logging.getLogger(__name__)

# What os.stat says of the lock file: (mtime_ns, size, inode); ("error", errno) when it cannot say;
# None when there is no file; ("unread",) before the first look.
Stamp = tuple[int, int, int] | tuple[str, int | None] | tuple[str] | None


DEFAULT_TEMPLATE = "latest"  # the seed's template (alias nexus-sandbox-latest)


class TemplateResolver:
    def __init__(
        self,
        lock_path: files.StrPath | None = None,
        default: str | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        name: str = DEFAULT_TEMPLATE,
        min_interval: float = 0.0,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self.path = os.path.abspath(os.fspath(settings.LOCK.read(self._environ) if lock_path is None else lock_path))
        self.default = default
        self.name = name
        self.min_interval = float(min_interval)
        self._reload_lock = threading.Lock()
        # (stat stamp, lock): replaced as one object so readers never see a mix
        self._state: tuple[Stamp, TemplateLock] = (("unread",), TemplateLock((), self.path, exists=False))
        self._logged = False  # a problem was logged since the last good read
        self._next_check = 0.0

    def resolve(self, name: str | None = None) -> str:
        """The reference for ``name`` (a variant or alias), or for the server's default template."""
        if name is None:
            override = settings.TEMPLATE_ID.read(self._environ)
            if override:
                return override
            lock = self.current()
            if not lock.exists and self.default is not None:
                return self.default
            return lock.reference(self.name)
        if not isinstance(name, str):
            raise TypeError(f"a template name is a string, not {type(name).__name__}")
        return self.current().reference(name)

    def current(self) -> TemplateLock:
        """The lock as it is on disk now, or the last good one."""
        state = self._state
        if self.min_interval:
            now = time.monotonic()
            if now < self._next_check:
                return state[1]
            self._next_check = now + self.min_interval
        stamp = self._stat()
        if stamp == state[0]:
            return state[1]
        with self._reload_lock:
            state = self._state
            if stamp == state[0]:
                return state[1]
            return self._reload(stamp, state[1])

    def _stat(self) -> Stamp:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return ("error", exc.errno)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _problem(self, message: str, level: int) -> None:
        if not self._logged:
            log.log(level, "%s", message)
            self._logged = True

    def _reload(self, stamp: Stamp, old: TemplateLock) -> TemplateLock:
        if stamp is None:
            if old.exists:
                self._problem(
                    f"{self.path}: the lock file is gone; keeping the last good lock ({len(old)} templates)",
                    logging.WARNING,
                )
            self._state = (None, old)
            return old
        try:
            # stat came before the read: a change during the read shows as a new stamp next time
            lock = TemplateLock.load(self.path)
        except LockError as exc:
            self._problem(f"{exc}; keeping the last good lock ({len(old)} templates)", logging.ERROR)
            self._state = (stamp, old)
            return old
        self._logged = False
        self._state = (stamp, lock)
        return lock
