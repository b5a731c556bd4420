"""Prune: what no one needs any more, listed with why, and removed only with ``--yes``.

- requirements files in ``requirements/`` that no variant's pip step names, on any backend;
- inventories beside a lock of builds that are in neither the lock nor its history;
- what a backend built that its lock no longer needs (``Backend.leftovers``): Docker images of
  builds in neither the lock nor its history nor behind a channel; E2B templates whose alias the
  lock records but whose variant is gone from ``variants/``.

Nothing in a lock, its history (a rollback target) or behind a channel is ever touched. E2B has no
per-build delete (only ``DELETE /templates/{id}``, refused while sandboxes of it run: e2b-dev/infra
packages/api/internal/handlers/template_delete.go); a template it refuses to delete is reported and
the run goes on. A template is deleted on E2B first, then its lock entry removed with one locked
write: an interruption at any point leaves a valid lock, and prune run again finds what is left.
Every removal goes to the run log.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from e2b_matrix import backends, files, inventory, workflow
from e2b_matrix.backends import Backend
from e2b_matrix.errors import MatrixError
from e2b_matrix.lock import TemplateLock, store
from e2b_matrix.logs import RunLogReporter
from e2b_matrix.model import Removal
from e2b_matrix.pins import DIR
from e2b_matrix.session import Session, logs_folder, run_logs

if TYPE_CHECKING:  # the project's modules: imported by workflow.load when prune runs
    from e2b_matrix.config import Project

Looked = tuple[str, Backend, TemplateLock]  # a backend's name, the backend, its lock


@attrs.frozen
class Pruned:
    """What prune found and, with ``--yes``, what became of each: "" removed, else why not."""

    removals: tuple[Removal, ...]
    applied: bool = False
    outcomes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be looked at (no Docker daemon)

    @property
    def clean(self) -> bool:
        return not self.removals

    @property
    def ok(self) -> bool:
        """Clean, or everything found was removed."""
        return self.clean or (self.applied and not any(self.outcomes))

    def to_json(self) -> dict[str, object]:
        rows = [
            {**r.to_json(), "removed": (not o) if self.applied else None, "error": o}
            for r, o in zip(self.removals, self.outcomes or [""] * len(self.removals), strict=True)
        ]
        return {
            "clean": self.clean,
            "applied": self.applied,
            "ok": self.ok,
            "removals": rows,
            "notes": list(self.notes),
        }


def find(session: Session, project: Project, every: list[Looked]) -> tuple[list[Removal], list[str]]:
    """Everything the project no longer needs, and notes on what could not be looked at."""
    removals = _requirements(session, project, every)
    notes: list[str] = []
    for name, backend, lock in every:
        removals += _inventories(session.options.root, lock)
        try:
            removals += [
                attrs.evolve(r, backend=name) for r in backend.leftovers(lock, {v.alias for v in project.variants})
            ]
        except MatrixError as exc:  # no daemon, no key: what it built is not looked at, and said so
            notes.append(f"{name}: {exc}")
    return removals, notes


def prune(session: Session, yes: bool) -> Pruned:
    """``e2b-matrix prune``: what it would remove and why; with ``yes``, remove it (each recorded in the run log)."""
    project = workflow.load(session)
    every = _every_backend(session)
    removals, notes = find(session, project, every)
    if not yes or not removals:
        return Pruned(tuple(removals), notes=tuple(notes))
    made = {name: backend for name, backend, _ in every}
    outcomes = []
    with run_logs(session, logs_folder(session)) as logs:
        record = RunLogReporter(logs)
        for r in removals:
            why_not = _remove(session, r, made)
            record.pruned(r.kind, r.target, r.why, why_not)
            outcomes.append(why_not)
    return Pruned(tuple(removals), True, tuple(outcomes), tuple(notes))


def _every_backend(session: Session) -> list[Looked]:
    """Each backend in this session's environment (prune looks at every one), made once, with its lock read once."""
    out = []
    for name in backends.names():
        backend = session.backend if name == session.options.backend else _other(session, name)
        out.append((name, backend, TemplateLock.load(session.options.root / backend.lock_file)))
    return out


def _other(session: Session, name: str) -> Backend:
    """The backend ``name`` in this session's environment (prune looks at every backend)."""
    backend: Backend = backends.make(name, session.settings, {}, session.chosen)  # the registry's class of ``name``
    return backend


def _requirements(session: Session, project: Project, every: list[Looked]) -> list[Removal]:
    """The files of ``requirements/`` that no variant's pip step names, on any backend."""
    folder = session.options.root / DIR
    if not folder.is_dir():
        return []
    named: set[str] = set()
    for name, backend, lock in every:
        other = attrs.evolve(session, backend=backend, options=attrs.evolve(session.options, backend=name, names=()))
        for spec in workflow.resolve_specs(other, project, lock, variants=list(project.variants)):
            named.update(r.path for r in spec.requirements)
    return [
        Removal("requirements file", f"{DIR}/{p.name}", "no variant's pip step names it, on any backend")
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.is_symlink() and p.suffix == ".txt" and f"{DIR}/{p.name}" not in named
    ]


def _inventories(root: Path, lock: TemplateLock) -> list[Removal]:
    """Inventories beside ``lock`` of builds in neither the lock nor its history."""
    folder = inventory.folder(Path(lock.path))
    if not folder.is_dir():
        return []
    kept = {
        inventory.path_of(lock.path, e.alias, b) for e in lock for b in (e.build_id, *(h.build_id for h in e.history))
    }
    out = []
    for path in _inventory_files(folder):
        alias, build_id = path.parent.name, path.stem
        if path not in kept:
            out.append(
                Removal(
                    "inventory",
                    os.path.relpath(path, root),
                    f"build {build_id} of {alias} is in neither {Path(lock.path).name} nor its history",
                )
            )
    return out


def _inventory_files(folder: Path) -> Iterator[Path]:
    for alias_dir in sorted(folder.iterdir()):
        if alias_dir.is_dir() and not alias_dir.is_symlink():
            yield from sorted(
                p for p in alias_dir.iterdir() if p.suffix == ".toml" and p.is_file() and not p.is_symlink()
            )


def _remove(session: Session, r: Removal, made: Mapping[str, Backend]) -> str:
    """Remove one thing; "" when it is gone, else why it could not be (the run goes on)."""
    root = session.options.root
    try:
        if not r.backend:
            _remove_file(root, r.target)
            return ""
        backend = made[r.backend]
        why_not = backend.remove(r.ref)
        if why_not is None and r.alias:  # removed there: its entry goes from the lock, at once
            store.update_lock(
                root / backend.lock_file,
                remove=[r.alias],
                regenerate=backend.regenerate,
                secrets=session.settings.secrets(),
            )
        return why_not or ""
    except (MatrixError, OSError) as exc:
        return str(exc)


def _remove_file(root: Path, relative: str) -> None:
    """A file of the project, never through a link; its folder too when it was the last file there."""
    path = root / relative
    files.refuse_link(path)
    path.unlink(missing_ok=True)
    parent = path.parent
    if parent != root and parent.name not in ("requirements",) and not any(parent.iterdir()):
        parent.rmdir()


def lines(pruned: Pruned) -> Iterable[str]:
    """What prune says, a line each: ``kind target: why`` (and, applied, what became of it)."""
    for i, r in enumerate(pruned.removals):
        said = f"{r.kind} {r.target}: {r.why}"
        if pruned.applied:
            said += f": not removed: {pruned.outcomes[i]}" if pruned.outcomes[i] else ": removed"
        yield said
