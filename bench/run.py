#!/usr/bin/env python3
"""e2b-matrix benchmarks: `make bench` (or `.venv/bin/python bench/run.py`).

Every figure comes from the real code paths: the real CLI run as a
subprocess (`.venv/bin/e2b-matrix ...`, or `python -m e2b_matrix` where
`-X importtime` is needed) in temporary project directories, building
through the real e2b SDK against the E2B API emulator (e2b_matrix.emulator)
started in this process on 127.0.0.1. No traffic leaves 127.0.0.1: uv
answers "latest" and compiles from the tests' package index, tiny wheels and
a file:// simple index of them (E2B_MATRIX_UV_ARGS, tests/wheelhouse.py),
HOME and XDG_CACHE_HOME point into a temporary directory, and no proxy is used.
Each project's requirements files are compiled when it is made, before any
figure is taken; the shipped variants build from their committed files (--locked).

Each figure is a median of several runs (the count is printed and stored as
"runs"); a ratio is always measured side by side in one session, its runs
interleaved. The table goes to stdout and the results to .bench/results.json:
{name: {"value", "unit", "goal", "ok", "runs", "detail"}}.

  concurrency_ratio   build-all of 8 variants (each build takes T s on the
                      emulator) / the same command with one variant; --force
  sequential_ratio    the same 8 with --jobs 1 / one (informational: fixed
                      start-up counts once, so it is below 8)
  noop_ratio          build-all with every variant fresh / `e2b-matrix --version`
                      (whole processes, the real path: load, resolve, plan)
  noop_requests       API requests the fresh build-all made
  noop_imports_e2b    did the fresh build-all import e2b?
  startup_imports_e2b did `--version`, `list`, `plan` or `resolve` import e2b?
                      (list_s, plan_s, resolve_s: their whole-process times;
                      the detail names the build machinery each imported)
  version_ratio       `e2b-matrix --version` / `python -c "import click"`, whole
                      processes: against the floor of any click CLI (the ratio
                      to `python -c pass`, the goal before, stays in the detail)
  resolve_ratio       `e2b-matrix resolve NAME` / `python -c "import click, attrs,
                      tomllib; tomllib.load(open(LOCK, 'rb'))"` on the same lock:
                      against what the dependencies alone cost (the ratio to a
                      bare tomllib.load, the goal before, stays in the detail)
  lock_load_ratio     import e2b_matrix.lock + TemplateLock.load / import tomllib
                      + tomllib.load of the same 100-entry lock (history and
                      channels included, written in another table order), each
                      timed in its own fresh process
  lock_lookup_us      lock.template_id(name) and TemplateResolver.resolve(name),
                      the slower of the two
  plan_N_s            `e2b-matrix plan` of N = 10, 100, 1000 variants (a matrix)
  logging_ratio       8 builds of 20,000 log lines each with log files / with
                      E2B_MATRIX_NO_LOG_FILES=1
  e2b_steps_ratio     steps executed / distinct steps in a cold build-all of the
                      shipped variants on the emulator's layer cache (sharing)
  e2b_share_wall_ratio  that build-all's wall time (first request to last build
                      ready) / the critical path of distinct steps; both beside
                      the same figures for the all-at-once schedule (--no-share)
  scale_*             bench/scale.py: cold build-alls of N = 20, 60, 150 variants
                      (default options) on the emulator with the team limit (20)
                      and the share group's step timings, in two shapes: prefix
                      (10 nexus versions x N/10 flavours sharing base, fuse and
                      nexus) and independent (sharing no step after the base)
  scale_wall_bound_<N>_<shape>  wall (first request to last build ready) /
                      the release-time bound (bench/bound.py), from the step trie
                      and the step costs, before any run: the larger of the
                      critical path (a follower's steps start once its prefix is
                      published) and max over steps s of (earliest start of s +
                      the slot time of the steps that cannot start earlier / 20),
                      each build's upload and one status poll counted as slot
                      time; the bound before, max(critical path, distinct step
                      cost / 20), stays in the detail (old_*)
  scale_steps_ratio_<N>_<shape>  steps executed / distinct steps
  scale_peak_builds   the most builds counted against the limit at once, over
                      every scale run
  scale_429_per_variant_held  429s answered for the limit / variants, in a
                      60-variant prefix build-all while another process holds 8
  scale_cpu_ratio     the CLI's CPU time (user + system) per variant at 150 / at
                      20, the larger of the two shapes' ratios; raw seconds in
                      the detail

Options: --runs N (build runs, default 3, at least 3), --only GROUP[,GROUP]
(concurrency, noop, startup, lock, plan, logging, share, scale), --scale-sizes N[,N]
(of 20, 60, 150: the sizes the scale group builds). Python startup is measured
with byte-code caching on (PYTHONPYCACHEPREFIX=.bench/pycache), as after a
normal install, whatever PYTHONDONTWRITEBYTECODE says in the caller's shell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
OUT = ROOT / ".bench"
BIN = Path(sys.executable).parent
CLI = str(BIN / "e2b-matrix")
PY = sys.executable
API_KEY = "e2b_" + "0123456789abcdef" * 2 + "01234567"

sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT / "src"))
import scale  # noqa: E402  (bench/scale.py)

from e2b_matrix.emulator import E2BEmulator  # noqa: E402
from wheelhouse import SimpleIndex, index_url, shipped  # noqa: E402

GROUPS = ("concurrency", "noop", "startup", "lock", "plan", "logging", "share", "scale")
GOALS = {  # name: (unit, goal text, check)
    "concurrency_ratio": ("x", "<= 1.15", lambda v: v <= 1.15),
    "sequential_ratio": ("x", "~8 less fixed start-up (informational)", None),
    "noop_ratio": ("x", "<= 2.0", lambda v: v <= 2.0),
    "noop_requests": ("requests", "== 0", lambda v: v == 0),
    "noop_imports_e2b": ("bool", "== false", lambda v: v is False),
    "startup_imports_e2b": ("bool", "== false", lambda v: v is False),
    "version_ratio": ("x", "<= 1.5", lambda v: v <= 1.5),
    "resolve_ratio": ("x", "<= 1.5", lambda v: v <= 1.5),
    "list_s": ("s", None, None),
    "plan_s": ("s", None, None),
    "resolve_s": ("s", None, None),
    "lock_load_ratio": ("x", "<= 1.5", lambda v: v <= 1.5),
    "lock_lookup_us": ("us", "<= 5", lambda v: v <= 5),
    "plan_10_s": ("s", None, None),
    "plan_100_s": ("s", None, None),
    "plan_1000_s": ("s", "<= 2", lambda v: v <= 2),
    "plan_ms_per_variant": ("ms", "flat (informational)", None),
    "logging_ratio": ("x", "<= 1.10", lambda v: v <= 1.10),
    "e2b_steps_ratio": ("x", "== 1.0", lambda v: v == 1.0),
    "e2b_share_wall_ratio": ("x", "<= 1.15", lambda v: v <= 1.15),
    **{
        f"scale_wall_bound_{n}_{shape}": ("x", "<= 1.10", lambda v: v <= 1.10)
        for n in scale.SIZES
        for shape in scale.SHAPES
    },
    **{
        f"scale_steps_ratio_{n}_{shape}": ("x", "== 1.0", lambda v: v == 1.0)
        for n in scale.SIZES
        for shape in scale.SHAPES
    },
    "scale_peak_builds": ("builds", f"<= {scale.LIMIT}", lambda v: v <= scale.LIMIT),
    "scale_429_per_variant_held": ("x", "<= 0.3", lambda v: v <= 0.3),
    "scale_cpu_ratio": ("x", "<= 1.3", lambda v: v <= 1.3),
}
# bench's step timings on the emulator (share, scale): E2B's slow steps, else STEP_S a step;
# a built layer is published UPLOAD_S after its step
STEP_COSTS = {
    "apt-get": 2.0,
    "-r /opt/e2b-matrix/requirements/nexus-": 1.5,  # the hashed installs
    "-r /opt/e2b-matrix/requirements/fuse-": 1.0,
}
STEP_S, UPLOAD_S = 0.3, 0.2


def step_cost(text: str, base: bool) -> float:
    """What cold_emulator's emulator runs a step for (E2BEmulator.set_step_cost: the latest rule whose text is in
    the step's wins, else STEP_S, the base 0); scale.py checks it against the emulator's records."""
    return next((s for t, s in reversed(STEP_COSTS.items()) if t in text), 0.0 if base else STEP_S)


# --------------------------------------------------------------------------- plumbing


class Bench:
    def __init__(self, runs: int, workdir: Path):
        self.runs = runs
        self.workdir = workdir
        self.results: dict[str, dict] = {}
        self.home = workdir / "home"
        self.cache = workdir / "cache"
        self.home.mkdir()
        self.cache.mkdir()
        self.wheels = shipped(workdir / "wheels")

    def env(self, emu: E2BEmulator | None = None, **extra: str) -> dict[str, str]:
        """A child's environment: local index, no credentials of the user, no proxy, pyc caching on."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("E2B_", "PYTHON")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        env.update(
            HOME=str(self.home),
            XDG_CACHE_HOME=str(self.cache),
            E2B_MATRIX_UV_ARGS=f"--index-url {index_url(self.wheels)}",
            PYTHONPYCACHEPREFIX=str(OUT / "pycache"),
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        if emu is not None:
            env.update(emu.env())
        env.update(extra)
        return env

    def record(self, name: str, value, runs: int | None = None, **detail) -> None:
        unit, goal, check = GOALS[name]
        ok = None if check is None else bool(check(value))
        self.results[name] = {"value": value, "unit": unit, "goal": goal, "ok": ok, "runs": runs, "detail": detail}
        shown = f"{value:.3f}" if isinstance(value, float) else str(value).lower()
        print(
            f"  {name} = {shown} {unit}" + ("" if ok is None else f"  ({'ok' if ok else 'MISSED'}: {goal})"), flush=True
        )

    def project(self, name: str, files: dict[str, str]) -> Path:
        """A project of ``files``, its requirements files compiled (not timed)."""
        root = self.workdir / name
        for rel, text in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        timed([CLI, "-C", str(root), "compile", "-q"], self.env())
        return root


