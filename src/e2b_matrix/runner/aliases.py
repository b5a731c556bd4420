"""Who builds which alias, across processes: one flock per alias, held from a build's start to its landing.

E2B cancels a running build of an alias when another build of it starts, so no two builds of one
alias may run at once, in this run or any other (DESIGN §2). The flock lives in
``.e2b-matrix/locks/<alias>.lock``; the kernel drops it when a process dies.
"""

from __future__ import annotations

from pathlib import Path

from e2b_matrix import files
from e2b_matrix.backends import Backend
from e2b_matrix.errors import MatrixError
from e2b_matrix.lock import store
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.model import BuildSpec


def alias_lock_file(state_dir: Path, alias: str) -> Path:
    """The file whose flock says ``alias`` is being built, across processes."""
    return state_dir / "locks" / f"{alias}.lock"


class AliasLocks:
    """The alias flocks one run holds."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self._held: dict[str, files.FileLock] = {}

    def holds(self, alias: str) -> bool:
        return alias in self._held

    def take(self, alias: str) -> str | None:
        """None when the alias is now ours; else who holds it. FileError when its lock file cannot be used
        (made a link since the preflight: nothing is written through it)."""
        path = alias_lock_file(self.state_dir, alias)
        files.ensure_dir(path.parent, inside=self.state_dir.parent)  # checked before the run: made now
        lock = files.FileLock(path)
        try:
            lock.acquire(wait=False)
        except files.Busy as busy:
            return busy.holder
        self._held[alias] = lock
        return None

    def release(self, alias: str) -> None:
        lock = self._held.pop(alias, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for alias in list(self._held):
            self.release(alias)


def built_meanwhile(
    lock_path: Path, spec: BuildSpec, before: LockEntry | None, backend: Backend, cache: store.ParseCache | None = None
) -> LockEntry | None:
    """The lock's entry when another run built this very spec after ``before`` (the entry when the run
    started) and before this one took the alias; else None.

    Read under the alias's lock, after the other run released it: its build is in the lock by then.
    Two runs started together then build each variant once, and history never fills with builds of
    one spec.
    """
    try:
        entry = store.read_entry(lock_path, spec.alias, cache)
    except MatrixError:
        return None  # the landing will say what is wrong with the lock
    if entry is None or (before is not None and entry.build_id == before.build_id):
        return None
    if entry.fingerprint != spec.fingerprint or backend.staleness(entry) is not None:
        return None
    return entry
