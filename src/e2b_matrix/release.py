"""Releases: promote, rollback, status, diff. Each alias is moved on the backend, then recorded.

One rule for every move: the network first, then the lock. ``backend.point`` moves a channel
(E2B's tag API, or a Docker tag), and only then is that alias's move recorded, at once, with one
locked write (``store.update``): no network call is ever made while the lock's file lock is held,
so a reader or writer of the lock never waits on E2B, and a failure at the third alias leaves the
first two moved and recorded (``status`` agrees with the lock).

Before anything moves, the build each move targets must still be on the backend
(``backend.gone``): a rollback or promote to a build that is gone (an edited history, a build
E2B no longer has) is one line, exit 1, and nothing changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import attrs

from e2b_matrix import inventory, names
from e2b_matrix.backends import Backend
from e2b_matrix.errors import ConfigError, Gone, MatrixError, NothingToDo
from e2b_matrix.lock import TemplateLock, store
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.logs import RunLogReporter
from e2b_matrix.session import Session, check_channel, logs_folder, other_lock, run_logs


def entries_for(session: Session, names: Iterable[str]) -> list[LockEntry]:
    """The lock entries of the named variants (by name or alias; all when none are named)."""
    lock = session.lock()
    names = list(names)
    if not names:
        return list(lock)
    return [lock.entry(n) for n in dict.fromkeys(names)]


def check_present(backend: Backend, targets: Iterable[tuple[LockEntry, str]], what: str) -> None:
    """Gone (exit 1, one line) when any (entry, build ID) is no longer on the backend: ``what`` acts on it."""
    for entry, build_id in targets:
        why = backend.gone(entry, build_id)
        if why:
            raise Gone(f"{entry.alias}: {why}: {what}; nothing was changed")


def promote_entry(
    backend: Backend,
    lock_path: Path,
    entry: LockEntry,
    channel: str,
    secrets: Iterable[str] = (),
    cache: store.ParseCache | None = None,
) -> LockEntry:
    """Point ``channel`` of the entry's alias at its build on the backend, then record it in the lock:
    the one place a channel moves forward (``build --promote`` and ``promote`` alike).

    The lock's entry is read again under its file lock: a build that landed meanwhile keeps its
    place, and the channel is recorded where the backend now points it.
    """
    build_id = entry.build_id
    backend.point(entry, channel, build_id)

    def record(entries: dict[str, LockEntry]) -> dict[str, LockEntry]:
        current = entries.get(entry.alias)
        if current is None:
            raise NothingToDo(
                f"{entry.alias} left the lock while {channel} was moved to build {build_id}; "
                f"build it again or move {channel} back"
            )
        entries[entry.alias] = current.promoted(channel, build_id)
        return entries

    return store.update(lock_path, record, backend.regenerate, secrets, cache).entries[entry.alias]


# -- the commands ------------------------------------------------------------------------


@attrs.frozen
class Diff:
    """What changed between two builds of an alias, package by package (``diff``, ``promote``)."""

    alias: str
    before: str  # build IDs
    after: str
    changes: tuple[inventory.Change, ...] = ()  # by kind then name
    before_environment: str = ""  # where each build was made (diff --against: two environments)
    after_environment: str = ""
    before_kib: int = 0  # each build's used disk (0: not recorded)
    after_kib: int = 0

    def counts(self) -> str:
        whats = [c.what for c in self.changes]
        counted = ", ".join(f"{whats.count(w)} {w}" for w in ("added", "removed", "changed"))
        grew = inventory.size_change(self.before_kib, self.after_kib)
        return counted + (f"; size {grew}" if grew else "")

    def to_json(self) -> dict[str, object]:
        return {
            "alias": self.alias,
            "from": self.before,
            "to": self.after,
            "from_environment": self.before_environment,
            "to_environment": self.after_environment,
            "changes": [c.to_json() for c in self.changes],
            "disk_used_kib": {"from": self.before_kib, "to": self.after_kib},
        }


def promote(session: Session, names: Iterable[str], channel: str) -> list[tuple[LockEntry, Diff | None]]:
    """Point ``channel`` at each named variant's locked build (promote); with each, what the move
    changes (the packages of what the channel pointed at against the build it now points at), when
    both builds have an inventory. Every target is checked first: one that is gone moves nothing.
    The run log records each move, or why it failed."""
    check_channel(channel, "--channel")
    entries = entries_for(session, names)
    out = []
    with _moving(session, [(e, e.build_id) for e in entries], f"{channel} cannot point at it") as record:
        secrets, cache = session.settings.secrets(), store.ParseCache()
        for e in entries:
            try:
                after = promote_entry(session.backend, session.lock_path, e, channel, secrets, cache)
            except MatrixError as exc:
                record.refused("promote", e.alias, exc)
                raise
            before = e.channels.get(channel)
            record.promoted(after, channel, before)
            out.append((after, _moved(session, after, before)))
    return out


def rollback(session: Session, name: str) -> tuple[LockEntry, LockEntry]:
    """Return the entry to its previous build, and move back every channel promoted to the current one.

    (before, after); NothingToDo when there is no previous build, Gone when E2B no longer has it.
    The run log records it, or why it failed.
    """
    before = session.lock().entry(name)
    if not before.history:
        raise NothingToDo(f"{before.alias} has no previous build to roll back to")
    with _moving(session, [(before, before.history[0].build_id)], "cannot roll back to its previous build") as record:
        try:
            after = _roll_back(session.backend, session.lock_path, before, session.settings.secrets())
        except MatrixError as exc:
            record.refused("rollback", before.alias, exc)
            raise
        record.rolled_back(before, after)
    return before, after


@contextlib.contextmanager
def _moving(session: Session, targets: list[tuple[LockEntry, str]], what: str) -> Iterator[RunLogReporter]:
    """Before anything moves: the lock can be written, the backend answers, every target (entry, build
    ID) is still there (``what`` acts on it); then the run log that records each move."""
    store.preflight(session.lock_path)
    session.backend.check()
    check_present(session.backend, targets, what)
    with run_logs(session, logs_folder(session)) as logs:
        yield RunLogReporter(logs)


def _roll_back(backend: Backend, lock_path: Path, before: LockEntry, secrets: Iterable[str]) -> LockEntry:
    """The channels promoted to ``before``'s build move back to the previous build, then the lock
    records it at once. What moved is recorded even when a later channel could not move; a build
    that landed meanwhile is not undone (the channels are recorded where they now point, and
    NothingToDo says so)."""
    previous = before.history[0].build_id
    moved = [ch for ch, build_id in before.channels.items() if build_id == before.build_id]
    done: list[str] = []
    landed: list[str] = []

    def record_moves(entries: dict[str, LockEntry]) -> dict[str, LockEntry]:
        current = entries[before.alias]
        entries[before.alias] = attrs.evolve(current, channels={**current.channels, **dict.fromkeys(done, previous)})
        return entries

    def change(entries: dict[str, LockEntry]) -> dict[str, LockEntry]:
        if entries[before.alias].build_id != before.build_id:
            landed.append(entries[before.alias].build_id)
            return record_moves(entries)
        entries[before.alias] = entries[before.alias].rolled_back()
        return entries

    try:
        for ch in moved:
            backend.point(before, ch, previous)
            done.append(ch)
    except MatrixError:
        if done:
            store.update(lock_path, record_moves, backend.regenerate, secrets)
        raise
    after = store.update(lock_path, change, backend.regenerate, secrets).entries[before.alias]
    if landed:
        raise NothingToDo(
            f"{before.alias} changed while rolling back (now build {landed[0]}); its channels "
            f"{', '.join(moved)} point at {previous} as recorded; try again"
        )
    return after


@attrs.frozen
class Drift:
    """How an alias on the backend compares with its lock entry (``status``)."""

    alias: str
    variant: str
    state: str  # "in sync", "channel moved", "gone"
    details: tuple[str, ...] = ()
    channels: Mapping[str, str | None] = attrs.field(factory=dict)  # channel -> build ID on the backend

    @property
    def ok(self) -> bool:
        return self.state == "in sync"

    def to_json(self) -> dict[str, object]:
        """One shape wherever drift is printed (``status --json``, ``lock check --remote --json``)."""
        return {
            "alias": self.alias,
            "variant": self.variant,
            "state": self.state,
            "ok": self.ok,
            "details": list(self.details),
            "channels": dict(self.channels),
        }


def status(session: Session, names: Iterable[str] = ()) -> list[Drift]:
    """Ask the backend where each named variant's channels point and whether its pinned build still exists."""
    return drift(session, entries_for(session, names))


