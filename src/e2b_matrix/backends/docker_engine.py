"""A small wrapper around the ``docker`` command line: build, inspect, run, tag, remove.

No docker-py: every call is a subprocess to a ``docker`` CLI, so it works with
whatever daemon that CLI reaches (``DOCKER_HOST``, contexts). ``DockerCLI`` reads
no environment variable of ours: the caller passes what ``Settings`` says
(``docker_cli``, ``docker_buildkit``). Each call is independent: one instance is
safe from several threads.

Which CLI and which builder (``DockerCLI.describe()`` says, in one line):

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
- ``buildkit=True`` requires BuildKit (builds fail with a DockerError saying why
  no candidate can), ``False`` forces the legacy builder, ``None`` is auto.
- The discovery runs docker a few times, once per process for a given set of
  candidates (a result found while no daemon answered is not kept).

Either way every output line goes to ``on_log`` as it comes, without terminal
codes; with BuildKit (``--progress plain``) a step's output lines come without
BuildKit's ``#N 0.123`` prefix, as the step printed them. Builds and containers
use the host's network by default (``--network host``; the daemon's BuildKit
allows it without extra entitlements).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

import attrs

__all__ = [
    "HOST_CA_DIR",
    "SYSTEM_DOCKER",
    "Discovery",
    "DockerCLI",
    "DockerCancelled",
    "DockerError",
    "DockerNotFound",
    "discover",
    "host_ca_certificates",
]

HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
SYSTEM_DOCKER = "/usr/bin/docker"  # the distribution's CLI (Debian's docker.io), a candidate after PATH
TAIL_LINES = 40  # lines of output a DockerError carries
PROBE_TIMEOUT = 60  # seconds one discovery probe may take

BUILDX, BUILDKIT, LEGACY = "buildx", "buildkit", "legacy"

_EMPTY: Mapping = {}


class DockerError(Exception):
    """A docker command failed; ``output`` holds the last lines it printed."""

    def __init__(self, message: str, *, output: str = "", returncode: int | None = None):
        super().__init__(f"{message}\n{output}" if output else message)
        self.output = output
        self.returncode = returncode


class DockerNotFound(DockerError):
    """The daemon answered: it has no such image (not a daemon that did not answer)."""


class DockerCancelled(DockerError):
    """A build stopped because its ``cancel`` event was set."""


class DockerTimeout(DockerError):
    """A build stopped because it ran past its ``timeout``."""


def host_ca_certificates(directory: Path | str = HOST_CA_DIR) -> list[Path]:
    """The host's extra CA certificates (``*.crt`` under /usr/local/share/ca-certificates).

    What update-ca-certificates adds to the system bundle; a build behind a
    TLS-intercepting proxy installs the same files in the image so pip trusts it.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.crt") if p.is_file())


# ------------------------------------------------------------------ discovery


@attrs.frozen
class Probe:
    """What one candidate CLI answered."""

    binary: str
    client: str | None = None  # the CLI's version; None when it could not run
    server: str | None = None  # the daemon's version; None when no daemon answered
    builder: str | None = None  # BUILDX or BUILDKIT when a probe build proved it
    note: str = ""  # why not, in a few words

    def label(self) -> str:
        return f"{self.binary} ({self.client})" if self.client else self.binary


@attrs.frozen
class Discovery:
    """The CLI and builder a DockerCLI uses, and why."""

    binary: str
    builder: str  # BUILDX, BUILDKIT or LEGACY
    reason: str
    error: str | None = None  # BuildKit was required and no candidate offers it
    final: bool = True  # kept for the process (False while no daemon answered)


