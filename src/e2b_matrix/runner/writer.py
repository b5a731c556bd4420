"""Landing builds: the lock writer, one thread beside the loop.

Group commit: every build that ended since the last write is recorded with one locked write
(``store.record_builds``), then its inventory is kept beside the lock, then it is promoted when
the run asks (each alias moved on the backend, then recorded: release.promote_entry). The loop
hands a batch over and goes on; it hears ``Landed`` when the writer is done, so it never waits
on the disk or on E2B's tag API to start a build.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from e2b_matrix import inventory, release
from e2b_matrix.backends import Backend
from e2b_matrix.errors import MatrixError
from e2b_matrix.lock import TemplateLock, store
from e2b_matrix.lock.model import LockEntry
from e2b_matrix.model import BuildSpec, Outcome, State
from e2b_matrix.runner.events import Event, Landed, Landing, Progress

if TYPE_CHECKING:
    from e2b_matrix.verify import VerifyReport


def entry_of(spec: BuildSpec, outcome: Outcome, now: dt.datetime) -> LockEntry:
    """The lock entry a build of ``spec`` makes."""
    return LockEntry(
        alias=spec.alias,
        variant=spec.name,
        template_id=outcome.template_id,
        build_id=outcome.build_id,
        fingerprint=spec.fingerprint,
        layers=spec.layer_versions(),
        built_at=now.replace(microsecond=0),
        domain=outcome.domain,
        api_url=outcome.api_url,
        image=outcome.image,
        inputs=spec.inputs(),
    )


class LockWriter:
    """Writes batches of finished builds, one batch at a time, in its own thread."""

    def __init__(
        self,
        backend: Backend,
        lock_path: Path,
        secrets: Sequence[str],
        promote: str | None,
        tell: Callable[[Event], None],
    ):
        self.backend, self.lock_path, self.secrets, self.promote = backend, lock_path, tuple(secrets), promote
        self.tell = tell
        self.busy = False
        self.cache = store.ParseCache()  # the run's lock, parsed again only when another process wrote it
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lock")

    def submit(self, batch: Sequence[Landing]) -> None:
        self.busy = True
        batch = tuple(batch)
        self._pool.submit(self.write, batch).add_done_callback(lambda f: self.tell(Landed(batch, _errors(batch, f))))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def write(self, batch: Sequence[Landing]) -> dict[str, str]:
        """The batch in the lock with one write, then its inventories, then promoted; alias -> why its
        build failed after all (not recorded, not promoted)."""
        now = dt.datetime.now(dt.UTC)
        try:
            lock = store.record_builds(
                self.lock_path,
                [entry_of(b.spec, b.outcome, now) for b in batch],
                self.backend.regenerate,
                self.secrets,
                self.cache,
            )
        except MatrixError as exc:
            return {b.spec.alias: f"built as {b.outcome.build_id} but not recorded: {exc}" for b in batch}
        for b in batch:
            if b.report is not None:
                self._record_inventory(b, b.report)
        return self._promote(batch, lock, self.promote) if self.promote else {}

    def _promote(self, batch: Sequence[Landing], lock: TemplateLock, channel: str) -> dict[str, str]:
        """Each build of the batch promoted to ``channel`` (moved, then recorded: a failure leaves the
        others promoted); alias -> why it was not."""
        errors: dict[str, str] = {}
        for b in batch:
            self.tell(Progress(b.spec.alias, State.PROMOTING, f"{channel} -> its new build"))
            try:
                release.promote_entry(
                    self.backend, self.lock_path, lock.entries[b.spec.alias], channel, self.secrets, self.cache
                )
            except MatrixError as exc:
                errors[b.spec.alias] = f"built and recorded, but not promoted to {channel}: {exc}"
        return errors

    def _record_inventory(self, b: Landing, report: VerifyReport) -> None:
        """What the verified build holds, beside the lock; a failure to record it is a warning (the build stands)."""
        try:
            inventory.record(self.lock_path, b.spec.alias, b.outcome.build_id, report)
        except MatrixError as exc:
            self.tell(Progress(b.spec.alias, State.VERIFYING, f"warning: {exc}"))


def _errors(batch: Sequence[Landing], future: Future[dict[str, str]]) -> dict[str, str]:
    """The writer's answer; a bug in the write fails the batch's builds, which are not in the lock."""
    exc = future.exception()
    if exc is None:
        return future.result()
    return {b.spec.alias: f"built as {b.outcome.build_id} but not recorded: {type(exc).__name__}: {exc}" for b in batch}
