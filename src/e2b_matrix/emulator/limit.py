"""The team's concurrent-build limit, as E2B's API applies it when a build is requested.

E2B's RegisterBuild (e2b-dev/infra packages/api/internal/template/register_build.go;
db/queries/builds/get_inprogress_builds.sql, active_template_builds.sql) counts the
team's active builds, from their request until they end, and answers 429 at the tier's
``concurrent_template_builds`` (api.py's docstring says the whole rule). Another process
of the same team is modelled by slots it holds. Standard library only.
"""

from __future__ import annotations

from e2b_matrix.emulator.rules import ACTIVE_BUILD_WINDOW, Reply, build_limit_message, check_limit
from e2b_matrix.emulator.store import Store
from e2b_matrix.emulator.timing import Build


class BuildLimit:
    """The limit, the slots other processes hold, and what it refused (under the store's lock)."""

    def __init__(self, store: Store, limit: int):
        check_limit(limit)
        self._store = store
        self._limit = limit
        self._holds: list[tuple[float, int]] = []  # (monotonic time, slots taken (+) or given back (-))
        self._refusals = 0
        self._counted_since = store.clock()  # peak() looks back to here (reset())

    def set(self, limit: int) -> None:
        """The limit for requests from now on."""
        check_limit(limit)
        with self._store.lock:
            self._limit = limit

    def hold(self, n: int) -> None:
        """Take ``n`` slots, as another process's builds of other templates would."""
        if n < 1:
            raise ValueError("n must be >= 1")
        with self._store.lock:
            self._holds.append((self._store.clock(), n))

    def release(self, n: int | None = None) -> None:
        """Give back ``n`` held slots (all of them if None)."""
        with self._store.lock:
            held = self.held()
            n = held if n is None else n
            if n < 0 or n > held:
                raise ValueError(f"cannot release {n} of {held} held slots")
            if n:
                self._holds.append((self._store.clock(), -n))

    def held(self) -> int:
        with self._store.lock:
            return sum(delta for _, delta in self._holds)

    @property
    def refusals(self) -> int:
        with self._store.lock:
            return self._refusals

    def reset(self) -> None:
        """Zero the refusals; :meth:`peak` looks back only to now."""
        with self._store.lock:
            self._refusals = 0
            self._counted_since = self._store.clock()

    def check(self, template_id: str, tags: list[str], now: float) -> None:
        """E2B's RegisterBuild: Reply 429 when the team's other active builds reach the limit.
        Builds of the same template sharing a tag with the request are not counted."""
        others = sum(
            self._counted(b, now) and not (b.template_id == template_id and set(b.tags) & set(tags))
            for b in self._store.builds.values()
        )
        if self.held() + others >= self._limit:
            self._refusals += 1
            raise Reply(429, build_limit_message(self._limit))

    def active(self) -> int:
        """Builds counted now: the team's waiting and building ones, and held slots."""
        now = self._store.clock()
        with self._store.lock:
            return self.held() + sum(self._counted(b, now) for b in self._store.builds.values())

    def peak(self) -> int:
        """The most builds counted at one time (held slots included), since the start or :meth:`reset`."""
        now = self._store.clock()
        with self._store.lock:
            since = self._counted_since
            events = list(self._holds)
            for b in self._store.builds.values():
                start = b.requested
                end = min(self._store.active_until(b), start + ACTIVE_BUILD_WINDOW)
                events += [(start, 1), (end, -1)]
        level = peak = 0
        for at, delta in sorted(events, key=lambda e: (e[0], e[1])):  # at one instant, ends first
            if at > now:
                break
            if at > since:
                peak = max(peak, level)
            level += delta
        return max(peak, level)

    def _counted(self, b: Build, now: float) -> bool:
        """Does ``b`` count against the limit at ``now`` (an active_template_builds row)?"""
        return b.requested > now - ACTIVE_BUILD_WINDOW and now < self._store.active_until(b)
