"""The lock under concurrent writers, readers and killed writers.

Each part is bounded to a few seconds and prints its figures (``pytest -s``).
Every write is serialized by the file lock and costs time linear in the lock,
so a test bounded by a count of writes to a growing lock takes time that
grows with its square: the concurrent writers are bounded by time.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import fp
from e2b_matrix import files as lockmod
from e2b_matrix.errors import LockError
from e2b_matrix.lock import LockEntry, TemplateLock, dumps, update_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl and SIGKILL are POSIX")

WHEN = dt.datetime(2026, 11, 26, 17, 0, tzinfo=dt.UTC)
FORK = multiprocessing.get_context("fork")


def make_entries(n: int, tag: str, pad: int = 0) -> dict[str, LockEntry]:
    """n entries whose every field says which state (tag) they belong to."""
    out = {}
    for i in range(n):
        alias = f"variant-{i:03d}"
        out[alias] = LockEntry(
            alias=alias,
            variant=f"v{i:03d}",
            template_id=f"{tag}-{i:03d}",
            build_id=f"build-{tag}-{i:03d}",
            fingerprint=fp(tag),
            layers={"base": "1", "nexus": tag},
            built_at=WHEN,
            domain="e2b.app",
            inputs={"pad": tag * pad} if pad else {},
        )
    return out


def temp_files(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


# --------------------------------------------------------------------------- 1. no torn reads

REWRITE_SECONDS = 3.0  # the other process rewrites for this long (at least 20 times, at most 1000)

WRITER = textwrap.dedent("""
    import sys, time
    from e2b_matrix.lock import TemplateLock, update_lock
    path, a, b, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    states = [TemplateLock.load(a).entries, TemplateLock.load(b).entries]
    end = time.monotonic() + seconds
    n = 0
    while n < 1000 and (n < 20 or time.monotonic() < end):
        update_lock(path, states[(n + 1) % 2])
        n += 1
    print(n)
