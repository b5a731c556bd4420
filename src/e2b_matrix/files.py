"""The file-system operations every module shares: read, parse, write atomically, lock.

- ``read_bytes``/``read_text``: a regular file of at most ``MAX_FILE_BYTES``
  (or a smaller ``limit``) or an error at once (a FIFO would block forever, a
  directory or device is not input), ``None`` when it does not exist.
- ``read_inside``: the same for a file below a folder (the project), opened
  one name at a time with ``O_NOFOLLOW``: neither the file nor a folder
  between it and the root may be a symbolic link.
- ``parse_toml``/``parse_json``: every TOML and JSON document the tool reads
  goes through one of them: a document or one line (ValueError), never a
  RecursionError, and never nested more than ``MAX_DEPTH`` deep. ``load_toml``
  reads and parses a file, its errors a ConfigError naming the file.
- ``Table``: a parsed TOML table read with typed access, unknown keys refused,
  errors naming the file and the key (the lock and the inventories).
- ``atomic_write``: a temp file in the same folder, fsync, ``os.replace``,
  fsync of the folder: a reader sees the old file or the new one.
- ``FileLock``: an exclusive ``flock`` on a sidecar file, released when the
  process dies, so a crash never leaves it held.

Nothing the tool writes follows a symbolic link: files it opens itself are
opened with ``O_NOFOLLOW`` (or ``O_EXCL``), and ``refuse_link`` is the one
check for a path before it is replaced or handed to a library that opens it
(concurrent-log-handler); ``check_writable_dir`` refuses a linked folder
inside the project.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import errno
import fcntl
import json
import os
import stat
import time
import tomllib
from collections.abc import Callable, Set
from pathlib import Path
from typing import Any, ClassVar, Final, TypeAlias, TypeVar, overload

from e2b_matrix import names
from e2b_matrix.errors import ConfigError

STALE_TEMP_SECONDS = 1.0  # a temp file this old, found under the lock, was left by a killed writer
MAX_FILE_BYTES = 64 * 1024 * 1024  # the largest file (or index answer) the tool reads
MAX_DEPTH = 32  # tables and arrays nested deeper than this in a TOML or JSON document are refused
LINKED = "is a symbolic link (e2b-matrix writes nothing through one)"
NOT_THROUGH = "(e2b-matrix reads no project file through one)"

StrPath: TypeAlias = "str | os.PathLike[str]"  # a path as the tool takes one
_T = TypeVar("_T")
_D = TypeVar("_D")


class FileError(OSError):
    """A path that cannot be used: its message is one line without the path."""


class TooDeep(ValueError):
    """A document nested more than MAX_DEPTH deep (or too deep for the parser)."""

    def __init__(self) -> None:
        super().__init__(f"nested more than {MAX_DEPTH} deep")


def too_large(size: int, limit: int = MAX_FILE_BYTES) -> FileError:
    most = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"
    return FileError(f"is larger than {most}, the most e2b-matrix reads here ({size} bytes)")


def read_bytes(path: StrPath, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """The file's bytes, or None when it does not exist; FileError when it is not a readable regular file
    of at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}") from None
    return _read_fd(fd, limit)