def timed(cmd: list[str], env: dict[str, str], check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(
            f"bench: {' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return seconds, proc


def med(xs) -> float:
    return statistics.median(xs)


def matrix_file(prefix: str, n: int) -> str:
    """A variants file whose [matrix] makes n variants of layers base + nexus."""
    values = ", ".join(str(i) for i in range(1, n + 1))
    return (
        f'[variant]\nname = "{prefix}-{{n}}"\nalias = "{prefix}-{{n}}"\nlayers = ["base", "nexus"]\n\n'
        f'[params.nexus]\nversion = "0.5.6"\n\n[matrix]\nn = [{values}]\n'
    )


def build_statuses(proc: subprocess.CompletedProcess) -> list[str]:
    return [r["status"] for r in json.loads(proc.stdout)]


# --------------------------------------------------------------------------- benchmarks


def bench_concurrency(b: Bench, emu: E2BEmulator) -> None:
    """8 variants at once vs one, and --jobs 1; every build takes T seconds on the emulator."""
    T = 2.0
    print(f"concurrency: build-all --force of 8 variants vs 1 vs 8 with --jobs 1 (T = {T} s per build)")
    one = b.project("conc-one", {"variants/conc.toml": matrix_file("conc", 1)})
    eight = b.project("conc-eight", {"variants/conc.toml": matrix_file("conc", 8)})
    for n in range(1, 9):
        emu.configure(f"conc-{n}", duration=T, log_lines=50)
    env = b.env(emu)
    # warm-up: byte-code caches, the OS page cache (not measured)
    timed([CLI, "-C", str(one), "build-all", "--force", "--json"], env)
    times: dict[str, list[float]] = {"one": [], "all": [], "seq": []}
    requests: dict[str, list[int]] = {k: [] for k in times}
    cmds = {
        "one": [CLI, "-C", str(one), "build-all", "--force", "--json"],
        "all": [CLI, "-C", str(eight), "build-all", "--force", "--json"],
        "seq": [CLI, "-C", str(eight), "build-all", "--force", "--json", "--jobs", "1"],
    }
    for _ in range(b.runs):
        for key, cmd in cmds.items():
            emu.reset_counters()
            t, proc = timed(cmd, env)
            statuses = build_statuses(proc)
            assert statuses == ["built"] * (1 if key == "one" else 8), statuses
            times[key].append(t)
            requests[key].append(emu.request_count)
    one_s, all_s, seq_s = med(times["one"]), med(times["all"]), med(times["seq"])
    detail = {
        "build_seconds_T": T,
        "one_s": round(one_s, 3),
        "all8_s": round(all_s, 3),
        "seq8_s": round(seq_s, 3),
        "times": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "requests_per_run": {k: med(v) for k, v in requests.items()},
        "concurrency_overhead_s": round(all_s - one_s, 3),
    }
    b.record("concurrency_ratio", round(all_s / one_s, 3), b.runs, **detail)
    # A process costs S (interpreter, imports incl. e2b, config) once, plus B
    # per build it waits for (T, submit, polling, the lock write): one = S + B,
    # --jobs 1 = S + 8 B, so the ratio is 8 only when S is small next to B.
    per_build = (seq_s - one_s) / 7
    b.record(
        "sequential_ratio",
        round(seq_s / one_s, 3),
        b.runs,
        per_build_s=round(per_build, 3),
        startup_s=round(one_s - per_build, 3),
        note="one = S + B, seq = S + 8 B: B = (seq - one) / 7 per build, S = one - B per process",
    )


def bench_noop(b: Bench, emu: E2BEmulator) -> None:
    """A build-all where every variant is fresh, against `e2b-matrix --version`."""
    runs = max(15, b.runs)
    print(f"noop: build-all with all 8 variants fresh vs --version ({runs} runs each, interleaved)")
    proj = b.project("noop", {"variants/conc.toml": matrix_file("noop", 8)})
    for n in range(1, 9):
        emu.configure(f"noop-{n}", duration=0.2, log_lines=5)
    env = b.env(emu)
    t, proc = timed([CLI, "-C", str(proj), "build-all", "--json"], env)  # writes the lock
    assert build_statuses(proc) == ["built"] * 8
    version_cmd = [CLI, "--version"]
    noop_cmd = [CLI, "-C", str(proj), "build-all", "--json"]
    for _ in range(2):  # warm-up
        timed(version_cmd, env), timed(noop_cmd, env)
    shutil.rmtree(proj / "logs", ignore_errors=True)  # the build above wrote some; the no-op must write none
    emu.reset_counters()
    versions, noops = [], []
    for _ in range(runs):
        versions.append(timed(version_cmd, env)[0])
        t, proc = timed(noop_cmd, env)
        assert build_statuses(proc) == ["fresh"] * 8, proc.stdout
        noops.append(t)
    requests = emu.request_count
    logs_written = (proj / "logs").exists() and any((proj / "logs").iterdir())
    _, proc = timed([PY, "-X", "importtime", "-m", "e2b_matrix", "-C", str(proj), "build-all", "--json"], env)
    imported = sorted(
        {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in proc.stderr.splitlines()
            if line.startswith("import time:")
        }
    )

    # The same with the index served over HTTP on 127.0.0.1 (as a registry is): uv asks it with
    # its cache (it revalidates what the index does not say is fresh).
    http_versions, http_noops = [], []
    with SimpleIndex(b.wheels) as url:
        http_env = b.env(emu, E2B_MATRIX_UV_ARGS=f"--index-url {url}", XDG_CACHE_HOME=str(b.workdir / "http-cache"))
        timed(noop_cmd, http_env)  # fills the index cache
        emu.reset_counters()
        for _ in range(runs):
            http_versions.append(timed(version_cmd, http_env)[0])
            t, proc = timed(noop_cmd, http_env)
            assert build_statuses(proc) == ["fresh"] * 8, proc.stdout
            http_noops.append(t)
        requests += emu.request_count
    ratio = med(noops) / med(versions)
    b.record(
        "noop_ratio",
        round(ratio, 3),
        runs,
        noop_s=round(med(noops), 4),
        version_s=round(med(versions), 4),
        noop_minus_version_ms=round((med(noops) - med(versions)) * 1000, 1),
        http_index_noop_ratio=round(med(http_noops) / med(http_versions), 3),
        http_index_noop_s=round(med(http_noops), 4),
        logs_written=logs_written,
        note="the real path every time: load 8 variants, resolve them (uv checks their pinned nexus "
        "version), compare with the lock; the tests' index as file:// for the headline; "
        "http_index_*: the index over HTTP on 127.0.0.1, uv's cache warm",
    )
    b.record("noop_requests", requests, runs * 2)
    b.record("noop_imports_e2b", "e2b" in imported, 1, top_level_imports=imported)


# What a command that builds nothing must not import: the build machinery and the backends it does not use.
BUILD_MACHINERY = (
    "e2b",
    "rich",
    "httpx",
    "concurrent",
    "concurrent_log_handler",
    "uv",
    "e2b_matrix.runner",
    "e2b_matrix.backends.docker",
    "e2b_matrix.backends.docker_discovery",
    "e2b_matrix.backends.docker_engine",
)


# The CLI's main(argv), then every module it imported (sys.modules: -X importtime misses importlib.import_module).
MODULES_CHILD = r"""
import sys
from e2b_matrix.cli import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
modules = sorted(sys.modules)
import json
with open(sys.argv[1], "w") as f:
    json.dump(modules, f)
"""


def bench_startup(b: Bench, emu: E2BEmulator) -> None:
    """Whole processes, side by side: `--version` / `python -c "import click"`, `resolve NAME` / importing
    click and attrs and a tomllib.load of the same lock (the floor of the dependencies themselves); the
    goals before (against `python -c pass` and a bare tomllib.load) in the detail; `list` and `plan`; and
    what each command imports (sys.modules at its end)."""
    runs = max(15, b.runs)
    print(
        f"startup: --version vs import click, resolve vs import click, attrs + tomllib.load of its lock, list, plan "
        f"({runs} runs each, interleaved)"
    )
    proj = b.project("startup", {"variants/conc.toml": matrix_file("start", 8)})
    for n in range(1, 9):
        emu.configure(f"start-{n}", duration=0.2, log_lines=5)
    env = b.env(emu, PYTHONPATH=str(ROOT / "src"))  # this checkout's code, whatever the venv installed
    timed([CLI, "-C", str(proj), "build-all", "--json"], env)
    lock = proj / "templates.lock"
    commands = {
        "version": ["--version"],
        "list": ["-C", str(proj), "list"],
        "plan": ["-C", str(proj), "plan"],
        "resolve": ["-C", str(proj), "resolve", "start-3"],
    }
    cmds = {
        "pass": [PY, "-c", "pass"],
        "click": [PY, "-c", "import click"],  # what click alone costs
        "tomllib": [PY, "-c", f"import tomllib; tomllib.load(open({str(lock)!r}, 'rb'))"],
        "floor": [PY, "-c", f"import click, attrs, tomllib; tomllib.load(open({str(lock)!r}, 'rb'))"],
        **{name: [CLI, *args] for name, args in commands.items()},
    }
    imported = {}
    for name, args in commands.items():
        out = b.workdir / f"modules-{name}.json"
        timed([PY, "-c", MODULES_CHILD, str(out), *args], env)
        modules = json.loads(out.read_text())
        heavy = sorted(
            m for m in modules if m.startswith(tuple(p + "." for p in BUILD_MACHINERY)) or m in BUILD_MACHINERY
        )
        imported[name] = {"e2b": "e2b" in modules, "modules": len(modules), "build_machinery": heavy}
    for cmd in cmds.values():  # warm-up: byte-code caches, the OS page cache (not measured)
        timed(cmd, env)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    order = list(cmds)
    shuffle = random.Random(18)
    for _ in range(runs):
        shuffle.shuffle(order)  # interleaved, in a different order every round
        for name in order:
            times[name].append(timed(cmds[name], env)[0])
    t = {name: med(v) for name, v in times.items()}
    b.record(
        "version_ratio",
        round(t["version"] / t["click"], 3),
        runs,
        version_s=round(t["version"], 4),
        import_click_s=round(t["click"], 4),
        pass_s=round(t["pass"], 4),
        over_pass_ratio=round(t["version"] / t["pass"], 3),
        import_click_ratio=round(t["click"] / t["pass"], 3),
        modules=imported["version"]["modules"],
        build_machinery=imported["version"]["build_machinery"],
        note="`e2b-matrix --version` / `python -c 'import click'`, whole processes (the console script, as a "
        "user runs it), click's import being the floor of any click CLI; over_pass_ratio: the same over "
        "`python -c pass` (the goal before: <= 4); import_click_ratio: `import click` / `pass`",
    )
    b.record(
        "resolve_ratio",
        round(t["resolve"] / t["floor"], 3),
        runs,
        resolve_s=round(t["resolve"], 4),
        floor_s=round(t["floor"], 4),
        tomllib_s=round(t["tomllib"], 4),
        over_tomllib_ratio=round(t["resolve"] / t["tomllib"], 3),
        lock_bytes=lock.stat().st_size,
        modules=imported["resolve"]["modules"],
        build_machinery=imported["resolve"]["build_machinery"],
        note="`e2b-matrix resolve NAME` / `python -c 'import click, attrs, tomllib; tomllib.load(open(LOCK, "
        '"rb"))\'` on the same 8-entry lock, whole processes: what the dependencies alone cost; '
        "over_tomllib_ratio: the same over a bare tomllib.load (the goal before: <= 2.5)",
    )
    b.record(
        "startup_imports_e2b",
        any(imported[n]["e2b"] for n in commands),
        1,
        **{f"{n}_imports": imported[n]["build_machinery"] for n in commands},
        **{f"{n}_modules": imported[n]["modules"] for n in commands},
    )
    for name in ("list", "plan", "resolve"):
        b.record(f"{name}_s", round(t[name], 4), runs)


LOAD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import attrs
ta = time.perf_counter()
import e2b_matrix.lock as L
t1 = time.perf_counter()
lock = L.TemplateLock.load(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "attrs_ms": (ta - t0) * 1e3, "load_ms": (t2 - t1) * 1e3,
                  "entries": len(lock)}))
