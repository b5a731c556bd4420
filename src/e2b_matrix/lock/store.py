"""Writing the lock: merged with what is on disk, under a file lock, atomically.

``update(path, change)`` takes an exclusive lock on the sidecar
``<path>.lock``, reads the lock on disk, applies ``change`` to its entries,
renders the result, reads the rendering back and compares, and replaces the
file atomically (files.atomic_write). Two processes that change different
aliases both land; a reader sees the old file or the new one; a lock on disk
that does not parse is left untouched (LockError). Neither the lock nor its
sidecar may be a symbolic link (LockError, before ``change`` runs: a promote
changes nothing on E2B that the lock could not record). ``record_builds``
records every build that finished since the last write in one such write.

What one write costs, as the lock grows: one tomllib parse of the rendering
(the read-back) and one tomli-w rendering, each linear in the lock. The lock
on disk is parsed too unless its bytes are exactly the last ones the caller's
``ParseCache`` parsed (its own last write, read back): parsing is a function of
the bytes. Only the entries whose table differs from the one parsed before are
validated again (format.parse, ``known``). The cache is an object the writer
keeps and hands in (the runner's lock writer keeps one per run); nothing is
kept in the module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from e2b_matrix import files
from e2b_matrix.errors import LockError
from e2b_matrix.lock.format import DEFAULT_REGENERATE, EMPTY, Parsed, TemplateLock, dumps, parse, read_text
from e2b_matrix.lock.model import LockEntry

Change = Callable[[dict[str, LockEntry]], Mapping[str, LockEntry]]


class ParseCache:
    """The last lock text parsed, whole, and what it read. Replaced whole (one assignment), so a
    reader in another thread sees the old pair or the new one."""

    def __init__(self) -> None:
        self._last: tuple[str, Parsed] | None = None

    def parse(self, text: str, path: str) -> Parsed:
        """``text`` parsed; tomllib runs again unless ``text`` is exactly the last text parsed here."""
        last = self._last
        if last is not None and last[0] == text:
            return last[1]
        parsed = parse(text, path, known=last[1] if last is not None else None)
        self._last = (text, parsed)
        return parsed


def lock_file(path: files.StrPath) -> str:
    """The sidecar file whose flock guards ``path`` (never the data file, which is replaced)."""
    return os.fspath(path) + ".lock"


def preflight(path: files.StrPath, cache: ParseCache | None = None) -> None:
    """Fail now, before any build or request, if the lock at ``path`` could not be written later.
    Writes nothing (not even the file lock's sidecar): a command refused here leaves no trace."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    blocked = files.check_writable_dir(folder)
    if blocked:
        raise LockError(f"cannot write the lock: {blocked[1]}", path=blocked[0])
    for p, in_place in ((path, False), (lock_file(path), True)):
        try:
            files.refuse_link(p, in_place=in_place)
        except files.FileError as exc:
            raise LockError(str(exc), path=p) from None
    text = read_text(path)
    if text is not None:
        (cache or ParseCache()).parse(text, path)


def read_entry(path: files.StrPath, alias: str, cache: ParseCache | None = None) -> LockEntry | None:
    """The entry of ``alias`` in the lock on disk now (None when there is none). Unless another
    process wrote the lock since, its bytes are what this process last wrote and parsed: no parse."""
    path = os.fspath(path)
    text = read_text(path)
    return None if text is None else (cache or ParseCache()).parse(text, path).entries.get(alias)


def update(
    path: files.StrPath,
    change: Change,
    regenerate: str = DEFAULT_REGENERATE,
    secrets: Iterable[str] = (),
    cache: ParseCache | None = None,
) -> TemplateLock:
    """Apply ``change`` (entries by alias -> new entries by alias) to the lock on disk; the lock as written."""
    path = os.fspath(path)
    cache = cache or ParseCache()
    try:
        with files.FileLock(lock_file(path)):
            files.refuse_link(path)
            files.remove_stale_temps(path)
            old_text = files.read_text(path)
            old = cache.parse(old_text, path) if old_text is not None else EMPTY
            merged = dict(change(dict(old.entries)))
            try:
                text = dumps(merged.values(), regenerate, secrets)
            except LockError as exc:
                raise LockError(exc.bare, path=path, key=exc.key) from None
            if cache.parse(text, path).entries != merged:  # never write what would not read back
                raise LockError("does not read back the same (not written)", path=path)
            if text != old_text:
                files.atomic_write(path, text.encode("utf-8"))
    except files.FileError as exc:
        raise LockError(str(exc), path=path) from None
    except OSError as exc:
        raise LockError(f"cannot write: {exc.strerror or exc}", path=path) from None
    return TemplateLock(merged, path)


def update_lock(
    path: files.StrPath,
    upsert: Mapping[str, LockEntry] | Iterable[LockEntry] = (),
    remove: Iterable[str] = (),
    regenerate: str = DEFAULT_REGENERATE,
    secrets: Iterable[str] = (),
    cache: ParseCache | None = None,
) -> TemplateLock:
    """Replace whole entries by alias and delete aliases (absent ones are ignored)."""
    items = list(upsert.values() if isinstance(upsert, Mapping) else upsert)
    for e in items:
        if not isinstance(e, LockEntry):
            raise TypeError(f"update_lock: expected a LockEntry, got {type(e).__name__}")
    gone = {remove} if isinstance(remove, str) else set(remove)

    def change(entries: dict[str, LockEntry]) -> dict[str, LockEntry]:
        entries = {a: e for a, e in entries.items() if a not in gone}
        entries.update((e.alias, e) for e in items)
        return entries

    return update(path, change, regenerate, secrets, cache)


def record_builds(
    path: files.StrPath,
    entries: Iterable[LockEntry],
    regenerate: str = DEFAULT_REGENERATE,
    secrets: Iterable[str] = (),
    cache: ParseCache | None = None,
) -> TemplateLock:
    """New builds, in one locked write: for each in turn, the previous build of its alias goes to its
    history and its channels stay put. One that cannot be written (a secret, ...) writes none of them."""
    builds = list(entries)
    for e in builds:
        if not isinstance(e, LockEntry):
            raise TypeError(f"record_builds: expected a LockEntry, got {type(e).__name__}")

    def change(current: dict[str, LockEntry]) -> dict[str, LockEntry]:
        for e in builds:
            old = current.get(e.alias)
            current[e.alias] = old.replaced_by(e) if old is not None else e
        return current

    return update(path, change, regenerate, secrets, cache)


def record_build(
    path: files.StrPath,
    entry: LockEntry,
    regenerate: str = DEFAULT_REGENERATE,
    secrets: Iterable[str] = (),
    cache: ParseCache | None = None,
) -> TemplateLock:
    """A new build of ``entry.alias``: the previous one goes to its history, channels stay put."""
    return record_builds(path, [entry], regenerate, secrets, cache)
