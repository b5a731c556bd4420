"""A small wrapper around the ``docker`` command line: build, inspect, run, remove.

No docker-py: every call is a subprocess to the ``docker`` CLI (``$E2B_MATRIX_DOCKER_CLI``
names another binary), so it works with whatever daemon that CLI reaches
(``DOCKER_HOST``, contexts). Each call is independent: safe from several threads.

Builds use BuildKit when the CLI has the buildx plugin, else the legacy builder
(``DOCKER_BUILDKIT=0``); ``E2B_MATRIX_DOCKER_BUILDKIT=0|1`` forces one. Either way
every output line goes to ``on_log`` as it comes. Builds and containers use the
host's network by default (``--network host``).
"""

from __future__ import annotations

import collections
import functools
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

__all__ = [
    "DockerError",
    "DockerCancelled",
    "HOST_CA_DIR",
    "daemon_available",
    "uses_buildkit",
    "image_exists",
    "image_id",
    "image_size",
    "build_image",
    "run_in_container",
    "remove_image",
    "host_ca_certificates",
]

HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
TAIL_LINES = 40  # lines of output a DockerError carries

_EMPTY: Mapping = {}


class DockerError(Exception):
    """A docker command failed; ``output`` holds the last lines it printed."""

    def __init__(self, message: str, *, output: str = "", returncode: int | None = None):
        super().__init__(f"{message}\n{output}" if output else message)
        self.output = output
        self.returncode = returncode


class DockerCancelled(DockerError):
    """A build stopped because its ``cancel`` event was set."""


def _cli() -> str:
    return os.environ.get("E2B_MATRIX_DOCKER_CLI") or "docker"