"""

TOMLLIB_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import tomllib
t1 = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "entries": len(data["templates"])}))
"""

LOOKUP_CHILD = r"""
import json, os, sys, time
from e2b_matrix.lock import TemplateLock, TemplateResolver
path = sys.argv[1]
os.environ.pop("E2B_TEMPLATE_ID", None)
lock = TemplateLock.load(path)
names = [e.variant for e in lock] + [e.alias for e in lock]
calls = names * 50
resolver = TemplateResolver(path)
resolver.resolve(names[0])
out = {"template_id_us": [], "resolve_us": []}
for _ in range(5):
    t = time.perf_counter()
    for n in calls:
        lock.template_id(n)
    out["template_id_us"].append((time.perf_counter() - t) / len(calls) * 1e6)
    t = time.perf_counter()
    for n in calls:
        resolver.resolve(n)
    out["resolve_us"].append((time.perf_counter() - t) / len(calls) * 1e6)
print(json.dumps(out))
"""


def realistic_entries(n: int):
    """Lock entries as build-all writes them: layers, the flat inputs, the domain, channels, 5 builds of history."""
    from e2b_matrix.lock import Build, LockEntry

    rng = random.Random(7)
    out = []
    for i in range(n):
        name = f"nexus-{i:04d}"
        cpu, mem = (1, 2, 4, 8)[i % 4], 1024 + 2 * i
        out.append(
            LockEntry(
                alias=f"nexus-sandbox-{i:04d}",
                variant=name,
                template_id="".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20)),
                build_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                fingerprint="sha256:" + hashlib.sha256(name.encode()).hexdigest(),
                layers={"base": "1", "fuse": "1", "nexus": "0.9.26"},
                built_at=dt.datetime(2026, 11, 26, 17, i % 60, (7 * i) % 60, tzinfo=dt.UTC),
                domain="e2b.app",
                inputs={
                    "base": "template code-interpreter-v1",
                    "base.image": "e2bdev/code-interpreter:latest",
                    "base.image_python": "3.13",
                    "base.python": "3.13",
                    "base.ready_cmd": "",
                    "base.start_cmd": "",
                    "base.template": "code-interpreter-v1",
                    "cpu_count": str(cpu),
                    "memory_mb": str(mem),
                    "nexus.version": "0.9.26",
                    "tags": f"t{i % 10}",
                },
                channels={"default": f"b-{i}-1", "stable": f"b-{i}-2"},
                history=[
                    Build(
                        f"b-{i}-{k}",
                        f"sha256:{k:064d}",
                        dt.datetime(2026, 11, 20 + k, 9, 0, tzinfo=dt.UTC),
                        {"base": "1", "fuse": "1", "nexus": f"0.9.{20 + k}"},
                    )
                    for k in range(1, 6)
                ],
            )
        )
    return out


