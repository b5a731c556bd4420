"""A small wrapper around the ``docker`` command line: build, inspect, tag and remove images; run,
exec and commit containers.

No docker-py: every call is a subprocess to a ``docker`` CLI, so it works with
whatever daemon that CLI reaches (``DOCKER_HOST``, contexts). A ``DockerCLI`` is
made from a ``Discovery`` (docker_discovery.py: which CLI and which builder), which
the caller finds once and keeps; it reads no environment variable of ours. Each
call is independent: one instance is safe from several threads.

A build passes every output line to ``on_log`` as it comes, without terminal
codes; with BuildKit (``--progress plain``) a step's output lines come without
BuildKit's ``#N 0.123`` prefix, as the step printed them. Builds and containers
use the host's network (``--network host``).
"""

from __future__ import annotations

import collections
import contextlib
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any

import attrs

from e2b_matrix import files
from e2b_matrix.backends.docker_discovery import NETWORK, TERMINAL_CODES, Discovery, build_command

__all__ = [
    "HOST_CA_DIR",
    "DockerCLI",
    "DockerCancelled",
    "DockerContainers",
    "DockerError",
    "DockerImages",
    "DockerNotFound",
    "DockerTimeout",
    "host_ca_certificates",
]

HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
TAIL_LINES = 40  # lines of output a DockerError carries

_EMPTY: Mapping[str, str] = {}
_NO_FILES: Mapping[str, bytes] = {}


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


# What the docker CLI prints when the daemon has no such image: "Error: No such image: x" (CLI 20.10),
# "Error response from daemon: No such image: x" (newer); anything else (no daemon) is not that.
_NO_SUCH_IMAGE = re.compile(r"No such image", re.IGNORECASE)