def drift(session: Session, entries: Iterable[LockEntry]) -> list[Drift]:
    """Ask the backend where each entry's channels point and whether its pinned build still exists."""
    session.backend.check()
    out = []
    for e in entries:
        state, gone = session.backend.channels(e)
        remote = {c.channel: c.build_id for c in state}
        if gone:
            out.append(Drift(e.alias, e.variant, "gone", (gone,), remote))
            continue
        moved = tuple(
            f"{ch} points at {remote.get(ch) or 'nothing'}; the lock says {bid}"
            for ch, bid in e.channels.items()
            if remote.get(ch) != bid
        )
        out.append(Drift(e.alias, e.variant, "channel moved" if moved else "in sync", moved, remote))
    return out


def diff(session: Session, name: str, old: str = "previous", new: str = "current", against: str | None = None) -> Diff:
    """The packages added, removed and changed from build ``old`` to build ``new`` of a variant: each a
    build ID, a channel, ``previous`` or ``current``; with ``against`` (an environment), from that
    environment's current build to this one's ``new``. NothingToDo when either has no inventory."""
    other = other_lock(session, against, "--against") if against is not None else None
    return _diff(session, session.lock().entry(name), old, new, other, str(against))


def _diff(
    session: Session, entry: LockEntry, old: str, new: str, other: TemplateLock | None = None, against: str = ""
) -> Diff:
    """``diff`` of ``entry`` (as this lock has it); ``other``: environment ``against``'s lock."""
    here = session.settings.environment or ""
    if other is not None:
        before = (Path(other.path), other.entry(entry.alias).build_id, against)
    else:
        before = (session.lock_path, _build_of(session, entry, old, "FROM"), here)
    after = (session.lock_path, _build_of(session, entry, new, "TO"), here)
    found = [_inventory(lock_path, entry, build_id) for lock_path, build_id, _ in (before, after)]
    return Diff(
        entry.alias,
        before[1],
        after[1],
        tuple(inventory.diff(*found)),
        before[2],
        after[2],
        found[0].disk_used_kib,
        found[1].disk_used_kib,
    )