def bench_lock(b: Bench, emu: E2BEmulator) -> None:
    from e2b_matrix.lock import dumps

    runs = max(9, b.runs)
    print(f"lock: import + TemplateLock.load of 100 entries in fresh processes ({runs}); lookups")
    import attrs

    path = b.workdir / "lock" / "templates.lock"
    path.parent.mkdir()
    entries = realistic_entries(100)
    head = "schema = 2\n"  # written in reverse table order: the reader takes any TOML

    def write(target: Path, items) -> None:
        target.write_text(
            dumps([]).replace(head, "") + head + "".join(dumps([e]).split(head, 1)[1] for e in reversed(items)),
            encoding="utf-8",
        )

    def measure(target: Path) -> dict[str, float]:
        """Ours and the bare tomllib.load in fresh processes, interleaved: each one's import plus load."""
        children = {"ours": LOAD_CHILD, "tomllib": TOMLLIB_CHILD}
        for child in children.values():  # warm-up
            timed([PY, "-c", child, str(target)], env)
        got: dict[str, list[float]] = {
            k: []
            for k in ("ours", "tomllib", "import_ms", "attrs_ms", "load_ms", "tomllib_import_ms", "tomllib_load_ms")
        }
        for _ in range(runs):
            for key, child in children.items():
                _, proc = timed([PY, "-c", child, str(target)], env)
                r = json.loads(proc.stdout)
                assert r["entries"] == 100
                got[key].append(r["import_ms"] + r["load_ms"])
                for k in ("import_ms", "attrs_ms", "load_ms"):
                    if k in r:
                        got[k if key == "ours" else f"tomllib_{k}"].append(r[k])
        out = {k: round(med(v), 2) for k, v in got.items()}
        out["ratio"] = round(med(got["ours"]) / med(got["tomllib"]), 3)
        return out

    env = b.env(PYTHONPATH=str(ROOT / "src"))  # this checkout's code, whatever the venv installed
    write(path, entries)
    full = measure(path)
    young = path.with_name("young.lock")  # the same entries before any rebuild: no history yet
    write(young, [attrs.evolve(e, history=()) for e in entries])
    fresh = measure(young)
    b.record(
        "lock_load_ratio",
        full["ratio"],
        runs,
        bytes=path.stat().st_size,
        ours_ms=full["ours"],
        tomllib_ms=full["tomllib"],
        import_ms=full["import_ms"],
        of_which_attrs_ms=full["attrs_ms"],
        load_ms=full["load_ms"],
        tomllib_import_ms=full["tomllib_import_ms"],
        tomllib_load_ms=full["tomllib_load_ms"],
        without_history_ratio=fresh["ratio"],
        without_history_ms=fresh["ours"],
        without_history_tomllib_ms=fresh["tomllib"],
        without_history_bytes=young.stat().st_size,
        note="import e2b_matrix.lock + TemplateLock.load (tomllib + validation into attrs LockEntry) / "
        "import tomllib + tomllib.load of the same file, each timed inside its own fresh process, "
        "interleaved; 100 entries with 5 builds of history each, tables in reverse order; "
        "without_history_*: the same entries before any rebuild",
    )
    _, proc = timed([PY, "-c", LOOKUP_CHILD, str(path)], env)
    r = json.loads(proc.stdout)
    tid, res = med(r["template_id_us"]), med(r["resolve_us"])
    b.record(
        "lock_lookup_us",
        round(max(tid, res), 3),
        5,
        template_id_us=round(tid, 3),
        resolve_us=round(res, 3),
        note="median of 5 batches of 100,000 calls; the slower of the two; resolve() costs one os.stat per call",
    )