def _docker(*args: str, timeout: float | None = 60, check: bool = True,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``docker ARGS`` to completion; DockerError when it cannot run or (check) fails."""
    cmd = [_cli(), *args]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout, env=env)
    except FileNotFoundError:
        raise DockerError(f"no docker CLI: {cmd[0]!r} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise DockerError(f"`docker {' '.join(args[:2])}` did not answer within {timeout}s") from None
    if check and proc.returncode != 0:
        raise DockerError(f"`docker {' '.join(args[:2])}` failed (exit {proc.returncode})",
                          output=(proc.stderr or proc.stdout).strip(), returncode=proc.returncode)
    return proc


def daemon_available(timeout: float = 5) -> bool:
    """Does a Docker daemon answer (``docker info``) within ``timeout`` seconds?"""
    try:
        proc = _docker("info", "--format", "{{.ServerVersion}}", timeout=timeout, check=False)
    except DockerError:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


@functools.cache
def _buildx_available() -> bool:
    try:
        return _docker("buildx", "version", timeout=20, check=False).returncode == 0
    except DockerError:
        return False


def uses_buildkit() -> bool:
    """Will build_image use BuildKit (buildx plugin present) rather than the legacy builder?"""
    forced = os.environ.get("E2B_MATRIX_DOCKER_BUILDKIT", "").strip().lower()
    if forced in ("0", "false", "no"):
        return False
    if forced in ("1", "true", "yes"):
        return True
    return _buildx_available()


def _inspect(ref: str, template: str) -> str:
    proc = _docker("image", "inspect", "--format", template, ref, check=False)
    if proc.returncode != 0:
        raise DockerError(f"no image {ref!r}", output=proc.stderr.strip(), returncode=proc.returncode)
    return proc.stdout.strip()


def image_exists(tag: str) -> bool:
    """Is there a local image with this tag (or ID)?"""
    try:
        return _docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).returncode == 0
    except DockerError:
        return False


def image_id(tag: str) -> str:
    """The image's ID (``sha256:…``); DockerError when there is no such image."""
    return _inspect(tag, "{{.Id}}")


def image_size(ref: str) -> int:
    """The image's size in bytes, its layers included; DockerError when there is no such image."""
    return int(_inspect(ref, "{{.Size}}"))


def remove_image(tag: str, *, force: bool = False) -> None:
    """Remove the tag (the image goes with its last tag). No error when it is already gone."""
    args = ["image", "rm", *(["--force"] if force else []), tag]
    proc = _docker(*args, check=False)
    if proc.returncode != 0 and "no such image" not in proc.stderr.lower():
        raise DockerError(f"could not remove image {tag!r}", output=proc.stderr.strip(),
                          returncode=proc.returncode)


def host_ca_certificates(directory: Path | str = HOST_CA_DIR) -> list[Path]:
    """The host's extra CA certificates (``*.crt`` under /usr/local/share/ca-certificates).

    What update-ca-certificates adds to the system bundle; a build behind a
    TLS-intercepting proxy installs the same files in the image so pip trusts it.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.crt") if p.is_file())


# ------------------------------------------------------------------ builds

_LEGACY_BANNER = ("DEPRECATED: The legacy builder is deprecated",
                  "BuildKit is currently disabled",
                  "environment-variable.")


# Colour and cursor codes: the legacy builder wraps a step's stderr in red.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _lines(stream) -> Iterator[str]:
    """Output lines as they come, without terminal codes; a line redrawn with
    carriage returns gives its last state."""
    for raw in iter(stream.readline, ""):
        parts = [p for p in _ANSI.sub("", raw.rstrip("\n")).split("\r") if p.strip()]
        if parts:
            yield parts[-1].rstrip()


def _context_path(root: Path, name: str) -> Path:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or rel == PurePosixPath("."):
        raise ValueError(f"context file name must be a relative path inside the context: {name!r}")
    return root.joinpath(*rel.parts)


def build_image(
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
    when the build fails or runs past ``timeout`` seconds, DockerCancelled when
    ``cancel`` is set while it runs.
    """
    buildkit = uses_buildkit()
    workdir = Path(tempfile.mkdtemp(prefix="e2b-matrix-build-"))
    try:
        context = workdir / "context"
        context.mkdir()
        for name, data in context_files.items():
            path = _context_path(context, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        # The Dockerfile lives outside the context, so no context file can clash with it.
        dockerfile_path = workdir / "Dockerfile"
        dockerfile_path.write_text(dockerfile)
        iidfile = workdir / "image-id"

        args = [_cli(), "build", "-t", tag, "-f", str(dockerfile_path), "--iidfile", str(iidfile)]
        if network:
            args += ["--network", network]
        if no_cache:
            args.append("--no-cache")
        for key, value in sorted(labels.items()):
            args += ["--label", f"{key}={value}"]
        env = dict(os.environ)
        if buildkit:
            env["DOCKER_BUILDKIT"] = "1"
            args += ["--progress", "plain"]
        else:
            env["DOCKER_BUILDKIT"] = "0"
            args.append("--force-rm")  # no intermediate containers left behind by a failed step
        args.append(str(context))

        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        code, stopped = _stream(args, env, tail, on_log, timeout, cancel,
                                skip=() if buildkit else _LEGACY_BANNER)
        output = "\n".join(tail)
        if stopped == "cancel":
            raise DockerCancelled(f"docker build of {tag} cancelled", output=output)
        if stopped == "timeout":
            raise DockerError(f"docker build of {tag} ran past {timeout}s and was stopped", output=output)
        if code != 0:
            raise DockerError(f"docker build of {tag} failed (exit {code}); last lines:",
                              output=output, returncode=code)
        try:
            built = iidfile.read_text().strip()
        except OSError:
            built = ""
        return built or image_id(tag)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stream(args: list[str], env: Mapping[str, str], tail: collections.deque,
            on_log: Callable[[str], None] | None, timeout: float | None,
            cancel: threading.Event | None, skip: Iterable[str] = ()) -> tuple[int, str]:
    """Run args, feed each output line to on_log and tail; (exit code, "" | "cancel" | "timeout")."""
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
    except FileNotFoundError:
        raise DockerError(f"no docker CLI: {args[0]!r} is not on PATH") from None
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
            tail.append(line)
            if on_log is not None:
                on_log(line)
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


# ------------------------------------------------------------------ containers

def run_in_container(
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
    name = f"e2b-matrix-run-{uuid.uuid4().hex[:12]}"
    args = [_cli(), "run", "--rm", "--name", name, "--pull", "never"]
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
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout)
    except FileNotFoundError:
        raise DockerError(f"no docker CLI: {args[0]!r} is not on PATH") from None
    except subprocess.TimeoutExpired as exc:
        subprocess.run([_cli(), "rm", "--force", name], capture_output=True, timeout=60, check=False)
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
        raise DockerError(f"`{command}` in {image} ran past {timeout}s; container removed",
                          output="\n".join(out.splitlines()[-TAIL_LINES:])) from None
    return proc.returncode, proc.stdout