""")


def test_no_torn_reads_while_another_process_rewrites(tmp_path):
    path = tmp_path / "templates.lock"
    a, b = make_entries(8, "A", pad=400), make_entries(8, "BB", pad=450)  # > a page each, different sizes
    (tmp_path / "a.src").write_text(dumps(a.values()))
    (tmp_path / "b.src").write_text(dumps(b.values()))
    update_lock(path, a)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(path),
            str(tmp_path / "a.src"),
            str(tmp_path / "b.src"),
            str(REWRITE_SECONDS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    reads = {"A": 0, "B": 0}
    try:
        while proc.poll() is None and time.monotonic() - t0 < 60:
            lock = TemplateLock.load(path, missing_ok=False)  # raises on a torn or missing file
            entries = dict(lock.entries)
            if entries == a:
                reads["A"] += 1
            else:
                assert entries == b, "a read was neither the old nor the new content"
                reads["B"] += 1
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0
    writes = int(out)
    assert dict(TemplateLock.load(path).entries) == (a if writes % 2 == 0 else b)  # the last write's state
    print(
        f"\n[torn reads] {writes} rewrites by another process in {elapsed:.2f}s; "
        f"{sum(reads.values())} reads, all whole ({reads['A']} old/A, {reads['B']} new/B)"
    )
    assert reads["A"] and reads["B"], "the reader never saw both contents: the test proved nothing"
    assert temp_files(tmp_path) == []


# --------------------------------------------------------------------------- 2. concurrent writers

WRITE_SECONDS = 4.0  # each writer's updates stop this long after the start (bounded by time, not counts)
MIN_EACH, MAX_EACH = 3, 25  # updates per writer: at least, whatever the time; at most (the lock stays small)


def _writer_of_distinct_aliases(path: str, worker: int, done, go) -> None:
    go.wait(30)
    end = time.monotonic() + WRITE_SECONDS
    for j in range(MAX_EACH):
        if j >= MIN_EACH and time.monotonic() > end:
            break
        alias = f"w{worker:02d}-{j:02d}"
        update_lock(
            path,
            {
                alias: LockEntry(
                    alias=alias,
                    variant=alias,
                    template_id=f"T-{worker:02d}-{j:02d}",
                    build_id="b",
                    fingerprint=fp("f"),
                    layers={},
                    built_at=WHEN,
                )
            },
        )
        done[worker] = j + 1  # after update_lock returned: this one must be in the lock


def test_sixteen_processes_of_updates_all_land(tmp_path):
    path = str(tmp_path / "templates.lock")
    workers = 16
    go = FORK.Event()
    done = FORK.Array("i", workers)
    procs = [FORK.Process(target=_writer_of_distinct_aliases, args=(path, w, done, go)) for w in range(workers)]
    for p in procs:
        p.start()
    t0 = time.monotonic()
    go.set()
    reads = sizes = 0
    while any(p.is_alive() for p in procs) and time.monotonic() - t0 < 60:
        try:
            lock = TemplateLock.load(path)
        except LockError as exc:  # pragma: no cover - the failure this test looks for
            pytest.fail(f"a concurrent reader failed to parse the lock: {exc}")
        reads += 1  # as fast as it can, as the torn-read reader above: the more reads, the stronger
        sizes = max(sizes, len(lock))
    for p in procs:
        p.join(30)
    elapsed = time.monotonic() - t0
    assert [p.exitcode for p in procs] == [0] * workers
    counts = list(done)
    lock = TemplateLock.load(path)
    expected = {f"w{w:02d}-{j:02d}": f"T-{w:02d}-{j:02d}" for w in range(workers) for j in range(counts[w])}
    assert {e.alias: e.template_id for e in lock} == expected  # every update that returned landed, no other
    print(
        f"\n[writers] {workers} processes x {min(counts)}-{max(counts)} update_lock = {len(lock)} entries in "
        f"{elapsed:.2f}s ({elapsed / sum(counts) * 1000:.1f} ms per update); concurrent reader: {reads} "
        "parses, no failure"
    )
    assert temp_files(tmp_path) == []


# --------------------------------------------------------------------------- 3. SIGKILLed writers

N_KILL_ENTRIES = 60


def _state_of(lock: TemplateLock) -> int:
    """The state number the whole lock belongs to; fails if entries disagree (a mixed file)."""
    states = {e.build_id.split("-")[1] for e in lock}  # build-<tag>-<i>
    assert len(states) == 1 and len(lock) == N_KILL_ENTRIES, f"not one complete state: {sorted(states)[:3]}"
    return int(states.pop().removeprefix("S"))


def _looping_writer(path: str, events_fd: int, k: int) -> None:
    """Writes whole states k+1, k+2, ... until killed (k: the state the parent just read whole),
    and says where it is, one byte on events_fd each: "f" as it syncs a file (the temp file, before
    the rename that publishes it; the folder, after), "w" when a write returned."""
    sync = os.fsync

    def telling_fsync(fd: int) -> None:
        os.write(events_fd, b"f")
        sync(fd)

    os.fsync = telling_fsync  # in this forked process only
    while True:
        k += 1
        update_lock(path, make_entries(N_KILL_ENTRIES, f"S{k}", pad=40))
        os.write(events_fd, b"w")


def test_sigkilled_writers_leave_a_whole_lock(tmp_path):
    path = str(tmp_path / "templates.lock")
    update_lock(path, make_entries(N_KILL_ENTRIES, "S0", pad=40))
    rng = random.Random(1234)
    kills, left_temp, max_temps, last = 50, 0, 0, 0
    t0 = time.monotonic()
    for i in range(kills):
        r, w = os.pipe()
        started = time.time()
        p = FORK.Process(target=_looping_writer, args=(path, w, last))
        p.start()
        os.close(w)
        # killed after its first whole write, at a point of its loop drawn at random: the m-th thing
        # it tells after that write (a sync of its next temp file, of the folder, a write's end)
        m, told = rng.randint(0, 5), b""
        while b"w" not in told or len(told) - told.index(b"w") - 1 < m:
            ready, _, _ = select.select([r], [], [], 20)
            assert ready, f"writer {i} told nothing for 20 s after {told!r}"
            told += os.read(r, 1)
        os.kill(p.pid, signal.SIGKILL)
        os.close(r)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        state = _state_of(TemplateLock.load(path, missing_ok=False))  # parses, one whole state
        assert state > last  # this writer finished at least one write; never back in time
        last = state
        leftovers = temp_files(tmp_path)
        max_temps = max(max_temps, len(leftovers))
        if any(os.stat(tmp_path / n).st_mtime >= started - 0.05 for n in leftovers):
            left_temp += 1
        # this writer's first update removed every leftover older than STALE_TEMP_SECONDS
        for n in leftovers:
            assert os.stat(tmp_path / n).st_mtime >= started - lockmod.STALE_TEMP_SECONDS - 0.1, n
    elapsed = time.monotonic() - t0
    # the next writer after the leftovers are stale cleans them all up
    past = time.time() - lockmod.STALE_TEMP_SECONDS - 5
    for n in temp_files(tmp_path):
        os.utime(tmp_path / n, (past, past))
    before = len(temp_files(tmp_path))
    update_lock(path, make_entries(N_KILL_ENTRIES, f"S{last + 1}", pad=40))
    assert temp_files(tmp_path) == []
    assert _state_of(TemplateLock.load(path)) == last + 1
    print(
        f"\n[SIGKILL] {kills} writers killed mid-loop in {elapsed:.2f}s; {last} whole states written; "
        f"{left_temp} kills left a temp file (max {max_temps} on disk at once, {before} at the end, "
        "all removed by the next writer); the lock always parsed as one whole state"
    )
