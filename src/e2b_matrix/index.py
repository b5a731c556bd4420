"""The package index, asked through uv: the one place e2b-matrix runs uv.

Every question is ``uv pip compile`` for the base's Python (``--python-version``) and platform
(``--python-platform``), with one set of index settings: E2B_MATRIX_UV_ARGS, uv's own environment
(UV_INDEX_URL, UV_CACHE_DIR, ...), uv's cache, and ``--offline`` when the run is offline.

- ``Uv.compile``: what a pip step asks for, every transitive package pinned and hashed
  (``e2b-matrix compile``; pins.Compiler judges the answer before it writes it).
- ``PackageIndex.newest``: the newest release of one package that the base's Python can run
  ("latest" in layers/nexus.py), and ``PackageIndex.problem``: why a pinned version is not one.
  These ask with ``--no-deps``, so uv decides by what the index publishes for each file (PEP 503's
  ``data-requires-python`` and ``data-yanked``): yanked files and pre-releases never make "latest"
  (an exact pin may name one), and of Requires-Python uv compares the lower bound only: it ignores
  upper bounds (uv's docs/pip/compatibility.md, "requires-python upper bounds"). A --find-links
  folder publishes no Requires-Python and ``--no-deps`` reads no wheel: there "latest" is the newest
  release, and compiling it says when it needs another Python.

uv is a child process: it runs in a temporary folder of its own (``e2b-matrix-compile-*``) in a
session of its own. SIGINT, SIGTERM or SIGHUP while it runs stops it (its process group) and
removes the folder before the signal ends e2b-matrix as an interrupt. What it prints is kept to its
last ``MAX_STDERR`` bytes (the run log, and the one-line error). Its answer is checked before a
caller sees it: the file exists, holds at most ``limit`` bytes, and is UTF-8 text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType

import attrs

from e2b_matrix import files, names
from e2b_matrix.errors import CompileError, ConfigError
from e2b_matrix.reqfile import canonical_name, parse

log = logging.getLogger(__name__)
sysconfig.get_config_vars()  # filled once, before two threads can race on it (find_uv)

TEMP_PREFIX = "e2b-matrix-compile-"
TIMEOUT_S = 900.0  # one uv run, resolution and downloads included
STOP_S = 5.0  # from SIGTERM to SIGKILL, when uv is stopped
MAX_STDERR = 256 * 1024  # the tail of what uv prints that is kept
MAX_LATEST_BYTES = 64 * 1024  # the answer to "which release": one pinned line


class UvFailed(CompileError):
    """uv gave no usable answer. ``resolving``: uv itself said it cannot resolve (exit 1) and
    ``reason`` is its reason in one line; else ``reason`` says what went wrong (an error of uv's,
    a bad answer, a time-out). ``stderr``: the tail of what uv printed."""

    def __init__(self, reason: str, *, resolving: bool = False, stderr: str = ""):
        super().__init__(reason)
        self.reason, self.resolving, self.stderr = reason, resolving, stderr

    @property
    def offline_miss(self) -> bool:
        """uv could not answer from its cache with the network disabled (--offline)."""
        return "network was disabled" in " ".join(self.stderr.split())


def find_uv() -> str:
    """The uv binary of the installed ``uv`` package (its public API).

    ``find_uv_bin`` reads ``sysconfig.get_config_var``, whose first call fills the variables in
    place and unguarded: a second thread may see them half made (None), as two runs in one process
    did. They are filled here first, under the import lock that guards this module's import.
    """
    try:
        from uv import find_uv_bin  # only a command that asks uv loads it (tests/test_startup.py)

        return find_uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise ConfigError(
            f"no uv binary ({exc}): install e2b-matrix's dependencies (pip install uv), or set E2B_MATRIX_UV", key="uv"
        ) from None


def uv_reason(stderr: str) -> str:
    """uv's reason in one line: its error and the causes after it, without hints or box drawing
    (uv 0.5 draws ``×``/``╰─▶`` and wraps lines; later versions print ``error:`` and ``cause:``)."""
    lines = [line.strip().lstrip("×╰─▶│├ ").strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    start = next((i for i, line in enumerate(lines) if line.startswith(("error:", "No solution found"))), None)
    if start is None:
        return lines[-1][:300] if lines else "no output"
    kept: list[str] = []
    for line in lines[start:]:
        if line.startswith("hint:") or (kept and line.startswith("warning:")):
            break
        kept.append(line.removeprefix("error:").removeprefix("cause:").removeprefix("Caused by:").strip())
    text = " ".join(kept)
    text = re.sub(r"^No solution found when resolving dependencies:?\s*", "", text)
    return text[:400]


@attrs.frozen
class Uv:
    """How e2b-matrix runs uv: the binary (E2B_MATRIX_UV, else the uv package's), the options
    (E2B_MATRIX_UV_ARGS) and whether the run is offline (``--offline``)."""

    binary: str | None = None
    args: tuple[str, ...] = ()
    offline: bool = False
    # Where uv's command and output are recorded besides this module's log (the console at -v):
    # the run log of a compile, handed in by the caller (no logger of the process is touched).
    record: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        log.info("%s", message)
        if self.record is not None:
            self.record(message)

    def compile(
        self,
        asks: Iterable[str],
        python: str,
        platform: str,
        *,
        label: str,
        limit: int,
        constraints: Iterable[str] = (),
        seed: bytes | None = None,
        upgrade: bool = False,
        packages: Iterable[str] = (),
        hashes: bool = True,
        no_deps: bool = False,
        final: bool = False,
    ) -> str:
        """uv's answer: the pinned requirements of ``asks`` (no header) for ``python`` on ``platform``;
        UvFailed when there is none. ``seed``: the output file uv starts from (its pins are kept where
        still valid); ``final``: never a pre-release, unless E2B_MATRIX_UV_ARGS says otherwise
        (``--prerelease``); ``label`` names the question in log lines."""
        constraints = tuple(constraints)
        flags = {
            "--generate-hashes": hashes,
            "--no-deps": no_deps,
            "--offline": self.offline,
            "--upgrade": upgrade,
            "--constraint=constraints.txt": bool(constraints),
            # uv's default --prerelease takes one when a package has no final release
            "--prerelease=disallow": final and not self._sets("--prerelease"),
        }
        cmd = self._command(python, platform, [flag for flag, wanted in flags.items() if wanted], packages)
        self.say(f"{label}: {' '.join(cmd[1:])}{' + E2B_MATRIX_UV_ARGS' if self.args else ''}")
        return self._in_folder(cmd, label, limit, asks, constraints, seed)

    def _in_folder(
        self,
        cmd: list[str],
        label: str,
        limit: int,
        asks: Iterable[str],
        constraints: tuple[str, ...],
        seed: bytes | None,
    ) -> str:
        """``cmd`` run on the question's files in a folder of its own, removed after (a signal stops uv
        first); uv's answer, or UvFailed."""
        with _signals_stop_uv(), tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as tmp:
            work = Path(tmp)
            _ask(work, asks, constraints, seed)
            code, stderr = self._run(cmd + list(self.args), work)  # the args unlogged: a URL may hold a password
            if stderr.strip():
                self.say(f"{label}: uv said:\n{stderr.rstrip()}")
            if code != 0:
                raise UvFailed(uv_reason(stderr), resolving=code == 1, stderr=stderr)
            return _answer(work, limit, seed)

    def _command(self, python: str, platform: str, flags: list[str], packages: Iterable[str]) -> list[str]:
        """``uv pip compile`` of the question's files for ``python`` on ``platform``, with ``flags`` and an
        ``--upgrade-package`` for each of ``packages`` (not E2B_MATRIX_UV_ARGS: the caller adds them)."""
        return [
            self.binary or find_uv(),
            "pip",
            "compile",
            "requirements.in",
            "--output-file",
            "requirements.txt",
            "--no-header",
            "--python-version",
            python,
            "--python-platform",
            platform,
            "--python",
            sys.executable,
            "--no-python-downloads",
            *flags,
            *(f"--upgrade-package={p}" for p in sorted(packages)),
        ]

    def _sets(self, option: str) -> bool:
        """Whether E2B_MATRIX_UV_ARGS sets ``option`` (``--opt value`` or ``--opt=value``)."""
        return any(a.partition("=")[0] == option for a in self.args)

    def _run(self, cmd: list[str], work: Path) -> tuple[int, str]:
        """uv's exit status and the tail of its stderr; uv is stopped on a time-out or any exception."""
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot run uv: {exc.strerror or exc}", key="E2B_MATRIX_UV" if self.binary else "uv"
            ) from None
        try:
            stderr = _tail(proc, time.monotonic() + TIMEOUT_S)
            return proc.wait(), stderr
        except subprocess.TimeoutExpired:
            raise UvFailed(f"uv ran past {TIMEOUT_S:.0f}s and was stopped") from None
        finally:
            _stop(proc)