def _exec(
    cmd: list[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess | None:
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


def _first_line(proc: subprocess.CompletedProcess | None) -> str:
    if proc is None:
        return "did not run or did not finish in time"
    for line in _ANSI.sub("", proc.stderr or proc.stdout or "").splitlines():
        if line.strip():
            return line.strip().rstrip(".")
    return f"exit {proc.returncode}"


# What the docker CLI prints when the daemon has no such image: "Error: No such image: x" (CLI 20.10),
# "Error response from daemon: No such image: x" (newer); anything else (no daemon) is not that.
_NO_SUCH_IMAGE = re.compile(r"No such image", re.IGNORECASE)
_BUILDKIT_PROGRESS = re.compile(r"^#\d+ ")  # BuildKit's plain progress: "#1 [internal] load build definition"


def _probe_build(binary: str, builder: str) -> tuple[bool, str]:
    """Can ``binary`` build with ``builder`` (BUILDX or BUILDKIT) into the daemon? (yes, why not)

    Builds ``FROM scratch`` + a label (no base image, no layer) under a fresh tag and
    checks three things: it succeeds, its output is BuildKit's progress (not
    another builder that ignores DOCKER_BUILDKIT), and the image is in the daemon.
    """
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    nonce = uuid.uuid4().hex[:12]
    tag = f"e2b-matrix-probe/buildkit:{nonce}"
    with tempfile.TemporaryDirectory(prefix="e2b-matrix-probe-") as tmp:
        context = Path(tmp, "context")
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM scratch\nLABEL e2b-matrix.probe={nonce}\n")
        iidfile = Path(tmp, "image-id")
        cmd = [
            binary,
            *(["buildx", "build", "--load"] if builder == BUILDX else ["build"]),
            "--progress",
            "plain",
            "--network",
            "host",
            "-t",
            tag,
            "--iidfile",
            str(iidfile),
            str(context),
        ]
        proc = _exec(cmd, timeout=PROBE_TIMEOUT, env=env)
        if proc is None or proc.returncode != 0:
            return False, _first_line(proc)
        try:
            built = iidfile.read_text().strip()
            if not any(_BUILDKIT_PROGRESS.match(line) for line in (proc.stdout + proc.stderr).splitlines()):
                return False, "the build ran without BuildKit's progress output"
            inspect = _exec([binary, "image", "inspect", "--format", "{{.Id}}", tag], timeout=30)
            if inspect is None or inspect.returncode != 0 or inspect.stdout.strip() != built:
                return False, "the built image did not land in the daemon"
            return True, ""
        finally:
            _exec([binary, "image", "rm", "--force", tag], timeout=30)


def _probe(binary: str, buildkit: bool | None) -> Probe:
    version = _exec(
        [binary, "version", "--format", "{{.Client.Version}}|{{if .Server}}{{.Server.Version}}{{end}}"], timeout=20
    )
    if version is None:
        return Probe(binary, note="cannot run it (missing, not executable or hung)")
    client, _, server = version.stdout.strip().partition("|")
    client = client.strip() or None
    if client is None:
        return Probe(binary, note=f"not a docker CLI? `version` said: {_first_line(version)}")
    if version.returncode != 0 or not server.strip():
        return Probe(binary, client, note=f"no daemon answers: {_first_line(version)}")
    probe = Probe(binary, client, server.strip())
    if buildkit is False:
        return probe
    notes = []
    buildx = _exec([binary, "buildx", "version"], timeout=20)
    if buildx is not None and buildx.returncode == 0:
        ok, why = _probe_build(binary, BUILDX)
        if ok:
            return attrs.evolve(probe, builder=BUILDX)
        notes.append(f"buildx build failed: {why}")
    else:
        notes.append("no buildx plugin")
    ok, why = _probe_build(binary, BUILDKIT)
    if ok:
        return attrs.evolve(probe, builder=BUILDKIT)
    notes.append(f"DOCKER_BUILDKIT=1 build failed: {why}")
    return attrs.evolve(probe, note="; ".join(notes))


def _candidates(binary: str | None) -> tuple[str, ...]:
    """The CLIs to consider: the one named, alone; else docker on PATH, then SYSTEM_DOCKER."""
    if binary:
        return (shutil.which(binary) or binary,)
    found, seen = [], set()
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
        probe = _probe(binary, buildkit)
        probes.append(probe)
        if probe.builder or (buildkit is False and probe.server):
            break  # found: the later candidates are not needed
    answered = [p for p in probes if p.server]
    others = "; ".join(f"{p.label()}: {p.note}" for p in probes if not p.builder and p.note)
    for p in probes:
        if p.builder:
            how = "the buildx plugin" if p.builder == BUILDX else "DOCKER_BUILDKIT=1 drives the daemon's BuildKit"
            why = f"BuildKit: {how}, a probe build proved it"
            return Discovery(p.binary, p.builder, f"{why} (also tried {others})" if others else why)
    if buildkit is False:
        chosen = answered[0] if answered else next((p for p in probes if p.client), probes[0])
        return Discovery(
            chosen.binary, LEGACY, "the legacy builder, as the setting asks (BuildKit off)", final=bool(answered)
        )
    if not answered:
        chosen = next((p for p in probes if p.client), probes[0])
        why = (
            f"no daemon answers, BuildKit not probed ({others})" if chosen.client else f"no docker CLI runs ({others})"
        )
        return Discovery(
            chosen.binary, LEGACY, why, error=f"BuildKit is required but {why}" if buildkit else None, final=False
        )
    chosen = answered[0]
    if buildkit:
        return Discovery(
            chosen.binary,
            LEGACY,
            f"BuildKit required but unavailable: {others}",
            error=f"BuildKit is required (E2B_MATRIX_DOCKER_BUILDKIT=1) but no docker CLI here offers it: "
            f"{others}; install the buildx plugin, or a docker CLI that drives the "
            f"daemon's BuildKit (Debian's docker.io: /usr/bin/docker), or set it to auto",
        )
    return Discovery(chosen.binary, LEGACY, f"the legacy builder: no candidate offers BuildKit ({others})")


_discovered: dict[tuple[tuple[str, ...], bool | None], Discovery] = {}
_discover_lock = threading.Lock()


def discover(binary: str | None = None, buildkit: bool | None = None) -> Discovery:
    """The CLI and builder to use, probed once per process for these candidates and setting."""
    key = (_candidates(binary), buildkit)
    found = _discovered.get(key)
    if found is not None:
        return found
    with _discover_lock:  # one probe at a time; later callers get the kept answer
        found = _discovered.get(key)
        if found is None:
            found = _choose(*key)
            if found.final:
                _discovered[key] = found
        return found


# ------------------------------------------------------------------ output lines

_LEGACY_BANNER = (
    "DEPRECATED: The legacy builder is deprecated",
    "BuildKit is currently disabled",
    "environment-variable.",
)

# Colour and cursor codes: the legacy builder wraps a step's stderr in red.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# BuildKit's plain progress: "#5 0.081 text" is a step's output line; "#5 sha256:…" a vertex digest.
_BUILDKIT_OUTPUT = re.compile(r"^#\d+ \d+\.\d+ ?(.*)$")
_BUILDKIT_DIGEST = re.compile(r"^#\d+ sha256:[0-9a-f]{64}$")


def _lines(stream) -> Iterator[str]:
    """Output lines as they come, without terminal codes; a line redrawn with
    carriage returns gives its last state."""
    for raw in iter(stream.readline, ""):
        parts = [p for p in _ANSI.sub("", raw.rstrip("\n")).split("\r") if p.strip()]
        if parts:
            yield parts[-1].rstrip()


def _buildkit_line(line: str) -> str | None:
    """A step's output line as the step printed it; None for a vertex digest or a blank line."""
    if _BUILDKIT_DIGEST.match(line):
        return None
    m = _BUILDKIT_OUTPUT.match(line)
    if m is None:
        return line
    return m.group(1) if m.group(1).strip() else None  # blank lines are dropped, as from the legacy builder


def _context_path(root: Path, name: str) -> Path:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or rel == PurePosixPath("."):
        raise ValueError(f"context file name must be a relative path inside the context: {name!r}")
    return root.joinpath(*rel.parts)


# ------------------------------------------------------------------ the CLI


class DockerCLI:
    """One docker CLI and builder, chosen once (see the module doc); every call is independent.

    ``binary``: the docker binary to use (a path or a name on PATH), or None to
    choose; ``buildkit``: True requires BuildKit, False forces the legacy builder,
    None uses BuildKit wherever a candidate offers it.
    """

    def __init__(self, binary: str | None = None, buildkit: bool | None = None):
        self._binary = binary or None
        self._buildkit = buildkit

    def __repr__(self) -> str:
        return f"DockerCLI(binary={self._binary!r}, buildkit={self._buildkit!r})"

    def _discovery(self) -> Discovery:
        return discover(self._binary, self._buildkit)

    @property
    def binary(self) -> str:
        """The docker binary actually used."""
        return self._discovery().binary

    def uses_buildkit(self) -> bool:
        """Will build_image use BuildKit? DockerError when BuildKit is required and unavailable."""
        found = self._discovery()
        if found.error:
            raise DockerError(found.error)
        return found.builder in (BUILDX, BUILDKIT)

    def describe(self) -> str:
        """One line: which binary, BuildKit or legacy, and why."""
        found = self._discovery()
        if found.error:
            return f"docker CLI {found.binary}: no usable builder: {found.error}"
        return f"docker CLI {found.binary}: {found.reason}"

    # -------------------------------------------------------------- small calls

    def _docker(
        self, *args: str, timeout: float | None = 60, check: bool = True, binary: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``docker ARGS`` to completion; DockerError when it cannot run or (check) fails."""
        cmd = [binary or self.binary, *args]
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except OSError as exc:
            raise DockerError(f"no docker CLI: {cmd[0]!r} cannot run ({exc.strerror or exc})") from None
        except subprocess.TimeoutExpired:
            raise DockerError(f"`docker {' '.join(args[:2])}` did not answer within {timeout}s") from None
        if check and proc.returncode != 0:
            raise DockerError(
                f"`docker {' '.join(args[:2])}` failed (exit {proc.returncode})",
                output=(proc.stderr or proc.stdout).strip(),
                returncode=proc.returncode,
            )
        return proc

    def daemon_available(self, timeout: float = 5) -> bool:
        """Does a Docker daemon answer (``docker info``) within ``timeout`` seconds?"""
        try:
            proc = self._docker("info", "--format", "{{.ServerVersion}}", timeout=timeout, check=False)
        except DockerError:
            return False
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def _inspect(self, ref: str, template: str) -> str:
        """DockerNotFound when the daemon says it has no such image; DockerError when it cannot say."""
        proc = self._docker("image", "inspect", "--format", template, ref, check=False)
        if proc.returncode != 0:
            error = DockerNotFound if _NO_SUCH_IMAGE.search(proc.stderr) else DockerError
            raise error(
                f"no image {ref!r}" if error is DockerNotFound else f"cannot inspect image {ref!r}",
                output=proc.stderr.strip(),
                returncode=proc.returncode,
            )
        return proc.stdout.strip()

    def image_exists(self, tag: str) -> bool:
        """Is there a local image with this tag (or ID)? DockerError when the daemon cannot say."""
        try:
            self._inspect(tag, "{{.Id}}")
        except DockerNotFound:
            return False
        return True

    def image_id(self, tag: str) -> str:
        """The image's ID (``sha256:…``); DockerNotFound when there is no such image, DockerError when
        the daemon cannot say."""
        return self._inspect(tag, "{{.Id}}")

    def image_size(self, ref: str) -> int:
        """The image's size in bytes, its layers included; DockerError when there is no such image."""
        return int(self._inspect(ref, "{{.Size}}"))

    def remove_image(self, tag: str, *, force: bool = False) -> None:
        """Remove the tag (the image goes with its last tag). No error when it is already gone."""
        args = ["image", "rm", *(["--force"] if force else []), tag]
        proc = self._docker(*args, check=False)
        if proc.returncode != 0 and "no such image" not in proc.stderr.lower():
            raise DockerError(f"could not remove image {tag!r}", output=proc.stderr.strip(), returncode=proc.returncode)

    def images(self, repository: str) -> list[tuple[str, str]]:
        """(``repository/name:tag``, image ID) of every tagged image whose repository is ``repository`` or
        below it (``e2b-matrix`` holds ``e2b-matrix/<alias>:<tag>``)."""
        proc = self._docker("image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
        out = []
        for line in proc.stdout.splitlines():
            ref, _, image_id = line.strip().rpartition(" ")
            if ref.startswith(f"{repository}/") and not ref.endswith(":<none>"):
                out.append((ref, image_id))
        return out

    def tag_image(self, source: str, target: str) -> None:
        """Give the image ``source`` (a tag or ID) the tag ``target`` (``docker tag``)."""
        self._docker("tag", source, target)

    # -------------------------------------------------------------- builds

    def build_image(
        self,
        dockerfile: str,
        tag: str,
        *,
        context_files: Mapping[str, bytes] = _EMPTY,
        on_log: Callable[[str], None] | None = None,
        network: str | None = "host",
        no_cache: bool = False,
        labels: Mapping[str, str] = _EMPTY,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> str:
        """Build ``dockerfile`` as ``tag`` and return the image ID (``sha256:…``).

        ``context_files`` maps relative paths in the build context to their bytes
        (``{"ca/proxy.crt": b"..."}``, then ``COPY ca/ ...``). Every output line is passed
        to ``on_log`` as it comes. Raises DockerError carrying the last lines of output
        when the build fails, DockerTimeout (a DockerError) when it runs past ``timeout``
        seconds, DockerCancelled when ``cancel`` is set while it runs.
        """
        workdir_files = [(_context_path(Path("."), name), data) for name, data in context_files.items()]
        found = self._discovery()
        if found.error:
            raise DockerError(found.error)
        buildkit = found.builder in (BUILDX, BUILDKIT)
        workdir = Path(tempfile.mkdtemp(prefix="e2b-matrix-build-"))
        try:
            context = workdir / "context"
            context.mkdir()
            for rel, data in workdir_files:
                path = context / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            # The Dockerfile lives outside the context, so no context file can clash with it.
            dockerfile_path = workdir / "Dockerfile"
            dockerfile_path.write_text(dockerfile)
            iidfile = workdir / "image-id"

            command = ["buildx", "build", "--load"] if found.builder == BUILDX else ["build"]
            args = [found.binary, *command, "-t", tag, "-f", str(dockerfile_path), "--iidfile", str(iidfile)]
            if network:
                args += ["--network", network]
            if no_cache:
                args.append("--no-cache")
            for key, value in sorted(labels.items()):
                args += ["--label", f"{key}={value}"]
            env = dict(os.environ)
            if buildkit:
                env["DOCKER_BUILDKIT"] = "1"
                args += ["--progress", "plain"]  # every step's output, line by line
            else:
                env["DOCKER_BUILDKIT"] = "0"
                args.append("--force-rm")  # no intermediate containers left behind by a failed step
            args.append(str(context))

            tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
            code, stopped = _stream(
                args,
                env,
                tail,
                on_log,
                timeout,
                cancel,
                skip=() if buildkit else _LEGACY_BANNER,
                clean=_buildkit_line if buildkit else None,
            )
            output = "\n".join(tail)
            if stopped == "cancel":
                raise DockerCancelled(f"docker build of {tag} cancelled", output=output)
            if stopped == "timeout":
                raise DockerTimeout(f"docker build of {tag} ran past {timeout:g}s and was stopped", output=output)
            if code != 0:
                raise DockerError(
                    f"docker build of {tag} failed (exit {code}); last lines:", output=output, returncode=code
                )
            try:
                built = iidfile.read_text().strip()
            except OSError:
                built = ""
            return built or self.image_id(tag)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    # -------------------------------------------------------------- containers

    def run_in_container(
        self,
        image: str,
        command: str,
        *,
        user: str | None = None,
        devices: Iterable[str] = (),
        network: str | None = "host",
        timeout: float = 120,
    ) -> tuple[int, str]:
        """Run ``sh -c command`` in a throwaway container; (exit code, stdout and stderr).

        ``devices`` (e.g. ``("/dev/fuse",)``) are passed through with ``--device`` and
        the container gets CAP_SYS_ADMIN to mount them. The image is never pulled.
        Exit code 125 means docker could not start the container (output says why).
        Raises DockerError when the command runs past ``timeout`` (the container is removed).
        """
        binary = self.binary
        name = f"e2b-matrix-run-{uuid.uuid4().hex[:12]}"
        args = [binary, "run", "--rm", "--name", name, "--pull", "never"]
        if network:
            args += ["--network", network]
        devices = tuple(devices)
        for device in devices:
            args += ["--device", device]
        if devices:
            args += ["--cap-add", "SYS_ADMIN"]
        if user:
            args += ["--user", user]
        args += [image, "sh", "-c", command]
        try:
            proc = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except OSError as exc:
            raise DockerError(f"no docker CLI: {binary!r} cannot run ({exc.strerror or exc})") from None
        except subprocess.TimeoutExpired as exc:
            subprocess.run([binary, "rm", "--force", name], capture_output=True, timeout=60, check=False)
            out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
            raise DockerError(
                f"`{command}` in {image} ran past {timeout}s; container removed",
                output="\n".join(out.splitlines()[-TAIL_LINES:]),
            ) from None
        return proc.returncode, proc.stdout

    # -------------------------------------------------------------- long-lived containers
    # What the E2B emulator's Docker mode runs a build's steps and its sandboxes in
    # (e2b_matrix/emulator): a container kept running, commands executed in it one by
    # one as E2B's envd runs them, its state committed as an image.

    def start_container(
        self,
        image: str,
        name: str,
        *,
        labels: Mapping[str, str] = _EMPTY,
        devices: Iterable[str] = (),
        network: str | None = "host",
        cpus: float | None = None,
        memory_mb: int | None = None,
        command: tuple[str, ...] = ("sleep", "infinity"),
    ) -> str:
        """Start ``command`` (the entrypoint is replaced: it keeps the container up) in a new
        container of ``image`` named ``name``; its ID. The image is never pulled. ``devices``
        are passed through with CAP_SYS_ADMIN, as for :meth:`run_in_container`; ``cpus`` and
        ``memory_mb`` limit what it may use."""
        args = ["run", "--detach", "--name", name, "--pull", "never", "--entrypoint", command[0]]
        if network:
            args += ["--network", network]
        if cpus is not None:
            args += ["--cpus", f"{cpus:g}"]
        if memory_mb is not None:
            args += ["--memory", f"{memory_mb}m"]
        devices = tuple(devices)
        for device in devices:
            args += ["--device", device]
        if devices:
            args += ["--cap-add", "SYS_ADMIN"]
        for key, value in sorted(labels.items()):
            args += ["--label", f"{key}={value}"]
        return self._docker(*args, image, *command[1:], timeout=120).stdout.strip()

    def exec_process(
        self,
        container: str,
        argv: Iterable[str],
        *,
        user: str | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] = _EMPTY,
        stdin: bool = False,
    ) -> subprocess.Popen[bytes]:
        """``docker exec`` of ``argv`` in a running container, as a process the caller reads
        (binary stdout and stderr pipes; stdin a pipe when asked) and waits for. The exit code
        of the process is the command's (125-127: docker could not run it)."""
        args = [self.binary, "exec", *(["--interactive"] if stdin else [])]
        if user:
            args += ["--user", user]
        if workdir:
            args += ["--workdir", workdir]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        try:
            return subprocess.Popen(
                [*args, container, *argv],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise DockerError(f"no docker CLI: {args[0]!r} cannot run ({exc.strerror or exc})") from None

    def commit_container(self, container: str, tag: str, *, labels: Mapping[str, str] = _EMPTY) -> str:
        """Save the container's filesystem as the image ``tag`` (with ``labels``); its ID."""
        changes = [a for key, value in sorted(labels.items()) for a in ("--change", f"LABEL {key}={value}")]
        return self._docker("commit", *changes, container, tag, timeout=600).stdout.strip()

    def remove_container(self, name: str) -> None:
        """Stop and remove a container (``rm --force``); no error when it is already gone."""
        proc = self._docker("rm", "--force", name, check=False, timeout=120)
        if proc.returncode != 0 and "no such container" not in proc.stderr.lower():
            raise DockerError(
                f"could not remove container {name!r}", output=proc.stderr.strip(), returncode=proc.returncode
            )

    def containers(self, label: str) -> list[str]:
        """The IDs of the containers, running or not, that carry ``label`` (``key`` or ``key=value``)."""
        return self._docker("ps", "--all", "--quiet", "--filter", f"label={label}").stdout.split()

    def image_config(self, ref: str) -> dict:
        """The image's configuration (``Labels``, ``Env``, ``User``, ...); DockerError when there is no such image."""
        from e2b_matrix import files

        config = files.parse_json(self._inspect(ref, "{{json .Config}}"))
        return config if isinstance(config, dict) else {}


def _stream(
    args: list[str],
    env: Mapping[str, str],
    tail: collections.deque,
    on_log: Callable[[str], None] | None,
    timeout: float | None,
    cancel: threading.Event | None,
    skip: Iterable[str] = (),
    clean: Callable[[str], str | None] | None = None,
) -> tuple[int, str]:
    """Run args, feed each output line to on_log and tail; (exit code, "" | "cancel" | "timeout")."""
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
    except OSError as exc:
        raise DockerError(f"no docker CLI: {args[0]!r} cannot run ({exc.strerror or exc})") from None
    stopped = ""
    done = threading.Event()

    def watch():  # stop the CLI on cancel or timeout; closing its connection stops the build
        nonlocal stopped
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.2):
            if cancel is not None and cancel.is_set():
                stopped = "cancel"
            elif deadline is not None and time.monotonic() > deadline:
                stopped = "timeout"
            else:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            return

    watcher = None
    if cancel is not None or timeout is not None:
        watcher = threading.Thread(target=watch, name="docker-build-watch", daemon=True)
        watcher.start()
    skip = tuple(skip)
    started = False  # skip only a banner printed before the build's own output
    try:
        assert proc.stdout is not None
        for line in _lines(proc.stdout):
            if not started and skip and line.strip().startswith(skip):
                continue
            started = True
            shown = line if clean is None else clean(line)
            if shown is None:
                continue
            tail.append(shown)
            if on_log is not None:
                on_log(shown)
        code = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:  # on_log raised: do not leave the build running
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if watcher is not None:
            watcher.join()
    return code, stopped