@attrs.frozen
class _Docker:
    """The docker CLI of ``discovery``, called as a subprocess; every call is independent."""

    discovery: Discovery

    def _docker(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` to completion; DockerError when it cannot run or (check) fails."""
        try:
            proc = subprocess.run(
                [self.discovery.binary, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except OSError as exc:
            raise _cannot_run(self.discovery.binary, exc) from None
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


@attrs.frozen
class DockerImages(_Docker):
    """Images: inspect, tag, list, remove, and build them (with the builder ``discovery`` chose)."""

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

    def image_config(self, ref: str) -> dict[str, Any]:
        """The image's configuration (``Labels``, ``Env``, ``User``, ...); DockerError when there is no such image."""
        config = files.parse_json(self._inspect(ref, "{{json .Config}}"))
        return config if isinstance(config, dict) else {}

    def remove_image(self, tag: str) -> None:
        """Remove the tag (the image goes with its last tag). No error when it is already gone."""
        proc = self._docker("image", "rm", tag, check=False)
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

    def build_image(
        self,
        dockerfile: str,
        tag: str,
        *,
        context_files: Mapping[str, bytes] = _NO_FILES,
        on_log: Callable[[str], None] | None = None,
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
        found = self.discovery
        if found.error:
            raise DockerError(found.error)
        with _build_folder(dockerfile, context_files) as folder:
            start, env = build_command(found.binary, found.builder)
            args = [*start, "-t", tag, "-f", str(folder / "Dockerfile"), "--iidfile", str(folder / "image-id")]
            args += ["--no-cache"] if no_cache else []
            args += [a for key, value in sorted(labels.items()) for a in ("--label", f"{key}={value}")]
            code, stopped, output = _stream(
                [*args, str(folder / "context")], env, on_log, found.buildkit, timeout, cancel
            )
            _raise_unless_built(tag, code, stopped, output, timeout)
            built = (folder / "image-id").read_text().strip() if (folder / "image-id").is_file() else ""
        return built or self.image_id(tag)


@attrs.frozen
class DockerContainers(_Docker):
    """Containers: a command in a throwaway one; and the long-lived ones of the E2B emulator's Docker
    mode (e2b_matrix/emulator), kept running while commands run in them one by one, as E2B's envd
    runs them, their state committed as an image."""

    def run_in_container(
        self, image: str, command: str, *, user: str | None = None, devices: Iterable[str] = (), timeout: float = 120
    ) -> tuple[int, str]:
        """Run ``sh -c command`` in a throwaway container; (exit code, stdout and stderr).

        ``devices`` (e.g. ``("/dev/fuse",)``) are passed through with ``--device`` and
        the container gets CAP_SYS_ADMIN to mount them. The image is never pulled.
        Exit code 125 means docker could not start the container (output says why).
        Raises DockerError when the command runs past ``timeout`` (the container is removed).
        """
        name = f"e2b-matrix-run-{uuid.uuid4().hex[:12]}"
        options = ["--rm", "--name", name, "--pull", "never", *_container_options(devices, user)]
        try:
            proc = subprocess.run(
                [self.discovery.binary, "run", *options, image, "sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except OSError as exc:
            raise _cannot_run(self.discovery.binary, exc) from None
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(DockerError):
                self.remove_container(name)
            out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
            raise DockerError(
                f"`{command}` in {image} ran past {timeout}s; container removed",
                output="\n".join(out.splitlines()[-TAIL_LINES:]),
            ) from None
        return proc.returncode, proc.stdout

    def start_container(
        self,
        image: str,
        name: str,
        *,
        labels: Mapping[str, str] = _EMPTY,
        devices: Iterable[str] = (),
        cpus: float | None = None,
        memory_mb: int | None = None,
    ) -> str:
        """Start ``sleep infinity`` (the entrypoint is replaced: it keeps the container up) in a new
        container of ``image`` named ``name``; its ID. The image is never pulled. ``devices``
        are passed through with CAP_SYS_ADMIN, as for :meth:`run_in_container`; ``cpus`` and
        ``memory_mb`` limit what it may use."""
        args = ["run", "--detach", "--name", name, "--pull", "never", "--entrypoint", "sleep"]
        args += [*_container_options(devices), *(["--cpus", f"{cpus:g}"] if cpus is not None else [])]
        args += ["--memory", f"{memory_mb}m"] if memory_mb is not None else []
        args += [a for key, value in sorted(labels.items()) for a in ("--label", f"{key}={value}")]
        return self._docker(*args, image, "infinity", timeout=120).stdout.strip()

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
        args = ["exec", *(["--interactive"] if stdin else []), *(["--user", user] if user else [])]
        args += ["--workdir", workdir] if workdir else []
        args += [a for key, value in env.items() for a in ("--env", f"{key}={value}")]
        try:
            return subprocess.Popen(
                [self.discovery.binary, *args, container, *argv],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise _cannot_run(self.discovery.binary, exc) from None

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


@attrs.frozen
class DockerCLI(DockerImages, DockerContainers):
    """One docker CLI, its images and its containers: what the Docker backend and the emulator use."""


def _cannot_run(binary: str, exc: OSError) -> DockerError:
    return DockerError(f"no docker CLI: {binary!r} cannot run ({exc.strerror or exc})")


def _container_options(devices: Iterable[str], user: str | None = None) -> list[str]:
    """The host's network; each device passed through, with CAP_SYS_ADMIN to mount it; the user."""
    devices = tuple(devices)
    options = ["--network", NETWORK, *(a for device in devices for a in ("--device", device))]
    options += ["--cap-add", "SYS_ADMIN"] if devices else []
    return options + (["--user", user] if user else [])


# ------------------------------------------------------------------ one build


def _context_path(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or rel == PurePosixPath("."):
        raise ValueError(f"context file name must be a relative path inside the context: {name!r}")
    return rel


@contextlib.contextmanager
def _build_folder(dockerfile: str, context_files: Mapping[str, bytes]) -> Iterator[Path]:
    """A temporary folder for one build: ``context/`` holding the files, and the ``Dockerfile`` beside it
    (outside the context, so no context file can clash with it). ValueError for a name outside the context."""
    named = [(_context_path(name), data) for name, data in context_files.items()]
    with tempfile.TemporaryDirectory(prefix="e2b-matrix-build-", ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp)
        (folder / "context").mkdir()
        for rel, data in named:
            path = folder.joinpath("context", *rel.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (folder / "Dockerfile").write_text(dockerfile)
        yield folder


_LEGACY_BANNER = (
    "DEPRECATED: The legacy builder is deprecated",
    "BuildKit is currently disabled",
    "environment-variable.",
)
# BuildKit's plain progress: "#5 0.081 text" is a step's output line; "#5 sha256:…" a vertex digest.
_BUILDKIT_OUTPUT = re.compile(r"^#\d+ \d+\.\d+ ?(.*)$")
_BUILDKIT_DIGEST = re.compile(r"^#\d+ sha256:[0-9a-f]{64}$")


def _lines(stream: IO[str]) -> Iterator[str]:
    """Output lines as they come, without terminal codes; a line redrawn with
    carriage returns gives its last state."""
    for raw in iter(stream.readline, ""):
        parts = [p for p in TERMINAL_CODES.sub("", raw.rstrip("\n")).split("\r") if p.strip()]
        if parts:
            yield parts[-1].rstrip()


def _shown(lines: Iterable[str], buildkit: bool) -> Iterator[str]:
    """The lines of a build's output worth showing: BuildKit's step output as the step printed it
    (without ``#N 0.123``; vertex digests and blank lines dropped, as the legacy builder drops them);
    the legacy builder's without the deprecation banner it prints before the build's own output."""
    if buildkit:
        for line in lines:
            m = _BUILDKIT_OUTPUT.match(line)
            if m is None and not _BUILDKIT_DIGEST.match(line):
                yield line
            elif m is not None and m.group(1).strip():
                yield m.group(1)
        return
    started = False
    for line in lines:
        started = started or not line.strip().startswith(_LEGACY_BANNER)
        if started:
            yield line


def _raise_unless_built(tag: str, code: int, stopped: str, output: str, timeout: float | None) -> None:
    """DockerCancelled, DockerTimeout or DockerError (with the last lines) for a build that did not succeed."""
    if stopped == "cancel":
        raise DockerCancelled(f"docker build of {tag} cancelled", output=output)
    if stopped == "timeout":
        raise DockerTimeout(f"docker build of {tag} ran past {timeout or 0:g}s and was stopped", output=output)
    if code != 0:
        raise DockerError(f"docker build of {tag} failed (exit {code}); last lines:", output=output, returncode=code)


class _Stopper:
    """Stops a running build (terminating the CLI closes its connection, which stops the build) when
    ``cancel`` is set or ``timeout`` seconds pass; ``why`` says which ("" while neither)."""

    def __init__(self, proc: subprocess.Popen[str], timeout: float | None, cancel: threading.Event | None):
        self.proc, self.cancel, self.why = proc, cancel, ""
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="docker-build-watch", daemon=True)

    def __enter__(self) -> _Stopper:
        if self.cancel is not None or self.deadline is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            if self.cancel is not None and self.cancel.is_set():
                self.why = "cancel"
            elif self.deadline is not None and time.monotonic() > self.deadline:
                self.why = "timeout"
            else:
                continue
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            return


def _stream(
    args: list[str],
    env: Mapping[str, str],
    on_log: Callable[[str], None] | None,
    buildkit: bool,
    timeout: float | None,
    cancel: threading.Event | None,
) -> tuple[int, str, str]:
    """Run a build, each line worth showing to ``on_log``: (exit code, "" | "cancel" | "timeout", its last lines)."""
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
        raise _cannot_run(args[0], exc) from None
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    assert proc.stdout is not None
    with _Stopper(proc, timeout, cancel) as stopper, proc.stdout:
        try:
            for line in _shown(_lines(proc.stdout), buildkit):
                tail.append(line)
                if on_log is not None:
                    on_log(line)
            code = proc.wait()
        finally:
            if proc.poll() is None:  # on_log raised: do not leave the build running
                proc.kill()
                proc.wait()
    return code, stopper.why, "\n".join(tail)
