"""``e2b-matrix emulate``: a local E2B on 127.0.0.1, until Ctrl-C or SIGTERM.

It prints the variables that point the e2b SDK (and e2b-matrix) at it::

    export E2B_API_URL=http://127.0.0.1:41235
    export E2B_SANDBOX_URL=http://127.0.0.1:41237
    export E2B_API_KEY=emulator-5f0c...

The mode: ``docker`` runs each build's steps and each sandbox in Docker
(docker_mode.py); ``timing`` models builds' time and E2B's layer cache without
running anything; ``auto`` (the default) takes the Docker mode when a daemon
answers and a stand-in of code-interpreter-v1 can be made, else the timing mode,
and says why. The key is the emulator's own (not shaped like an E2B key: no
redactor hides it), new at each start unless given.
"""

from __future__ import annotations

import secrets
import shlex
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from e2b_matrix import files
from e2b_matrix.emulator.api import E2BEmulator

if TYPE_CHECKING:
    from e2b_matrix.emulator.docker_mode import DockerMode

MODES = ("auto", "docker", "timing")


class ModeUnavailable(Exception):
    """The Docker mode was asked for and cannot run here (the message says why)."""


def new_key() -> str:
    return "emulator-" + secrets.token_hex(16)


def docker_mode(
    mode: str, say: Callable[[str], None], docker_cli: str | None = None, buildkit: bool | None = None
) -> DockerMode | None:
    """The DockerMode for ``mode`` (None: the timing mode); ModeUnavailable when ``docker`` cannot run."""
    if mode == "timing":
        return None
    from e2b_matrix.backends.docker_discovery import discover
    from e2b_matrix.backends.docker_engine import DockerCLI
    from e2b_matrix.emulator.docker_mode import DockerMode, DockerUnavailable

    try:
        return DockerMode.prepare(DockerCLI(discover(docker_cli, buildkit)), on_log=say)
    except DockerUnavailable as exc:
        if mode == "docker":
            raise ModeUnavailable(str(exc)) from None
        say(f"timing mode: {exc}")
        return None


def exports(emu: E2BEmulator) -> str:
    """The shell lines that point a process at ``emu``."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in emu.env().items())


def serve(
    mode: str,
    *,
    api_key: str | None = None,
    step_cost: float = 0.05,
    env_file: Path | None = None,
    say: Callable[[str], None] = print,
    out: Callable[[str], None] = print,
    docker_cli: str | None = None,
    buildkit: bool | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until ``stop`` is set, Ctrl-C or SIGTERM; the exports go to ``out`` (and ``env_file``)."""
    docker = docker_mode(mode, say, docker_cli, buildkit)
    stop = stop or threading.Event()
    with E2BEmulator(api_key=api_key or new_key(), default_step_cost=step_cost, docker=docker) as emu:
        text = exports(emu)
        if env_file is not None:
            files.atomic_write(env_file, text.encode())
        out(text.rstrip("\n"))
        say(
            f"e2b-matrix emulate: a local stand-in for E2B in its {emu.mode} mode "
            f"(docs/emulator.md); serving until Ctrl-C"
        )
        wait(stop)
        say("e2b-matrix emulate: stopping" + (" (its containers are removed)" if emu.mode == "docker" else ""))


def wait(stop: threading.Event) -> None:
    """Block until ``stop`` is set, Ctrl-C or (on the main thread) SIGTERM."""
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None

    def terminate(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if previous is not None:
        signal.signal(signal.SIGTERM, terminate)
    try:
        while not stop.wait(0.5):  # short waits: Ctrl-C is seen at once
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