def bench_plan(b: Bench, emu: E2BEmulator) -> None:
    runs = max(5, b.runs)
    print(f"plan: 10, 100, 1000 variants from one [matrix] ({runs} runs each)")
    cpus = [1, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    mems = [512 * k for k in range(1, 11)]
    tags = [f"t{k}" for k in range(10)]
    axes = {10: (cpus, mems[:1], tags[:1]), 100: (cpus, mems, tags[:1]), 1000: (cpus, mems, tags)}
    env = b.env()
    projects = {}
    for n, (c, m, t) in axes.items():
        text = (
            '[variant]\nname = "grid-{cpu}-{mem}-{tag}"\nalias = "grid-{cpu}-{mem}-{tag}"\n'
            'layers = ["base", "nexus"]\ncpu_count = "{cpu}"\nmemory_mb = "{mem}"\ntags = ["{tag}"]\n\n'
            '[params.nexus]\nversion = "0.5.6"\n\n'
            f"[matrix]\ncpu = {c}\nmem = {m}\ntag = {json.dumps(t)}\n"
        )
        projects[n] = b.project(f"plan-{n}", {"variants/grid.toml": text})
        _, proc = timed([CLI, "-C", str(projects[n]), "plan", "--json"], env)
        assert len(json.loads(proc.stdout)["variants"]) == n
    times = {n: [] for n in projects}
    for _ in range(runs):
        for n, proj in projects.items():
            times[n].append(timed([CLI, "-C", str(proj), "plan"], env)[0])
    t = {n: med(v) for n, v in times.items()}
    for n in projects:
        b.record(f"plan_{n}_s", round(t[n], 4), runs, ms_per_variant=round(t[n] / n * 1000, 3))
    b.record(
        "plan_ms_per_variant",
        round((t[1000] - t[10]) / 990 * 1000, 3),
        runs,
        marginal_10_to_100_ms=round((t[100] - t[10]) / 90 * 1000, 3),
        marginal_100_to_1000_ms=round((t[1000] - t[100]) / 900 * 1000, 3),
        note="marginal cost of one more variant; flat when the two marginals agree",
    )


def bench_logging(b: Bench, emu: E2BEmulator) -> None:
    LINES, D = 20_000, 3.0
    print(
        f"logging: 8 builds x {LINES} log lines (D = {D} s), log files on vs E2B_MATRIX_NO_LOG_FILES=1 "
        f"({b.runs} runs each, interleaved)"
    )
    proj = b.project("logging", {"variants/logs.toml": matrix_file("logs", 8)})
    for n in range(1, 9):
        emu.configure(f"logs-{n}", duration=D, log_lines=LINES)
    on_env, off_env = b.env(emu), b.env(emu, E2B_MATRIX_NO_LOG_FILES="1")
    cmd = [CLI, "-C", str(proj), "build-all", "--force", "--json"]
    logs = proj / "logs"
    on, off, polls = [], [], []
    lines_per_file: dict[str, int] = {}
    for _ in range(b.runs):
        for mode in ("on", "off"):
            shutil.rmtree(logs, ignore_errors=True)
            emu.reset_counters()
            t, proc = timed(cmd, on_env if mode == "on" else off_env)
            assert build_statuses(proc) == ["built"] * 8
            polls.append(emu.count("status"))
            if mode == "on":
                on.append(t)
                lines_per_file = {
                    p.name: sum(1 for line in p.open(encoding="utf-8") if f"/{LINES}" in line)
                    for p in sorted(logs.glob("logs-*.log"))
                }
                assert len(lines_per_file) == 8 and set(lines_per_file.values()) == {LINES}, lines_per_file
            else:
                off.append(t)
                assert not logs.exists() or not any(logs.iterdir()), "log files written with them off"
    b.record(
        "logging_ratio",
        round(med(on) / med(off), 3),
        b.runs,
        on_s=round(med(on), 3),
        off_s=round(med(off), 3),
        on=[round(x, 3) for x in on],
        off=[round(x, 3) for x in off],
        status_polls_per_build=round(med(polls) / 8, 1),
        min_polls_for_pages_of_100=LINES // 100,
        log_lines_per_file=sorted(set(lines_per_file.values())),
        note="each status poll returns at most 100 lines, written as one log record (runner.py: sink)",
    )


def bench_share(b: Bench, emu: E2BEmulator) -> None:
    """A cold build-all of the shipped variants on E2B's layer cache: steps run and wall time."""
    costs, step, upload = STEP_COSTS, STEP_S, UPLOAD_S
    print(
        f"share: cold build-all of the shipped variants, step costs {costs} (else {step} s), layers published "
        f"{upload} s after a step; shared vs --no-share ({b.runs} runs each, interleaved)"
    )
    figures: dict[str, dict[str, list]] = {
        m: {"steps": [], "wall": [], "process": [], "peak": [], "executed": []} for m in ("share", "all-at-once")
    }
    critical = distinct = None
    for run in range(b.runs):
        for mode in figures:
            proj = b.workdir / f"share-{mode}-{run}"
            shutil.copytree(ROOT / "variants", proj / "variants")
            shutil.copytree(ROOT / "requirements", proj / "requirements")
            with cold_emulator() as cold:
                args = [CLI, "-C", str(proj), "build-all", "--json", "--locked"] + (
                    ["--no-share"] if mode != "share" else []
                )
                t, proc = timed(args, b.env(cold))
                assert build_statuses(proc) == ["built"] * 4, proc.stdout
                records = cold.step_records
                builds = cold.builds
            steps = [r for r in records if r.step != "base"]
            keys = {r.key: r.cost for r in steps}
            by_build: dict[str, float] = {}
            for r in steps:
                by_build[r.build_id] = by_build.get(r.build_id, 0.0) + r.cost
            critical, distinct = max(by_build.values()) + upload, len(keys)
            ran = sum(r.outcome == "built" for r in steps)
            wall = max(x.finished_at for x in builds) - min(x.requested_at for x in builds)
            spans = [(x.requested_at, x.finished_at) for x in builds]
            peak = max(sum(a <= t0 < z for a, z in spans) for t0, _ in spans)
            f = figures[mode]
            f["steps"].append(ran / distinct)
            f["executed"].append(ran)
            f["wall"].append(wall / critical)
            f["process"].append(t)
            f["peak"].append(peak)
    share, aao = figures["share"], figures["all-at-once"]
    b.record(
        "e2b_steps_ratio",
        round(med(share["steps"]), 3),
        b.runs,
        distinct_steps=distinct,
        executed=share["executed"],
        all_at_once_ratio=round(med(aao["steps"]), 3),
        all_at_once_executed=aao["executed"],
        note="steps a build ran (cache misses) / distinct steps of the shipped variants (the base excluded: "
        "a fromTemplate base is the parent's snapshot)",
    )
    b.record(
        "e2b_share_wall_ratio",
        round(med(share["wall"]), 3),
        b.runs,
        critical_path_s=round(critical, 2),
        all_at_once_ratio=round(med(aao["wall"]), 3),
        peak_concurrent_builds=share["peak"],
        all_at_once_peak_concurrent_builds=aao["peak"],
        process_s=round(med(share["process"]), 2),
        all_at_once_process_s=round(med(aao["process"]), 2),
        note="wall: the first build request to the last build ready (the emulator's clock); critical path: "
        "the longest chain of steps one variant needs, plus one upload; process_s: the whole command",
    )


def cold_emulator() -> E2BEmulator:
    """A new emulator (an empty layer cache, the team limit) with bench's step timings; not started."""
    emu = E2BEmulator(api_key=API_KEY, default_step_cost=STEP_S, upload_delay=UPLOAD_S)
    for text, seconds in STEP_COSTS.items():
        emu.set_step_cost(text, seconds)
    return emu


def bench_scale(b: Bench, emu: E2BEmulator) -> None:
    """build-all at team scale: bench/scale.py."""
    from e2b_matrix.backends.e2b import POLL_FIRST_S  # the poll interval of a young build (no e2b import)

    scale.bench(b, scale.Setup(CLI, cold_emulator, UPLOAD_S, step_cost, POLL_FIRST_S), b.scale_sizes)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each build benchmark (at least 3)")
    ap.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups: {', '.join(GROUPS)}")
    ap.add_argument(
        "--scale-sizes",
        type=scale.sizes,
        default=scale.SIZES,
        help="the scale group's variant counts, of " + ",".join(map(str, scale.SIZES)),
    )
    args = ap.parse_args(argv)
    runs = max(3, args.runs)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        ap.error(f"unknown group(s): {', '.join(unknown)}")
    OUT.mkdir(exist_ok=True)
    started = time.perf_counter()
    print(f"e2b-matrix bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, build runs {runs}")
    with tempfile.TemporaryDirectory(prefix="e2b-matrix-bench-") as tmp:
        b = Bench(runs, Path(tmp))
        b.scale_sizes = args.scale_sizes
        with E2BEmulator(api_key=API_KEY) as emu:
            for g in groups:
                globals()[f"bench_{g}"](b, emu)
    elapsed = time.perf_counter() - started

    rows = [("name", "value", "unit", "goal", "ok?")]
    for name, r in b.results.items():
        v = r["value"]
        shown = f"{v:.3f}" if isinstance(v, float) else str(v).lower()
        rows.append(
            (name, shown, r["unit"], r["goal"] or "-", "-" if r["ok"] is None else ("yes" if r["ok"] else "NO"))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print()
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"\n{len(b.results)} figures in {elapsed:.0f} s; medians of the runs given in .bench/results.json")

    results = b.results
    path = OUT / "results.json"
    if set(groups) != set(GROUPS) and path.exists():  # a partial run keeps the other figures
        try:
            old = json.loads(path.read_text())
            results = {**{k: v for k, v in old.items() if k not in results}, **results}
        except ValueError:
            pass
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    missed = [n for n, r in b.results.items() if r["ok"] is False]
    if missed:
        print(f"missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