def _read_fd(fd: int, limit: int) -> bytes:
    """What the open file ``fd`` holds (closed after): a regular file of at most ``limit`` bytes, else FileError."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f"is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise too_large(st.st_size, limit)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # a file growing while read is bounded too
        if len(data) > limit:
            raise too_large(len(data), limit)
        return data
    except FileError:
        raise
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


_BOMS = {
    b"\xef\xbb\xbf": "a UTF-8 byte-order mark (an invisible U+FEFF)",
    b"\xff\xfe": "a UTF-16 byte-order mark (it is UTF-16, not UTF-8)",
    b"\xfe\xff": "a UTF-16 byte-order mark (it is UTF-16, not UTF-8)",
}


def read_inside(root: StrPath, relative: str, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """The bytes of ``relative`` (a/b/c.txt) below the folder ``root``, or None when it does not exist.

    Each name below ``root`` is opened with ``O_NOFOLLOW`` from the folder before it, so neither the
    file nor a folder on the way may be a symbolic link (FileError: the file, or the folder, "is a
    symbolic link"); the file is then read as ``read_bytes`` reads (regular, at most ``limit``
    bytes). ``root`` itself may be a link (a project reached through one).
    """
    parts = relative.split("/")
    if not relative or any(p in ("", ".", "..") for p in parts):
        raise FileError(f"is not a plain relative path ({names.shown(relative)})")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}") from None
    folder_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        try:
            nxt = os.open(
                name, (os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC) if last else folder_flags, dir_fd=fd
            )
        except FileNotFoundError:
            os.close(fd)
            return None
        except OSError as exc:
            linked = exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(name, fd))
            os.close(fd)
            if linked:
                raise FileError(
                    f"is a symbolic link {NOT_THROUGH}"
                    if last
                    else f"is in a linked folder: {'/'.join(parts[: i + 1])} is a symbolic link {NOT_THROUGH}"
                ) from None
            raise FileError(f"cannot read: {exc.strerror or exc}") from None
        os.close(fd)
        fd = nxt
    return _read_fd(fd, limit)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def read_text(path: StrPath) -> str | None:
    """The file's UTF-8 text, or None when it does not exist; FileError otherwise (a byte-order mark
    is named: TOML and JSON refuse one, and an editor that writes it shows nothing)."""
    data = read_bytes(path)
    if data is None:
        return None
    for bom, what in _BOMS.items():
        if data.startswith(bom):
            raise FileError(f"starts with {what}: save it as UTF-8 without a byte-order mark")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileError(f"not UTF-8 text (line {line})") from None


def parse_toml(text: str) -> dict[str, Any]:
    """tomllib's document; ValueError with one line ("invalid TOML: ...", or TooDeep) when it is not one."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML: {exc}") from None
    except RecursionError:
        raise TooDeep() from None
    return _bounded(doc)


