"""Which docker CLI and which builder to use, found by trying them (``discover``).

- BuildKit wherever the engine offers it, found by trying it, not by version
  numbers: a candidate CLI offers BuildKit when a tiny probe build (``FROM
  scratch`` + a label: no base image, no layer, about 0.2 s) succeeds with
  BuildKit's own progress output and lands in the daemon, either through the
  buildx plugin (``docker buildx build --load``) or through ``DOCKER_BUILDKIT=1
  docker build`` (a CLI that drives the daemon's BuildKit itself, like the
  docker.io package's /usr/bin/docker 20.10; a newer CLI without buildx refuses).
- Candidates: the ``binary`` given (``E2B_MATRIX_DOCKER_CLI``), alone; else
  ``docker`` on PATH, then /usr/bin/docker (the same file once). The first that
  offers BuildKit wins; when none does, the first whose daemon answers, with the
  legacy builder (``DOCKER_BUILDKIT=0``).
- ``buildkit=True`` requires BuildKit (the answer carries an ``error`` saying why
  no candidate can), ``False`` forces the legacy builder, ``None`` is auto.

A discovery runs docker a few times; its answer is a value the caller keeps and
passes on (``DockerCLI(discover(...))``): nothing is kept in the process. An
answer found while no daemon answered (``daemon_answered`` False) is worth
asking again once one may have started.

Builds and containers use the host's network (``--network host``; the daemon's
BuildKit allows it without extra entitlements).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

__all__ = [
    "BUILDKIT",
    "BUILDX",
    "LEGACY",
    "NETWORK",
    "SYSTEM_DOCKER",
    "TERMINAL_CODES",
    "Builder",
    "Discovery",
    "build_command",
    "discover",
]

SYSTEM_DOCKER = "/usr/bin/docker"  # the distribution's CLI (Debian's docker.io), a candidate after PATH
PROBE_TIMEOUT = 60  # seconds one discovery probe may take
NETWORK = "host"  # what builds and containers use

Builder = Literal["buildx", "buildkit", "legacy"]
BUILDX: Builder = "buildx"
BUILDKIT: Builder = "buildkit"
LEGACY: Builder = "legacy"

# Colour and cursor codes: the legacy builder wraps a step's stderr in red.
TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BUILDKIT_PROGRESS = re.compile(r"^#\d+ ")  # BuildKit's plain progress: "#1 [internal] load build definition"


@attrs.frozen
class Discovery:
    """The CLI and builder to use, and why."""

    binary: str
    builder: Builder
    reason: str
    error: str | None = None  # BuildKit was required and no candidate offers it
    daemon_answered: bool = True  # False: found while no daemon answered (ask again later)

    @property
    def buildkit(self) -> bool:
        """Do builds go through BuildKit (the buildx plugin, or the daemon's own)?"""
        return self.builder != LEGACY

    def describe(self) -> str:
        """One line: which binary, BuildKit or legacy, and why."""
        if self.error:
            return f"docker CLI {self.binary}: no usable builder: {self.error}"
        return f"docker CLI {self.binary}: {self.reason}"


def build_command(binary: str, builder: Builder) -> tuple[list[str], dict[str, str]]:
    """The start of a ``docker build`` with ``builder`` (tag, files and context follow), and its environment.

    BuildKit prints every step's output line by line (``--progress plain``); buildx loads the image
    into the daemon (``--load``); the legacy builder removes a failed step's container (``--force-rm``).
    """
    if builder == LEGACY:
        return [binary, "build", "--force-rm", "--network", NETWORK], {**os.environ, "DOCKER_BUILDKIT": "0"}
    verb = ["buildx", "build", "--load"] if builder == BUILDX else ["build"]
    return [binary, *verb, "--progress", "plain", "--network", NETWORK], {**os.environ, "DOCKER_BUILDKIT": "1"}


def discover(binary: str | None = None, buildkit: bool | None = None) -> Discovery:
    """Probe the candidates (``binary`` alone when given) and choose the CLI and builder (see the module doc)."""
    return _choose(_candidates(binary), buildkit)


# ------------------------------------------------------------------ probes


@attrs.frozen
class Probe:
    """What one candidate CLI answered."""

    binary: str
    client: str | None = None  # the CLI's version; None when it could not run
    server: str | None = None  # the daemon's version; None when no daemon answered
    builder: Builder | None = None  # BUILDX or BUILDKIT when a probe build proved it
    note: str = ""  # why not, in a few words

    def label(self) -> str:
        return f"{self.binary} ({self.client})" if self.client else self.binary


def _exec(
    cmd: list[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str] | None:
    """Run a probe command; None when it cannot run at all (missing, not executable, hung)."""
    try:
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _first_line(proc: subprocess.CompletedProcess[str] | None) -> str:
    if proc is None:
        return "did not run or did not finish in time"
    for line in TERMINAL_CODES.sub("", proc.stderr or proc.stdout or "").splitlines():
        if line.strip():
            return line.strip().rstrip(".")
    return f"exit {proc.returncode}"


def _probe_build(binary: str, builder: Builder) -> str:
    """Why ``binary`` cannot build with ``builder`` (BUILDX or BUILDKIT) into the daemon; "" when it can.

    Builds ``FROM scratch`` + a label (no base image, no layer) under a fresh tag and
    checks three things: it succeeds, its output is BuildKit's progress (not
    another builder that ignores DOCKER_BUILDKIT), and the image is in the daemon.
    """
    nonce = uuid.uuid4().hex[:12]
    tag = f"e2b-matrix-probe/buildkit:{nonce}"
    with tempfile.TemporaryDirectory(prefix="e2b-matrix-probe-") as tmp:
        context, iidfile = Path(tmp, "context"), Path(tmp, "image-id")
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM scratch\nLABEL e2b-matrix.probe={nonce}\n")
        start, env = build_command(binary, builder)
        proc = _exec([*start, "-t", tag, "--iidfile", str(iidfile), str(context)], timeout=PROBE_TIMEOUT, env=env)
        if proc is None or proc.returncode != 0:
            return _first_line(proc)
        try:
            if not any(_BUILDKIT_PROGRESS.match(line) for line in (proc.stdout + proc.stderr).splitlines()):
                return "the build ran without BuildKit's progress output"
            built = iidfile.read_text().strip() if iidfile.is_file() else ""
            inspect = _exec([binary, "image", "inspect", "--format", "{{.Id}}", tag], timeout=30)
            if not built or inspect is None or inspect.returncode != 0 or inspect.stdout.strip() != built:
                return "the built image did not land in the daemon"
            return ""
        finally:
            _exec([binary, "image", "rm", "--force", tag], timeout=30)


def _probe(binary: str, buildkit: bool | None) -> Probe:
    """What ``binary`` is: a CLI, whose daemon answers, and which BuildKit it drives (unless ``buildkit`` is False)."""
    version = _exec(
        [binary, "version", "--format", "{{.Client.Version}}|{{if .Server}}{{.Server.Version}}{{end}}"], timeout=20
    )
    if version is None:
        return Probe(binary, note="cannot run it (missing, not executable or hung)")
    client, _, server = version.stdout.strip().partition("|")
    if not client.strip():
        return Probe(binary, note=f"not a docker CLI? `version` said: {_first_line(version)}")
    if version.returncode != 0 or not server.strip():
        return Probe(binary, client.strip(), note=f"no daemon answers: {_first_line(version)}")
    probe = Probe(binary, client.strip(), server.strip())
    if buildkit is False:
        return probe
    notes = []
    buildx = _exec([binary, "buildx", "version"], timeout=20)
    if buildx is not None and buildx.returncode == 0:
        why = _probe_build(binary, BUILDX)
        if not why:
            return attrs.evolve(probe, builder=BUILDX)
        notes.append(f"buildx build failed: {why}")
    else:
        notes.append("no buildx plugin")
    why = _probe_build(binary, BUILDKIT)
    if not why:
        return attrs.evolve(probe, builder=BUILDKIT)
    notes.append(f"DOCKER_BUILDKIT=1 build failed: {why}")
    return attrs.evolve(probe, note="; ".join(notes))


def _candidates(binary: str | None) -> tuple[str, ...]:
    """The CLIs to consider: the one named, alone; else docker on PATH, then SYSTEM_DOCKER."""
    if binary:
        return (shutil.which(binary) or binary,)
    found: list[str] = []
    seen: set[str] = set()
    for path in (shutil.which("docker"), SYSTEM_DOCKER):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append(path)
    return tuple(found) or ("docker",)


def _choose(candidates: tuple[str, ...], buildkit: bool | None) -> Discovery:
    """Probe the candidates in order and pick the CLI and builder (see the module doc)."""
    probes: list[Probe] = []
    for binary in candidates:
        probes.append(_probe(binary, buildkit))
        if probes[-1].builder or (buildkit is False and probes[-1].server):
            break  # found: the later candidates are not needed
    others = "; ".join(f"{p.label()}: {p.note}" for p in probes if not p.builder and p.note)
    for p in probes:
        if p.builder:
            how = "the buildx plugin" if p.builder == BUILDX else "DOCKER_BUILDKIT=1 drives the daemon's BuildKit"
            why = f"BuildKit: {how}, a probe build proved it"
            return Discovery(p.binary, p.builder, f"{why} (also tried {others})" if others else why)
    return _legacy(probes, buildkit, others)


def _legacy(probes: list[Probe], buildkit: bool | None, others: str) -> Discovery:
    """The answer when no candidate proved BuildKit: the legacy builder, or an error when BuildKit is required."""
    answered = [p for p in probes if p.server]
    if buildkit is False:
        chosen = answered[0] if answered else next((p for p in probes if p.client), probes[0])
        why = "the legacy builder, as the setting asks (BuildKit off)"
        return Discovery(chosen.binary, LEGACY, why, daemon_answered=bool(answered))
    if not answered:
        chosen = next((p for p in probes if p.client), probes[0])
        why = (
            f"no daemon answers, BuildKit not probed ({others})" if chosen.client else f"no docker CLI runs ({others})"
        )
        error = f"BuildKit is required but {why}" if buildkit else None
        return Discovery(chosen.binary, LEGACY, why, error=error, daemon_answered=False)
    if buildkit:
        return Discovery(
            answered[0].binary,
            LEGACY,
            f"BuildKit required but unavailable: {others}",
            error=f"BuildKit is required but no docker CLI here offers it: {others}; install the buildx "
            f"plugin, or a docker CLI that drives the daemon's BuildKit (Debian's docker.io: /usr/bin/docker), "
            f"or set E2B_MATRIX_DOCKER_BUILDKIT to auto",
        )
    return Discovery(answered[0].binary, LEGACY, f"the legacy builder: no candidate offers BuildKit ({others})")
