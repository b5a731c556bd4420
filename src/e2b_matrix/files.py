"""The file-system operations every module shares: read, write atomically, lock.

- ``read_bytes``/``read_text``: a regular file or an error at once (a FIFO
  would block forever, a directory or device is not input), ``None`` when
  it does not exist; ``parse_toml`` turns its text into a document or one line.
- ``atomic_write``: a temp file in the same folder, fsync, ``os.replace``,
  fsync of the folder: a reader sees the old file or the new one.
- ``FileLock``: an exclusive ``flock`` on a sidecar file, released when the
  process dies, so a crash never leaves it held.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

STALE_TEMP_SECONDS = 1.0  # a temp file this old, found under the lock, was left by a killed writer


class FileError(OSError):
    """A path that cannot be used: its message is one line without the path."""


def read_bytes(path: str | os.PathLike) -> bytes | None:
    """The file's bytes, or None when it does not exist; FileError when it is not a readable regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
            raise FileError(f"is {kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except FileError:
        raise
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike) -> str | None:
    """The file's UTF-8 text, or None when it does not exist; FileError otherwise."""
    data = read_bytes(path)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileError(f"not UTF-8 text (line {line})") from None


def parse_toml(text: str) -> dict:
    """tomllib's document; ValueError with one line (an "invalid TOML: ..." message) when it is not one."""
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ValueError("invalid TOML: nested too deeply") from None


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a reader never sees a torn file."""
    import tempfile  # writers only

    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse it; the rename is atomic all the same
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: str | os.PathLike) -> int:
    """Remove temp files that a killed writer of ``path`` left (call it holding the path's lock)."""
    path = os.fspath(path)
    folder, prefix = os.path.dirname(path) or ".", _temp_prefix(path)
    cutoff = time.time() - STALE_TEMP_SECONDS
    removed = 0
    try:
        with os.scandir(folder) as it:
            for de in it:
                if de.name.startswith(prefix) and de.name.endswith(".tmp"):
                    try:
                        if de.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(de.path)
                            removed += 1
                    except FileNotFoundError:
                        pass
    except OSError:
        pass
    return removed


class Busy(Exception):
    """The lock is held by another process (non-blocking acquire); ``holder`` says who."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


class FileLock:
    """An exclusive flock on ``path`` (a sidecar, never the data file), across threads and processes.

    ``with FileLock(p):`` blocks until it is ours. ``acquire(wait=False)``
    raises Busy at once; ``acquire(poll=..., cancelled=...)`` waits in short
    steps so a caller can give up (``cancelled()`` true: returns False).
    The holder's pid is written into the file for the message of the next one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd = -1

    def acquire(self, wait: bool = True, *, on_busy: Callable[[str], None] | None = None,
                cancelled: Callable[[], bool] | None = None, poll: float = 0.2) -> bool:
        fd = self._open()
        try:
            if wait and on_busy is None and cancelled is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                told = False
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                        if not wait:
                            raise Busy(holder) from None
                        if on_busy is not None and not told:
                            on_busy(holder)
                            told = True
                        if cancelled is not None and cancelled():
                            os.close(fd)
                            return False
                        time.sleep(poll)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._fd = fd
        return True

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise FileError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileError(f"cannot use the lock file {self.path}: not a regular file")
        return fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_writable_dir(path: str | os.PathLike) -> tuple[str, str] | None:
    """(the path in the way, why) when files cannot be created in folder ``path`` (made if missing); else None."""
    path = os.fspath(path)
    for p in [path, *map(str, Path(path).parents)]:  # a file where a folder should be, at any depth
        if os.path.exists(p):
            if not os.path.isdir(p):
                return p, "exists and is not a folder"
            break
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return path, f"cannot create it: {exc.strerror or exc}"
    probe = os.path.join(path, f".probe.{os.getpid()}.{threading.get_ident()}.tmp")
    try:  # a real try: permissions, a read-only mount, a full disk (root ignores modes)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        return path, f"cannot write in it: {exc.strerror or exc}"
    return None