def parse_json(text: str | bytes) -> Any:
    """json's value (any JSON value: the caller checks its shape); ValueError with one line ("invalid
    JSON: ...", or TooDeep) when it is not one."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise TooDeep() from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ValueError(f"invalid JSON: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return _bounded(doc)


def load_toml(path: StrPath, shown: StrPath | None = None) -> dict[str, Any] | None:
    """The TOML document at ``path`` (read_text, parse_toml), or None when there is no such file;
    ConfigError naming ``shown`` (default: ``path``) when it cannot be read or is not TOML."""
    try:
        text = read_text(path)
        return None if text is None else parse_toml(text)
    except (FileError, ValueError) as exc:
        raise ConfigError(str(exc), path=path if shown is None else shown) from None


def _bounded(doc: _T) -> _T:
    """``doc`` when no table or array in it is nested more than MAX_DEPTH deep (the top counts one); else TooDeep.

    Iterative: a document that parsed must not overflow the stack of whoever walks it next.
    """
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise TooDeep()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return doc


class _Required(enum.Enum):
    REQUIRED = "required"


REQUIRED: Final = _Required.REQUIRED  # a default meaning: the key must be there


class Table:
    """A TOML table being read (from parse_toml): typed access whose errors (``Error``) name the file and
    the key. The one table reader of the project files, the lock and the inventories."""

    Error: ClassVar[type[ConfigError]] = ConfigError

    def __init__(self, doc: object, path: StrPath, where: str = ""):
        if type(doc) is not dict:
            raise self.Error(f"expected a table, got {names.type_name(doc)}", path=path, key=where or None)
        self.doc: dict[str, Any] = doc
        self.path, self.where = path, where

    def key(self, key: str) -> str:
        """``key`` as an error names it: below this table, quoted when it is no bare TOML key."""
        return f"{self.where}.{names.show_key(key)}" if self.where else names.show_key(key)

    def error(self, message: str, key: str) -> ConfigError:
        """An error about ``key`` (a key of this table, as written)."""
        return self.Error(message, path=self.path, key=self.key(key))

    def error_at(self, message: str, path: str) -> ConfigError:
        """An error about ``path`` below this table, already shown (``layers.nexus``: a FieldError's field)."""
        return self.Error(message, path=self.path, key=f"{self.where}.{path}" if self.where else path)

    def only(self, allowed: Set[str]) -> None:
        """Every key is one the model knows: an unknown one is an error naming it (with a near match)."""
        for k in sorted(self.doc.keys() - allowed):
            raise self.error(f"unknown key{names.did_you_mean(k, allowed)}", k)

    def require(self, *keys: str) -> None:
        """Each of ``keys`` is there ("missing key" naming the first that is not)."""
        for key in keys:
            if key not in self.doc:
                raise self.error("missing key", key)

    @overload
    def get(self, key: str, kind: type[_T]) -> _T: ...

    @overload
    def get(self, key: str, kind: type[_T], default: _D) -> _T | _D: ...

    def get(self, key: str, kind: type[_T], default: object = REQUIRED) -> object:
        """The value of ``key``, of type ``kind`` (a date-time: with a timezone); ``default`` when absent."""
        if key not in self.doc:
            if default is REQUIRED:
                raise self.error("missing table" if kind is dict else "missing key", key)
            return default
        value = self.doc[key]
        if type(value) is not kind or (isinstance(value, dt.datetime) and value.tzinfo is None):
            want = {
                str: "a string",
                dict: "a table",
                list: "an array of tables",
                int: "an integer",
                dt.datetime: "a date-time with a timezone (e.g. 2026-11-26T17:00:00Z)",
            }[kind]
            raise self.error(f"expected {want}, got {names.type_name(value)}", key)
        return value

    def table(self, key: str, required: bool = False) -> Table:
        """The sub-table ``key`` (empty when absent and not ``required``)."""
        doc = self.get(key, dict) if required else self.get(key, dict, {})
        return type(self)(doc, self.path, self.key(key))

    def tables(self, key: str) -> list[Table]:
        """The array of tables ``[[key]]`` (empty when absent)."""
        items = self.doc.get(key, [])
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise self.error(f"expected an array of tables ([[{key}]])", key)
        return [type(self)(item, self.path, f"{self.key(key)}[{i}]") for i, item in enumerate(items)]

    def strings(self, key: str) -> dict[str, str]:
        """The sub-table ``key`` (empty when absent), every value a string."""
        table = self.table(key)
        for k in table.doc:
            table.get(k, str)
        return table.doc

    @overload
    def value(self, key: str, check: Callable[[Any], _T]) -> _T: ...

    @overload
    def value(self, key: str, check: Callable[[Any], _T], default: _D) -> _T | _D: ...

    def value(self, key: str, check: Callable[[Any], _T], default: object = REQUIRED) -> object:
        """``check`` (a names.check_*) of the value of ``key`` (whatever the file holds: the check
        decides): its ValueError names the key."""
        if key not in self.doc:
            if default is REQUIRED:
                raise self.error("missing key", key)
            return default
        return self.value_of(self.doc[key], check, key)

    def string_list(
        self, key: str, check: Callable[[str], str] | None = None, default: tuple[str, ...] | None = None
    ) -> tuple[str, ...]:
        """The list of strings ``key``, each through ``check`` when given; ``default`` when absent (None:
        the key must be there)."""
        if key not in self.doc and default is None:
            raise self.error("missing key", key)
        value = self.doc.get(key, default)
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise self.error(f"expected a list of strings, got {names.type_name(value)}", key)
        return tuple(self.value_of(x, check, key) for x in value) if check else tuple(value)

    def value_of(self, raw: _D, check: Callable[[_D], _T], key: str) -> _T:
        """``check`` of a value found under ``key`` (a substituted one): its ValueError names the key."""
        try:
            return check(raw)
        except ValueError as exc:
            raise self.error(str(exc), key) from None


def refuse_link(path: StrPath, in_place: bool = False) -> None:
    """FileError when ``path`` is a symbolic link (a dangling one too), or something other than a
    regular file (a folder, a FIFO); ``in_place`` (a file written where it is, not replaced): also
    when it has another hard link. Nothing at ``path`` is fine: it will be created.

    The check before a path is replaced (atomic_write) or handed to a library
    that opens it itself; files the tool opens itself also use O_NOFOLLOW.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileError(f"cannot use it: {exc.strerror or exc}") from None
    _refuse_linked(st, in_place)


def _kind(mode: int) -> str:
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"


def _refuse_linked(st: os.stat_result, in_place: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise FileError(LINKED)
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"is {_kind(st.st_mode)}, not a regular file")
    if in_place and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:  # the same file under another name
        raise FileError("has another hard link (e2b-matrix writes nothing through one)")


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def atomic_write(path: StrPath, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a reader never sees a torn file."""
    import tempfile  # with shutil, bz2 and lzma: ~3 ms at the start of `resolve`, which writes nothing

    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    refuse_link(path)  # os.replace would put a plain file where the link was, and the file it meant never changes
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(path).st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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


def remove_stale_temps(path: StrPath) -> int:
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

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class FileLock:
    """An exclusive flock on ``path`` (a sidecar, never the data file), across threads and processes.

    ``with FileLock(p):`` blocks until it is ours. ``acquire(wait=False)``
    raises Busy at once; ``acquire(poll=..., cancelled=...)`` waits in short
    steps so a caller can give up (``cancelled()`` true: returns False).
    The holder's pid is written into the file for the message of the next one.
    """

    def __init__(self, path: StrPath) -> None:
        self.path = os.fspath(path)
        self._fd = -1

    def acquire(
        self,
        wait: bool = True,
        *,
        on_busy: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        poll: float = 0.2,
    ) -> bool:
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
        try:  # the lock file is truncated and written: never through a link
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileError(f"cannot use the lock file {self.path}: {LINKED}") from None
            raise FileError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileError("not a regular file")
            _refuse_linked(st, in_place=True)
        except FileError as exc:
            os.close(fd)
            raise FileError(f"cannot use the lock file {self.path}: {exc}") from None
        return fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_writable_dir(path: StrPath, inside: StrPath | None = None, *, create: bool = False) -> tuple[str, str] | None:
    """(the path in the way, why) when files cannot be created in folder ``path``; else None.

    Every folder of ``path`` below ``inside`` (the project: the tool's own
    folders in it) must be a real folder, not a symbolic link: what is written
    there must not land elsewhere. The project folder itself may be a link.

    Without ``create`` nothing is left on disk: a folder that does not exist yet
    is judged by its nearest existing parent (a probe file is made there and
    removed), so a command can check everything it will write before it writes
    anything, and one that is refused leaves the project as it was. ``create``
    makes the folder (what a writer calls at the moment it writes).
    """
    path = os.fspath(path)
    linked = _linked_below(path, inside) if inside is not None else None
    if linked is not None:
        return linked, LINKED
    existing = _nearest_existing(path)  # a file where a folder should be, at any depth
    if existing is not None and not os.path.isdir(existing):
        return existing, "exists and is not a folder"
    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            return path, f"cannot create it: {exc.strerror or exc}"
        existing = path
    if existing is None:
        return path, "no folder above it exists"
    refused = _probe(existing)
    if refused is not None:
        return path, f"cannot {'write in it' if existing == path else 'create it'}: {refused.strerror or refused}"
    return None


def _linked_below(path: str, inside: StrPath) -> str | None:
    """The first folder of ``path`` (itself included) below ``inside`` that is a symbolic link, shown
    from ``inside``; None when there is none."""
    top = Path(os.path.abspath(inside))
    mine = Path(os.path.abspath(path))
    for p in [mine, *mine.parents]:
        if p == top or top not in p.parents:
            return None
        if os.path.islink(p):
            return str(Path(inside) / p.relative_to(top))
    return None


def _nearest_existing(path: str) -> str | None:
    """``path`` or the nearest of its parents that exists; None when none does."""
    return next((p for p in [path, *map(str, Path(path).parents)] if os.path.exists(p)), None)


def _probe(folder: str) -> OSError | None:
    """Why no file can be created in ``folder``, or None when one can: a real try (permissions, a
    read-only mount, a full disk; root ignores modes), the probe file removed at once."""
    import tempfile  # with shutil, bz2 and lzma: ~3 ms at the start of `resolve`, which writes nothing

    try:
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)  # O_EXCL: a new file, no link
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc
    return None


def ensure_dir(path: StrPath, inside: StrPath | None = None) -> None:
    """Make folder ``path`` (check_writable_dir with ``create``); FileError saying why it cannot be."""
    blocked = check_writable_dir(path, inside, create=True)
    if blocked:
        raise FileError(f"{blocked[0]}: {blocked[1]}")
