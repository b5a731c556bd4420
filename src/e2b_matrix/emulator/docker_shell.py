"""Commands in a build's containers, as E2B's orchestrator runs a build's commands through envd.

A command runs as a user, in a working directory, with the environment of the build's
*context* (e2b-dev/infra packages/orchestrator/pkg/template: metadata's Context;
build/sandboxtools/command.go): :class:`Context` is that context, :class:`Command` one
command, and :class:`Shell` runs it in a container (``docker exec``, containers.py) with
each line of its output an entry of the build's log, ``[prefix] [stdout]: line``
(command.go: logStream). A cancelled build stops its command (:class:`Stopped`); a step
that fails says why in E2B's words (:class:`StepFailed`). Used by the step commands
(step_commands.py) and the build executor (docker_steps.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

from e2b_matrix import files
from e2b_matrix.backends.docker_engine import DockerCLI
from e2b_matrix.emulator import containers
from e2b_matrix.emulator.timing import LiveCourse

STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Context:
    """E2B's metadata context: the user, workdir and environment commands run with."""

    user: str
    workdir: str | None = None
    envs: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str]:
        return dict(self.envs)

    def with_envs(self, envs: Mapping[str, str]) -> Context:
        return replace(self, envs=tuple(envs.items()))

    def command_env(self) -> dict[str, str]:
        """The environment of a build command: the context's, PATH completed (sandboxtools/command.go)."""
        envs = self.env()
        if "PATH" in envs:
            envs["PATH"] += ":" + STANDARD_PATH
        return envs

    def label(self) -> str:
        data = {"user": self.user, "workdir": self.workdir, "envs": [list(kv) for kv in self.envs]}
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()

    @classmethod
    def from_label(cls, text: str) -> Context:
        data = files.parse_json(base64.urlsafe_b64decode(text.encode()))
        return cls(str(data["user"]), data["workdir"], tuple((str(k), str(v)) for k, v in data["envs"]))


@dataclass(frozen=True)
class Command:
    """One command of a build: ``argv`` as ``user`` in ``cwd`` (None: the user's home) with ``env``."""

    argv: tuple[str, ...]
    user: str
    cwd: str | None
    env: Mapping[str, str]


@dataclass(frozen=True)
class Output:
    """Where a command's output goes: entries ``[prefix] [stdout]: line`` of ``step`` at ``level``."""

    prefix: str
    step: str
    level: str


class StepFailed(Exception):
    """A step failed: E2B's reason message, and the step's name ("base", "1", ..., "finalize")."""

    def __init__(self, message: str, step: str):
        super().__init__(message)
        self.message, self.step = message, step


class Stopped(Exception):
    """The build was cancelled while it ran."""


class Shell:
    """Runs a build's commands in its containers, their output in the build's log."""

    def __init__(self, cli: DockerCLI):
        self.cli = cli

    def start(self, course: LiveCourse, container: str, command: Command, output: Output) -> Running:
        """Start ``command``; its output goes to the log as it comes."""
        lines = (Lines(course, output, "stdout"), Lines(course, output, "stderr"))
        env = {**command.env, "USER": command.user, "LOGNAME": command.user}
        process = containers.Process(
            self.cli,
            container,
            command.argv,
            user=command.user,
            cwd=command.cwd,
            env=env,
            on_stdout=lines[0].feed,
            on_stderr=lines[1].feed,
        )
        return Running(process, lines)

    def logged(self, course: LiveCourse, container: str, command: Command, output: Output) -> int:
        """Run ``command`` to its end, its output in the build's log as E2B logs it; its exit code.
        Stops it (and the build: :class:`Stopped`) when the build is cancelled."""
        running = self.start(course, container, command, output)
        try:
            running.process.pid()
        except containers.NotStarted as exc:
            course.log(output.level, f"[{output.prefix}] [stderr]: {exc}", output.step)
            return 126
        while True:
            if course.stopped.is_set():
                running.process.kill()
                running.process.wait()
                raise Stopped()
            try:
                code = running.process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        running.flush()
        return code


@dataclass
class Running:
    """A started command and the log lines its output makes."""

    process: containers.Process
    lines: tuple[Lines, Lines]

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        self.process.kill()
        self.flush()

    def flush(self) -> None:
        for lines in self.lines:
            lines.flush()


class Lines:
    """A command's output as log entries, one per line: ``[prefix] [stdout]: line``
    (sandboxtools/command.go: logStream; blank lines dropped, each line trimmed)."""

    def __init__(self, course: LiveCourse, output: Output, stream: str):
        self.course, self.level, self.step = course, output.level, output.step
        self.head = f"[{output.prefix}] [{stream}]: "
        self.rest = b""
        self.lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self.lock:
            *lines, self.rest = (self.rest + chunk).split(b"\n")
        for line in lines:
            self._emit(line)

    def flush(self) -> None:
        with self.lock:
            rest, self.rest = self.rest, b""
        self._emit(rest)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").strip()
        if line:
            self.course.log(self.level, self.head + line, self.step)
