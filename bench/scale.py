"""The `scale` group of bench/run.py: cold build-alls of 20, 60 and 150 variants at the team's limit.

Each run is a cold `e2b-matrix build-all --json` with default options (the real CLI
as a subprocess) of a fresh copy of a project, on a new emulator (an empty layer
cache, the team limit of 20 concurrent builds, bench's step timings: run.py
``cold_emulator``). Two shapes:

- ``prefix``: 10 nexus-ai-fs versions x N/10 flavours, layers base, fuse, nexus,
  extra-tools. Every variant shares base and fuse, each nexus version is shared
  by its flavours, and a flavour (its own apt package) is the one step a
  variant has alone.
- ``independent``: N variants of base + extra-tools, each with its own apt
  package: they share the base layer and no step after it.

From the emulator's records (as bench_share): wall is the first build request to
the last build ready; the critical path is the longest chain of step costs one
variant needs plus one upload; distinct steps are the cache keys of all steps
(the FROM base excluded); the bound is max(critical path, total distinct step
cost / the team's limit). The CLI's CPU time is the child's user + system time
from ``os.wait4``. Every figure is a median over runs interleaved across sizes
and shapes; a held run does the 60-variant prefix build-all while another
process of the team holds 8 slots (``E2BEmulator.hold_slots``).

This module imports nothing of e2b_matrix: it only runs the CLI, so it measures
whatever runner the CLI has. bench/run.py runs it (``--only scale``, ``--scale-sizes``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2b_matrix.emulator import BUILD_LIMIT

SIZES = (20, 60, 150)
SHAPES = ("prefix", "independent")
LIMIT = BUILD_LIMIT  # the team's concurrent builds (E2B's default), as the emulator models it
HELD = 8  # slots another process of the team holds in the held run
HELD_SIZE = 60
# Ten releases in the tests' package index (tests/data/index/nexus-ai-fs/json) that run on the
# base's Python 3.13; tests/wheelhouse.py `shipped` makes a wheel of each, so `compile` pins them.
NEXUS = ("0.1.2", "0.3.9", "0.5.5", "0.5.6", "0.6.0", "0.6.4", "0.7.0", "0.9.0", "0.9.9", "0.9.25")
TIMEOUT = 900.0


def sizes(text: str) -> tuple[int, ...]:
    """``--scale-sizes``: "20,60" -> (20, 60), a subset of SIZES."""
    try:
        got = tuple(sorted({int(n) for n in text.split(",")}))
    except ValueError:
        got = ()
    if not got or not set(got) <= set(SIZES):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated subset of {','.join(map(str, SIZES))}")
    return got


def variants_file(shape: str, n: int) -> str:
    """The variants file of ``n`` variants of ``shape`` (one [matrix])."""
    if shape == "prefix":
        if n % len(NEXUS):
            raise ValueError(f"prefix: {n} variants is not a multiple of {len(NEXUS)} nexus versions")
        versions = ", ".join(f'"{v}"' for v in NEXUS)
        flavours = ", ".join(f'"f{k:02d}"' for k in range(1, n // len(NEXUS) + 1))
        return ('[variant]\nname = "px-{nexus}-{flavour}"\nalias = "px-{nexus}-{flavour}"\n'
                'layers = ["base", "fuse", "nexus", "extra-tools"]\n\n'
                '[params.nexus]\nversion = "{nexus}"\n\n'
                '[params.extra-tools]\npackages = ["flavour-{flavour}"]\n\n'
                f"[matrix]\nnexus = [{versions}]\nflavour = [{flavours}]\n")
    if shape == "independent":
        ids = ", ".join(f'"{k:03d}"' for k in range(1, n + 1))
        return ('[variant]\nname = "ind-{n}"\nalias = "ind-{n}"\nlayers = ["base", "extra-tools"]\n\n'
                '[params.extra-tools]\npackages = ["tool-{n}"]\n\n'
                f"[matrix]\nn = [{ids}]\n")
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class Setup:
    """What bench/run.py gives: the CLI's path, a new emulator with bench's step timings, its upload delay."""

    cli: str
    emulator: Callable[[], Any]   # () -> a new, unstarted E2BEmulator
    upload_s: float


@dataclass(frozen=True)
class Run:
    """One cold build-all, as the emulator and the OS saw it."""

    wall_s: float        # first build request to last build ready (the emulator's clock)
    critical_s: float    # the longest chain of step costs one variant needs, plus one upload
    distinct_s: float    # the cost of every distinct step once
    distinct: int        # distinct steps (cache keys), the FROM base excluded
    executed: int        # steps that ran (cache misses), the FROM base excluded
    peak: int            # the most builds counted against the team's limit at once (held slots included)
    refusals: int        # 429s answered for the team's limit
    cpu_s: float         # the CLI process's user + system CPU time
    process_s: float     # the CLI process's wall time

    @property
    def bound_s(self) -> float:
        return max(self.critical_s, self.distinct_s / LIMIT)


def run_cli(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd``; (wall seconds, CPU seconds of the child: user + system, its stdout). Exits on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: its rusage, which Popen.wait drops
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {proc.returncode}\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, stdout


def measure(b, setup: Setup, project: Path, copy: Path, n: int, hold: int = 0) -> Run:
    """A cold build-all of a fresh copy of ``project`` on a new emulator (``hold`` slots held by another process)."""
    shutil.copytree(project, copy)
    try:
        with setup.emulator() as emu:
            if hold:
                emu.hold_slots(hold)
            seconds, cpu, stdout = run_cli([setup.cli, "-C", str(copy), "build-all", "--json"], b.env(emu))
            statuses = [r["status"] for r in json.loads(stdout)]
            if statuses != ["built"] * n:
                raise SystemExit(f"bench: {copy.name}: expected {n} builds, got {statuses}")
            records, builds = emu.step_records, emu.builds
            peak, refusals = emu.peak_builds, emu.limit_refusals
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    steps = [r for r in records if r.step != "base"]
    cost = {r.key: r.cost for r in steps}
    chain: dict[str, float] = {}
    for r in steps:
        chain[r.build_id] = chain.get(r.build_id, 0.0) + r.cost
    return Run(wall_s=max(x.finished_at for x in builds) - min(x.requested_at for x in builds),
               critical_s=max(chain.values()) + setup.upload_s, distinct_s=sum(cost.values()), distinct=len(cost),
               executed=sum(r.executed for r in steps), peak=peak, refusals=refusals, cpu_s=cpu,
               process_s=seconds)


def _med(xs) -> float:
    return statistics.median(xs)


def bench(b, setup: Setup, sizes=SIZES) -> None:
    """The scale figures into ``b`` (run.py's Bench): projects made (requirements compiled), then the runs."""
    sizes = tuple(sorted(set(sizes)))
    held_on = HELD_SIZE in sizes
    print(f"scale: cold build-all --json (default options) of {', '.join(map(str, sizes))} variants, shapes "
          f"{' and '.join(SHAPES)}, team limit {LIMIT}" + (f"; {HELD_SIZE} prefix variants with {HELD} slots held"
                                                          if held_on else "") + f" ({b.runs} runs each, interleaved)")
    projects = {(n, shape): b.project(f"scale-{shape}-{n}", {"variants/scale.toml": variants_file(shape, n)})
                for n in sizes for shape in SHAPES}
    runs: dict[tuple[int, str], list[Run]] = {key: [] for key in projects}
    held: list[Run] = []
    for i in range(b.runs):
        todo = [(key, 0) for key in projects] + ([((HELD_SIZE, "prefix"), HELD)] if held_on else [])
        for (n, shape), hold in todo:
            got = measure(b, setup, projects[(n, shape)], b.workdir / f"scale-run-{i}", n, hold)
            (held if hold else runs[(n, shape)]).append(got)
            print(f"    run {i + 1}: {n} {shape}{f' ({hold} slots held)' if hold else ''}: wall {got.wall_s:.2f} s, "
                  f"bound {got.bound_s:.2f} s, steps {got.executed}/{got.distinct}, peak {got.peak}, "
                  f"429s {got.refusals}, CLI CPU {got.cpu_s:.2f} s, process {got.process_s:.2f} s", flush=True)

    def rounded(xs, digits=3):
        return [round(x, digits) for x in xs]

    for (n, shape), got in runs.items():
        first = got[0]
        b.record(f"scale_wall_bound_{n}_{shape}", round(_med([g.wall_s / g.bound_s for g in got]), 3), len(got),
                 wall_s=rounded(g.wall_s for g in got), bound_s=round(first.bound_s, 3),
                 critical_path_s=round(first.critical_s, 3), distinct_step_s=round(first.distinct_s, 3),
                 process_s=rounded(g.process_s for g in got), cli_cpu_s=rounded(g.cpu_s for g in got),
                 peak_builds=[g.peak for g in got], limit_429s=[g.refusals for g in got],
                 note="wall: first build request to last build ready (the emulator's clock); bound: max(critical "
                      f"path, distinct step cost / {LIMIT}); critical path: the longest chain of step costs one "
                      "variant needs plus one upload")
        b.record(f"scale_steps_ratio_{n}_{shape}", round(_med([g.executed / g.distinct for g in got]), 3), len(got),
                 distinct_steps=first.distinct, executed=[g.executed for g in got],
                 note="steps a build ran (cache misses, cut short included) / distinct steps (the FROM base excluded)")
    every = [g for got in runs.values() for g in got] + held
    b.record("scale_peak_builds", max(g.peak for g in every), len(every),
             by_run={f"{n}_{shape}": [g.peak for g in got] for (n, shape), got in runs.items()}
             | ({f"{HELD_SIZE}_prefix_held_{HELD}": [g.peak for g in held]} if held else {}),
             note=f"the most builds counted against the team's limit ({LIMIT}) at once, held slots included; the "
                  "emulator answers 429 past the limit, so this shows how many slots a run filled")
    if held:
        b.record("scale_429_per_variant_held", round(_med([g.refusals for g in held]) / HELD_SIZE, 3), len(held),
                 limit_429s=[g.refusals for g in held], wall_s=rounded(g.wall_s for g in held),
                 bound_s=round(held[0].bound_s, 3), peak_builds=[g.peak for g in held],
                 process_s=rounded(g.process_s for g in held),
                 note=f"{HELD_SIZE} prefix variants while another process of the team holds {HELD} of {LIMIT} "
                      "slots: build requests the emulator answered 429 for the limit / variants")
    if {SIZES[0], SIZES[-1]} <= set(sizes):
        lo, hi = SIZES[0], SIZES[-1]

        def per_variant(shape: str, n: int) -> float:
            return _med([g.cpu_s for g in runs[(n, shape)]]) / n

        ratios = {shape: round(per_variant(shape, hi) / per_variant(shape, lo), 3) for shape in SHAPES}
        b.record("scale_cpu_ratio", max(ratios.values()), b.runs, by_shape=ratios,
                 cli_cpu_s={f"{n}_{shape}": rounded((g.cpu_s for g in got), 2) for (n, shape), got in runs.items()},
                 cpu_ms_per_variant={f"{n}_{shape}": round(per_variant(shape, n) * 1000, 1)
                                     for (n, shape) in runs},
                 note=f"the CLI's user + system CPU (os.wait4) per variant at {hi} / at {lo} (medians of the runs), "
                      "the larger of the two shapes' ratios; the CPU includes the fixed start-up (imports) and "
                      "status polling, which grows with the run's wall time")
    else:
        print(f"  scale_cpu_ratio: not measured (needs sizes {SIZES[0]} and {SIZES[-1]})")