def _inventory(lock_path: Path, entry: LockEntry, build_id: str) -> inventory.Inventory:
    inv = inventory.load(lock_path, entry.alias, build_id)
    if inv is None:
        raise NothingToDo(
            f"no inventory of {entry.alias} build {build_id} beside {lock_path.name}: verify records "
            f"one (e2b-matrix verify {entry.variant}, or build --verify)"
        )
    return inv


def _build_of(session: Session, entry: LockEntry, ref: str, key: str) -> str:
    """A build of ``entry`` named by ID, channel, ``previous`` or ``current``."""
    if ref == "current":
        return entry.build_id
    if ref == "previous":
        if not entry.history:
            raise NothingToDo(f"{entry.alias} has no previous build")
        return entry.history[0].build_id
    if ref in entry.channels:
        pointed: str = entry.channels[ref]  # the lock's channels map a tag to a build ID (lock.model validates)
        return pointed
    if ref in {entry.build_id, *(b.build_id for b in entry.history)}:
        return ref
    try:
        if inventory.exists(session.lock_path, entry.alias, ref):  # an older build, beyond the history
            return ref
    except ValueError:
        pass
    raise ConfigError(
        f"{names.shown(ref)} is not a build ID, a channel, 'previous' or 'current' of {entry.alias}", key=key
    )


def _moved(session: Session, entry: LockEntry, before: str | None) -> Diff | None:
    if before is None or before == entry.build_id:
        return None
    try:
        return _diff(session, entry, before, entry.build_id)  # ``entry``: the lock's, as the move left it
    except (NothingToDo, ConfigError):  # no inventory of one of them: nothing to show
        return None
