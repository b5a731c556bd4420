#!/usr/bin/env python3
"""The cost of one lock write as the lock grows: not a `make bench` group (bench/run.py has its own).

    .venv/bin/python bench/lock_write.py [--sizes 1,20,60,150] [--runs 40] [--batch K] [--profile 150] [--src DIR]

For each size N: a lock of N entries as build-all writes them (bench/run.py
``realistic_entries``: layers, inputs, domain, channels, 5 builds of history)
in a temporary folder, then ``--runs`` calls of ``store.record_build`` that each
record a new build of one of its aliases (the previous build goes to history,
as after every finished build). Prints, in ms per write, the median wall time,
its 90th percentile and the median CPU time of the process (the machine may
be shared: CPU time is the steadier figure). ``--batch K``: each write records
K builds at once (``store.record_builds``; K at most N). ``--profile N`` prints where one
write's time goes at size N (cProfile, cumulative, the top 25 lines).
``--src DIR`` imports e2b_matrix from another checkout's src (to measure a
before and an after side by side, interleaved).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv[:-1] else str(HERE.parent / "src")
sys.path.insert(0, str(HERE))

from run import realistic_entries  # noqa: E402  (the one description of a realistic lock)

sys.path.insert(0, SRC)  # before the src run.py put first

import attrs  # noqa: E402

from e2b_matrix.lock import store  # noqa: E402

assert Path(store.__file__).is_relative_to(Path(SRC).resolve()), store.__file__


def new_build(entry, k: int):
    return attrs.evolve(entry, build_id=f"rebuild-{k}", channels={}, history=())


def measure(n: int, runs: int, folder: Path, batch: int = 1, profile: bool = False) -> tuple[list[float], list[float]]:
    path = folder / f"templates-{n}.lock"
    entries = realistic_entries(n)
    cache = store.ParseCache()  # one writer's, as the runner's lock writer keeps one per run
    store.update_lock(path, entries, cache=cache)
    times, cpu = [], []
    prof = cProfile.Profile() if profile else None
    for k in range(runs):
        builds = [new_build(entries[(k * batch + j) % n], k) for j in range(min(batch, n))]
        t0, c0 = time.perf_counter(), time.process_time()
        if prof is not None:
            prof.enable()
        if len(builds) == 1:
            store.record_build(path, builds[0], cache=cache)
        else:
            store.record_builds(path, builds, cache=cache)
        if prof is not None:
            prof.disable()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return times, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,20,60,150")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=1, metavar="K")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--src", default=SRC, help="the src folder e2b_matrix is imported from")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lock-write-") as tmp:
        if args.profile:
            measure(args.profile, args.runs, Path(tmp), args.batch, profile=True)
            return 0
        print(
            f"{'entries':>7}  {'wall ms':>8}  {'p90 ms':>7}  {'cpu ms':>7}  "
            f"({'record_build' if args.batch == 1 else f'record_builds of {args.batch}'}, "
            f"{args.runs} writes each; {SRC})"
        )
        for n in map(int, args.sizes.split(",")):
            t, cpu = measure(n, args.runs, Path(tmp), args.batch)
            p90 = statistics.quantiles(t, n=10)[-1]
            print(f"{n:>7}  {statistics.median(t):>8.2f}  {p90:>7.2f}  {statistics.median(cpu):>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