def _tail(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """What ``proc`` prints on stderr until it closes it, its last MAX_STDERR bytes; TimeoutExpired
    past ``deadline`` (time.monotonic)."""
    kept = bytearray()
    assert proc.stderr is not None
    with selectors.DefaultSelector() as sel, proc.stderr:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, TIMEOUT_S)
            if not sel.select(left):
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            kept += chunk
            del kept[:-MAX_STDERR]
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise subprocess.TimeoutExpired(proc.args, TIMEOUT_S) from None
    return kept.decode("utf-8", errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """uv and what it started (its process group) stopped: SIGTERM, then SIGKILL after STOP_S."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _ask(work: Path, asks: Iterable[str], constraints: tuple[str, ...], seed: bytes | None) -> None:
    """The question's files in ``work``: what it asks, its constraints, and the seed as the output file,
    dated 1970 (uv's answer has a time: ``_answer`` tells the two apart)."""
    (work / "requirements.in").write_text("".join(f"{a}\n" for a in asks))
    if constraints:
        (work / "constraints.txt").write_text("".join(f"{c}\n" for c in constraints))
    if seed is not None:
        (work / "requirements.txt").write_bytes(seed)
        os.utime(work / "requirements.txt", ns=(0, 0))


def _answer(work: Path, limit: int, seed: bytes | None) -> str:
    """The answer uv wrote in ``work``: it exists (and is not the seed left as it was), a regular file
    and no link, at most ``limit`` bytes, UTF-8; else UvFailed."""
    try:
        unwritten = seed is not None and os.lstat(work / "requirements.txt").st_mtime_ns == 0
        data = None if unwritten else files.read_inside(work, "requirements.txt", limit)
    except FileNotFoundError:
        data = None
    except OSError as exc:  # files.FileError: not a regular file, too large, unreadable
        raise UvFailed(f"uv's answer {exc}") from None
    if data is None:
        raise UvFailed("uv exited 0 but wrote no answer")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UvFailed("uv's answer is not UTF-8 text") from None


@contextlib.contextmanager
def _signals_stop_uv() -> Iterator[None]:
    """While uv runs (in the main thread): SIGTERM and SIGHUP interrupt e2b-matrix as SIGINT does
    (KeyboardInterrupt), once, so that uv is stopped and its folder removed on the way out; a
    signal the process ignores stays ignored. The handlers before are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:  # a second signal must not cut the clean-up short
            fired = True
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, interrupt)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- one package's releases -------------------------------------------------------------

_NEEDS_PYTHON = re.compile(r"depends on Python ?(\S+?),? we can conclude")


class PackageIndex:
    """What a layer asks the index about one package, each question asked of uv once per run."""

    def __init__(self, uv: Uv):
        self.uv = uv
        self._answers: dict[tuple[str, ...], str | None] = {}

    @property
    def offline(self) -> bool:
        return self.uv.offline

    def newest(self, package: str, python: str, platform: str) -> str | None:
        """The newest release of ``package`` that ``python`` on ``platform`` can run (not yanked, not a
        pre-release), or None when none can; UvFailed when uv cannot say (an unreachable index; offline
        and not in uv's cache: ``offline_miss``)."""
        key = ("newest", package, python, platform)
        if key not in self._answers:
            try:
                self._answers[key] = self._pinned(package, package, python, platform, final=True)
            except UvFailed as exc:
                if not exc.resolving or exc.offline_miss or _not_found(exc, package):
                    raise
                self._answers[key] = None  # uv found the package but no release for this Python
        return self._answers[key]

    def problem(self, package: str, version: str, python: str, platform: str) -> str:
        """Why ``package`` ``version`` cannot be installed on ``python`` (not a release in the index;
        it requires another Python), or "" when it can; UvFailed when uv cannot say."""
        key = ("problem", package, version, python, platform)
        if key not in self._answers:
            try:
                self._pinned(f"{package}=={version}", package, python, platform)
                self._answers[key] = ""
            except UvFailed as exc:
                if not exc.resolving or exc.offline_miss:
                    raise
                self._answers[key] = _why_not(exc, package, version, python)
        return self._answers[key] or ""

    def _pinned(self, ask: str, package: str, python: str, platform: str, final: bool = False) -> str:
        """The version uv pins ``package`` at when asked for ``ask`` alone (no dependencies)."""
        text = self.uv.compile(
            (ask,),
            python,
            platform,
            label=f"{ask} for Python {python}",
            limit=MAX_LATEST_BYTES,
            hashes=False,
            no_deps=True,
            final=final,
        )
        pins, _, problem = parse(text, hashed=False)
        version = pins.get(canonical_name(package))
        if problem or version is None or len(pins) != 1:
            raise UvFailed(
                f"uv's answer to {ask} is not one pin of {package}: "
                f"{problem or 'it pins ' + (', '.join(sorted(pins)) or 'nothing')}"
            )
        try:  # the version is a layer's, recorded in the lock
            names.check_layer_version(version)
        except ValueError as exc:
            raise UvFailed(f"uv's answer to {ask}: {exc}") from None
        return version


def _why_not(exc: UvFailed, package: str, version: str, python: str) -> str:
    """What uv's "cannot resolve" says of ``package==version`` on ``python``, in one line."""
    needs = _NEEDS_PYTHON.search(" ".join(exc.stderr.split()))
    if needs:
        return f"{package} {version} requires Python {needs.group(1)}, but the base's Python is {python}"
    if "no version of" in exc.reason or _not_found(exc, package):
        return f"{package} {version} is not a release in the package index"
    return f"{package} {version} cannot be installed on Python {python}: {exc.reason}"


def _not_found(exc: UvFailed, package: str) -> bool:
    """uv says the index has no such package at all (not merely no release for this Python)."""
    text = " ".join(exc.stderr.split())
    return f"{package} was not found in the" in text
