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

The bound (bench/bound.py) is the release-time bound of the project's step trie
(``e2b-matrix plan --json``) with the step costs bench gives the emulator
(``Setup.cost``), computed before any run: the larger of the critical path
(a follower's steps start only once its shared prefix is published) and
max over steps s of (the earliest start of s + the slot time of every step
that cannot start earlier than s / the team's limit), each build's layer upload
and one status poll (``Setup.poll_s``, the E2B backend's poll interval for a
young build) counted as slot time. No runner that runs each distinct step once
and sees a build's end by polling can finish sooner; the same bound without the
polls (``without_polls_*`` in the detail) holds for any client. The trie's step
costs are checked against the emulator's records after each run (the same steps,
the same costs), so the two cannot drift. Where the wall time goes beyond it, the
detail says per run: ``refill_s``, how long a slot a build freed stayed empty
(``refills``), and ``submit_s``, a build's request to its start.

From the emulator's records (as bench_share): wall is the first build request to
the last build ready; the bound before (kept in the detail, ``old_*``) was
max(critical path, total distinct step cost / the team's limit), where the
critical path is the longest chain of step costs one variant needs plus one
upload, and distinct steps are the cache keys of all steps (the FROM base
excluded). The CLI's CPU time is the child's user + system time
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

import bound  # bench/bound.py: bench/ is on sys.path when bench/run.py runs

from e2b_matrix.emulator import BUILD_LIMIT

SIZES = (20, 60, 150)
SHAPES = ("prefix", "independent")
LIMIT = BUILD_LIMIT  # the team's concurrent builds (E2B's default), as the emulator models it
HELD = 8  # slots another process of the team holds in the held run
HELD_SIZE = 60
# Ten releases in the tests' package index (tests/wheelhouse.py: NEXUS) that run on the
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
        return (
            '[variant]\nname = "px-{nexus}-{flavour}"\nalias = "px-{nexus}-{flavour}"\n'
            'layers = ["base", "fuse", "nexus", "extra-tools"]\n\n'
            '[params.nexus]\nversion = "{nexus}"\n\n'
            '[params.extra-tools]\npackages = ["flavour-{flavour}"]\n\n'
            f"[matrix]\nnexus = [{versions}]\nflavour = [{flavours}]\n"
        )
    if shape == "independent":
        ids = ", ".join(f'"{k:03d}"' for k in range(1, n + 1))
        return (
            '[variant]\nname = "ind-{n}"\nalias = "ind-{n}"\nlayers = ["base", "extra-tools"]\n\n'
            '[params.extra-tools]\npackages = ["tool-{n}"]\n\n'
            f"[matrix]\nn = [{ids}]\n"
        )
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class Setup:
    """What bench/run.py gives: the CLI's path, a new emulator with bench's step timings, its upload delay,
    the cost it gives a step, and the E2B backend's first poll interval."""

    cli: str
    emulator: Callable[[], Any]  # () -> a new, unstarted E2BEmulator
    upload_s: float
    cost: Callable[[str, bool], float]  # (a step's text, is it the base) -> seconds, as the emulator runs it
    poll_s: float


@dataclass(frozen=True)
class Trie:
    """A project's step trie (``plan --json``) with bench's step costs, and its bounds."""

    roots: tuple[bound.Step, ...]
    release: bound.Bound  # the bound, on the team's limit
    strict: bound.Bound  # the same without the polls
    held: bound.Bound  # on the slots left when another process holds HELD

    @property
    def costs(self) -> list[float]:
        """The cost of every distinct step, the bases excluded, sorted."""
        out: list[float] = []

        def walk(step: bound.Step) -> None:
            out.append(step.cost)
            for child in step.children:
                walk(child)

        for root in self.roots:
            for child in root.children:
                walk(child)
        return sorted(out)


def project_trie(b, setup: Setup, project: Path) -> Trie:
    """The step trie of ``project`` as ``e2b-matrix plan --json`` prints it, and its bounds."""
    _, _, stdout = run_cli([setup.cli, "-C", str(project), "plan", "--json"], b.env())
    roots = bound.from_plan(json.loads(stdout)["steps"], setup.cost)
    return Trie(
        roots,
        bound.release_bound(roots, LIMIT, setup.upload_s, setup.poll_s),
        bound.release_bound(roots, LIMIT, setup.upload_s, 0.0),
        bound.release_bound(roots, LIMIT - HELD, setup.upload_s, setup.poll_s),
    )


@dataclass(frozen=True)
class Run:
    """One cold build-all, as the emulator and the OS saw it."""

    wall_s: float  # first build request to last build ready (the emulator's clock)
    bound_s: float  # the release-time bound of the project (Trie), on the slots the run had
    critical_s: float  # the longest chain of step costs one variant needs, plus one upload
    distinct_s: float  # the cost of every distinct step once
    distinct: int  # distinct steps (cache keys), the FROM base excluded
    executed: int  # steps that ran (cache misses), the FROM base excluded
    peak: int  # the most builds counted against the team's limit at once (held slots included)
    refusals: int  # 429s answered for the team's limit
    cpu_s: float  # the CLI process's user + system CPU time
    process_s: float  # the CLI process's wall time
    refill_s: float | None  # median of refills(): how long a freed slot stayed empty (None: no refill)
    submit_s: float  # median of a build's request to its start (the SDK's calls before the build runs)

    @property
    def old_bound_s(self) -> float:
        """The bound before: max(critical path, distinct step cost / the team's limit)."""
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


def measure(b, setup: Setup, project: Path, trie: Trie, copy: Path, n: int, hold: int = 0) -> Run:
    """A cold build-all of a fresh copy of ``project`` on a new emulator (``hold`` slots held by another process);
    ``trie`` is the project's: its distinct steps and their costs must be those the emulator ran."""
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
    ran = sorted(round(c, 9) for c in cost.values())
    bases = {round(r.cost, 9) for r in records if r.step == "base"}
    if ran != [round(c, 9) for c in trie.costs] or not bases <= {round(r.cost, 9) for r in trie.roots}:
        raise SystemExit(
            f"bench: {copy.name}: the step trie of `plan --json` ({len(trie.costs)} distinct steps, "
            f"{sum(trie.costs):.2f} s) is not what the emulator ran ({len(ran)}, {sum(ran):.2f} s; "
            f"bases {sorted(bases)}): the bound would not be this project's"
        )
    chain: dict[str, float] = {}
    for r in steps:
        chain[r.build_id] = chain.get(r.build_id, 0.0) + r.cost
    gaps = refills([x.requested_at for x in builds], [x.finished_at for x in builds], LIMIT - hold)
    return Run(
        wall_s=max(x.finished_at for x in builds) - min(x.requested_at for x in builds),
        bound_s=(trie.held if hold else trie.release).bound_s,
        critical_s=max(chain.values()) + setup.upload_s,
        distinct_s=sum(cost.values()),
        distinct=len(cost),
        executed=sum(r.executed for r in steps),
        peak=peak,
        refusals=refusals,
        cpu_s=cpu,
        process_s=seconds,
        refill_s=_med(gaps) if gaps else None,
        submit_s=_med([x.triggered_at - x.requested_at for x in builds]),
    )


def refills(requested: list[float], ended: list[float], slots: int) -> list[float]:
    """For each build request after the first ``slots``, the time since the end that made room for it.

    At most ``slots`` builds count at once, so when the k-th request (0-based, in time order) is made, at least
    k - slots + 1 builds have ended: its gap is measured from the (k - slots)-th end. A runner that refills a slot
    at once has gaps near 0; a gap also holds any wait for a shared prefix's release.
    """
    requested, ended = sorted(requested), sorted(ended)
    return [requested[k] - ended[k - slots] for k in range(slots, len(requested))]


def _med(xs) -> float:
    return statistics.median(xs)


def bench(b, setup: Setup, sizes=SIZES) -> None:
    """The scale figures into ``b`` (run.py's Bench): projects made (requirements compiled), then the runs."""
    sizes = tuple(sorted(set(sizes)))
    held_on = HELD_SIZE in sizes
    print(
        f"scale: cold build-all --json (default options) of {', '.join(map(str, sizes))} variants, shapes "
        f"{' and '.join(SHAPES)}, team limit {LIMIT}"
        + (f"; {HELD_SIZE} prefix variants with {HELD} slots held" if held_on else "")
        + f" ({b.runs} runs each, interleaved)"
    )
    projects = {
        (n, shape): b.project(f"scale-{shape}-{n}", {"variants/scale.toml": variants_file(shape, n)})
        for n in sizes
        for shape in SHAPES
    }
    tries = {key: project_trie(b, setup, project) for key, project in projects.items()}
    for (n, shape), t in tries.items():
        r = t.release
        print(
            f"  {n} {shape}: bound {r.bound_s:.2f} s (critical path {r.critical_s:.2f} s; release-time "
            f"{r.release_s:.2f} s: {r.work_s:.1f} slot-s after {r.at_s:.2f} s)",
            flush=True,
        )
    runs: dict[tuple[int, str], list[Run]] = {key: [] for key in projects}
    held: list[Run] = []
    for i in range(b.runs):
        todo = [(key, 0) for key in projects] + ([((HELD_SIZE, "prefix"), HELD)] if held_on else [])
        for (n, shape), hold in todo:
            got = measure(b, setup, projects[(n, shape)], tries[(n, shape)], b.workdir / f"scale-run-{i}", n, hold)
            (held if hold else runs[(n, shape)]).append(got)
            print(
                f"    run {i + 1}: {n} {shape}{f' ({hold} slots held)' if hold else ''}: wall {got.wall_s:.2f} s, "
                f"bound {got.bound_s:.2f} s (before: {got.old_bound_s:.2f} s), "
                f"steps {got.executed}/{got.distinct}, peak {got.peak}, 429s {got.refusals}, "
                + ("" if got.refill_s is None else f"refill {got.refill_s:.2f} s, ")
                + f"submit {got.submit_s:.2f} s, CLI CPU {got.cpu_s:.2f} s, process {got.process_s:.2f} s",
                flush=True,
            )

    def rounded(xs, digits=3):
        return [round(x, digits) for x in xs]

    for (n, shape), got in runs.items():
        first, bounds = got[0], tries[(n, shape)]
        r, strict = bounds.release, bounds.strict
        b.record(
            f"scale_wall_bound_{n}_{shape}",
            round(_med([g.wall_s / g.bound_s for g in got]), 3),
            len(got),
            wall_s=rounded(g.wall_s for g in got),
            bound_s=round(r.bound_s, 3),
            bound_critical_path_s=round(r.critical_s, 3),
            bound_release_s=round(r.release_s, 3),
            bound_release_after_s=round(r.at_s, 3),
            bound_release_slot_s=round(r.work_s, 3),
            without_polls_bound_s=round(strict.bound_s, 3),
            without_polls_ratio=round(_med([g.wall_s / strict.bound_s for g in got]), 3),
            old_ratio=round(_med([g.wall_s / g.old_bound_s for g in got]), 3),
            old_bound_s=round(first.old_bound_s, 3),
            old_critical_path_s=round(first.critical_s, 3),
            distinct_step_s=round(first.distinct_s, 3),
            process_s=rounded(g.process_s for g in got),
            cli_cpu_s=rounded(g.cpu_s for g in got),
            peak_builds=[g.peak for g in got],
            limit_429s=[g.refusals for g in got],
            refill_s=[None if g.refill_s is None else round(g.refill_s, 3) for g in got],
            submit_s=rounded(g.submit_s for g in got),
            note="wall: first build request to last build ready (the emulator's clock); bound: bench/bound.py's "
            "release-time bound of the step trie (plan --json) with bench's step costs: max(critical path "
            "with each follower waiting for its prefix's release, max over t of t + slot time of the steps "
            f"that cannot start before t / {LIMIT}), each build's upload and one poll "
            f"({setup.poll_s} s) counted as slot time (bound_release_*: that t and slot time; "
            "without_polls_*: no poll counted); old_*: wall / max(the longest chain of step costs one "
            f"variant needs plus one upload, distinct step cost / {LIMIT}), the bound before; refill_s: "
            "per run, the median time a slot a build freed stayed empty (scale.refills: the k-th request "
            f"after the first {LIMIT} against the (k - {LIMIT})-th end; the bound counts one poll); "
            "submit_s: per run, "
            "the median of a build's request to its start (the SDK's calls: request, file links, start)",
        )
        b.record(
            f"scale_steps_ratio_{n}_{shape}",
            round(_med([g.executed / g.distinct for g in got]), 3),
            len(got),
            distinct_steps=first.distinct,
            executed=[g.executed for g in got],
            note="steps a build ran (cache misses, cut short included) / distinct steps (the FROM base excluded)",
        )
    every = [g for got in runs.values() for g in got] + held
    b.record(
        "scale_peak_builds",
        max(g.peak for g in every),
        len(every),
        by_run={f"{n}_{shape}": [g.peak for g in got] for (n, shape), got in runs.items()}
        | ({f"{HELD_SIZE}_prefix_held_{HELD}": [g.peak for g in held]} if held else {}),
        note=f"the most builds counted against the team's limit ({LIMIT}) at once, held slots included; the "
        "emulator answers 429 past the limit, so this shows how many slots a run filled",
    )
    if held:
        b.record(
            "scale_429_per_variant_held",
            round(_med([g.refusals for g in held]) / HELD_SIZE, 3),
            len(held),
            limit_429s=[g.refusals for g in held],
            wall_s=rounded(g.wall_s for g in held),
            bound_s=round(held[0].bound_s, 3),
            old_bound_s=round(held[0].old_bound_s, 3),
            wall_bound=round(_med([g.wall_s / g.bound_s for g in held]), 3),
            peak_builds=[g.peak for g in held],
            process_s=rounded(g.process_s for g in held),
            refill_s=[None if g.refill_s is None else round(g.refill_s, 3) for g in held],
            note=f"{HELD_SIZE} prefix variants while another process of the team holds {HELD} of {LIMIT} "
            "slots: build requests the emulator answered 429 for the limit / variants; bound_s: the "
            f"release-time bound on the {LIMIT - HELD} slots left (wall_bound: wall / it)",
        )
    if {SIZES[0], SIZES[-1]} <= set(sizes):
        lo, hi = SIZES[0], SIZES[-1]

        def per_variant(shape: str, n: int) -> float:
            return _med([g.cpu_s for g in runs[(n, shape)]]) / n

        ratios = {shape: round(per_variant(shape, hi) / per_variant(shape, lo), 3) for shape in SHAPES}
        b.record(
            "scale_cpu_ratio",
            max(ratios.values()),
            b.runs,
            by_shape=ratios,
            cli_cpu_s={f"{n}_{shape}": rounded((g.cpu_s for g in got), 2) for (n, shape), got in runs.items()},
            cpu_ms_per_variant={f"{n}_{shape}": round(per_variant(shape, n) * 1000, 1) for (n, shape) in runs},
            note=f"the CLI's user + system CPU (os.wait4) per variant at {hi} / at {lo} (medians of the runs), "
            "the larger of the two shapes' ratios; the CPU includes the fixed start-up (imports) and "
            "status polling, which grows with the run's wall time",
        )
    else:
        print(f"  scale_cpu_ratio: not measured (needs sizes {SIZES[0]} and {SIZES[-1]})")
