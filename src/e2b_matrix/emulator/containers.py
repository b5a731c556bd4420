"""A command in a running container, as E2B's envd runs one: its pid, its output as it comes, its end.

envd starts a process as a user, in a working directory, with the environment
it is given, and streams stdout and stderr in chunks of up to 32 KiB until the
process ends (e2b-dev/infra packages/envd/internal/services/process/handler/
handler.go). Here ``docker exec`` does it: a small ``sh`` wrapper changes to the
directory (envd refuses a cwd that does not exist), prints its pid on stdout's
first line, then ``exec``s the command, so the pid is the command's own in the
container and :meth:`Process.kill` can signal it (stopping the ``docker exec``
client would leave it running). Used by the Docker mode's step executor
(docker_steps.py) and by the sandbox proxy (sandboxes.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO

from e2b_matrix.backends.docker_engine import DockerCLI, DockerError

CHUNK = 32 << 10  # envd's stdChunkSize
# $1: the directory ("" for the user's home, as envd does when none is given; ~ and a relative path
# are taken from the home too); the rest: the command.
_WRAPPER = (
    'd=${1:-$HOME}; shift; case $d in "~") d=$HOME ;; "~/"*) d=$HOME/${d#"~/"} ;; /*) ;; *) d=$HOME/$d ;; esac; '
    'cd -- "$d" 2>/dev/null || { printf "cwd \'%s\' does not exist\\n" "$d" >&2; exit 126; }; '
    'echo "$$"; exec "$@"'
)

Output = Callable[[bytes], None]


class NotStarted(Exception):
    """The command never started: no such user or working directory (what docker or the wrapper said)."""


class Process:
    """``argv`` running in ``container`` as ``user`` in ``cwd`` with ``env`` (docker exec).

    ``on_stdout`` and ``on_stderr`` hear the output in chunks as it comes, on reader
    threads. :meth:`pid` waits for the command to start; :meth:`wait` for its end.
    """

    def __init__(
        self,
        cli: DockerCLI,
        container: str,
        argv: Iterable[str],
        *,
        user: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_stdout: Output | None = None,
        on_stderr: Output | None = None,
    ):
        self._cli, self._container = cli, container
        self._on_stdout, self._on_stderr = on_stdout, on_stderr
        self._pid: int | None = None
        self._started = threading.Event()
        self._lock = threading.Lock()  # the pid and the stderr heard before it, together
        self._early: list[bytes] = []  # stderr before the pid: why it could not start (or the command's own)
        self._killed = False
        self._proc = cli.exec_process(
            container, ["/bin/sh", "-c", _WRAPPER, "sh", cwd or "", *argv], user=user, env=dict(env or {})
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read_stdout, args=(self._proc.stdout,), daemon=True, name="e2b-emulator-stdout"
            ),
            threading.Thread(
                target=self._read_stderr, args=(self._proc.stderr,), daemon=True, name="e2b-emulator-stderr"
            ),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self, stream: IO[bytes]) -> None:
        head = b""
        try:
            while self._pid is None:
                chunk = stream.read1(CHUNK)  # type: ignore[attr-defined]  # a BufferedReader
                if not chunk:
                    return
                head += chunk
                line, newline, rest = head.partition(b"\n")
                if newline:
                    with self._lock:
                        self._pid = int(line.strip() or b"0")
                        early, self._early = self._early, []
                    self._started.set()
                    if early and self._on_stderr is not None:
                        self._on_stderr(b"".join(early))
                    if rest and self._on_stdout is not None:
                        self._on_stdout(rest)
            while chunk := stream.read1(CHUNK):  # type: ignore[attr-defined]
                if self._on_stdout is not None:
                    self._on_stdout(chunk)
        finally:
            self._started.set()  # ended, started or not

    def _read_stderr(self, stream: IO[bytes]) -> None:
        while chunk := stream.read1(CHUNK):  # type: ignore[attr-defined]
            with self._lock:
                if self._pid is None:
                    self._early.append(chunk)
                    continue
            if self._on_stderr is not None:
                self._on_stderr(chunk)

    def pid(self) -> int:
        """The command's pid in the container, once it runs; NotStarted when it could not start."""
        self._started.wait()
        if self._pid is None:
            self.wait()
            why = b"".join(self._early).decode(errors="replace").strip()
            raise NotStarted(why.splitlines()[-1] if why else f"docker exec ended with {self._proc.returncode}")
        return self._pid

    def wait(self, timeout: float | None = None) -> int:
        """The command's exit code (all its output heard); TimeoutExpired after ``timeout``."""
        code = self._proc.wait(timeout)
        for reader in self._readers:
            reader.join()
        return code

    def poll(self) -> int | None:
        """The exit code once ended, else None."""
        return self._proc.poll()

    @property
    def killed(self) -> bool:
        return self._killed

    def kill(self) -> None:
        """SIGKILL the command (as envd does when its timeout passes, or a client asks)."""
        self._killed = True
        if self._pid is not None and self._proc.poll() is None:
            with contextlib.suppress(DockerError):
                run(self._cli, self._container, ["kill", "-KILL", str(self._pid)], user="root")
        if self._proc.poll() is None:
            self._proc.kill()


def run(
    cli: DockerCLI,
    container: str,
    argv: Iterable[str],
    *,
    user: str | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 600,
) -> tuple[int, str, str]:
    """A short command to its end: (exit code, stdout, stderr). ``stdin`` is written to it when given."""
    argv = list(argv)
    proc = cli.exec_process(container, argv, user=user, workdir=cwd, env=dict(env or {}), stdin=stdin is not None)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise DockerError(f"`{' '.join(argv)}` in {container} ran past {timeout:g}s") from None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
