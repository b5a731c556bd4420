"""The no-op stamp: a build that found every variant fresh, remembered.

A `build` or `build-all` where everything is fresh makes no API call; what it
costs is starting up: attrs, the model, resolving every variant. Like make,
which answers "nothing to be done" from timestamps, a run that built nothing
leaves a stamp in ``.e2b-matrix/noop/``: the inputs it read and what it
printed. The next run with the same command, options, environment and code
checks those inputs (a few reads and hashes, none of the model) and, when
every one is unchanged, prints the same output and exits 0.

The inputs are recorded by the code that reads them, not listed here: each
file read (readlog.py: a variant or layer file, the lock, the package
index or its cache, a CA certificate) with a digest of its bytes, each folder
listing, and for the index's on-disk cache how long it is
trusted (its TTL: past it the real path would ask the index again, so the
stamp no longer answers). A changed byte, a new variant file, a rewritten
lock, an edited layer module, other options: the real path runs, and writes
a new stamp when it is again a no-op.

Only runs that can be replayed exactly are stamped: the e2b backend with an
API key (Docker asks its daemon whether each image still exists), nothing
logged to the console, every variant fresh, exit 0. Whether stdout and stderr
are terminals is part of the key (a fresh run starts no live table, but
plain lines differ). ``E2B_MATRIX_NO_STAMP=1`` turns stamps off. A stamp never
holds the API key: the environment it keeps leaves out every variable that
looks like a secret, and a stamp whose text contains the key is not written.

Light on purpose: besides what the CLI has loaded already (json, logging,
pathlib, logs.py), only a BLAKE2 hash (not hashlib, whose OpenSSL import
alone costs a few ms) and credentials.py.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from e2b_matrix import __version__, readlog
from e2b_matrix.credentials import api_key
from e2b_matrix.logs import env_flag

try:
    from _blake2 import blake2b  # what hashlib would give, without loading OpenSSL
except ImportError:  # pragma: no cover - CPython builds without _blake2
    from hashlib import blake2b

SCHEMA = 1
NO_STAMP_ENV = "E2B_MATRIX_NO_STAMP"
FOLDER = Path(".e2b-matrix") / "noop"
KEEP = 8  # stamps kept per project (one per distinct command and options)
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
_ENV_NAMES = ("HOME", "XDG_CACHE_HOME", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONIOENCODING")


def _digest(data: bytes) -> str:
    return blake2b(data, digest_size=20).hexdigest()


# -- the key ------------------------------------------------------------------

def enabled(backend: str, force: bool, environ=None) -> bool:
    """Can this run be answered from, or leave, a stamp?"""
    return backend == "e2b" and not force and not env_flag(NO_STAMP_ENV, environ)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def environment(environ=None) -> dict[str, str]:
    """The environment variables a run depends on, without any that looks like a secret."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in sorted(environ.items())
            if (k.startswith("E2B") or k in _ENV_NAMES) and not any(w in k.upper() for w in _SECRET_WORDS)}


def code_digest(package_dir: str | None = None) -> str:
    """A digest of every module of this package (an edited layer changes what a run resolves)."""
    root = package_dir or os.path.dirname(os.path.abspath(__file__))
    h = blake2b(digest_size=20)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    data = f.read()
                h.update(f"{os.path.relpath(path, root)}\0{len(data)}\0".encode())
                h.update(data)
    return h.hexdigest()


def make_key(command: str, params: dict, root, verbose: int, quiet: bool, environ=None) -> dict | None:
    """Everything besides the recorded files that decides what a no-op run prints
    (None when it cannot be known, e.g. the working directory was removed)."""
    try:
        return _key(command, params, root, verbose, quiet, environ)
    except OSError:
        return None


def _key(command, params, root, verbose, quiet, environ) -> dict:
    return {
        "command": command,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(params.items())},
        "root": os.path.abspath(root),
        "cwd": os.getcwd(),
        "verbose": verbose,
        "quiet": quiet,
        "terminal": [_isatty(sys.stdout), _isatty(sys.stderr)],  # a live table or plain lines
        "env": environment(environ),
        "python": [sys.executable, sys.version],
        "version": __version__,
        "code": code_digest(),
    }


def _path(root, key: dict) -> Path:
    name = _digest(json.dumps(key, sort_keys=True).encode())[:32]
    return Path(root) / FOLDER / f"{name}.json"


# -- replay -------------------------------------------------------------------

def replay(root, key: dict, out=None, err=None) -> int | None:
    """Answer from a stamp: print what the recorded no-op printed and return its
    exit code; None when there is no stamp for ``key`` or any input changed."""
    try:
        with open(_path(root, key), "rb") as f:
            stamp = json.loads(f.read())
        if stamp.get("schema") != SCHEMA or stamp.get("key") != key:
            return None
        now = time.time()
        for path, mode, digest, ttl in stamp["files"]:
            if not _unchanged(path, mode, digest, ttl, now):
                return None
        for directory, pattern, names in stamp["globs"]:
            if sorted(p.name for p in Path(directory).glob(pattern)) != names:
                return None
        streams = {1: out or sys.stdout, 2: err or sys.stderr}
        output = [(streams[fd], str(text)) for fd, text in stamp["output"]]
        code = int(stamp["exit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no stamp, or one this version cannot read: the real path decides
    for stream, text in output:  # in the order the recorded run wrote them
        stream.write(text)
        stream.flush()
    return code


def _unchanged(path: str, mode: str, digest: str | None, ttl: float | None, now: float) -> bool:
    try:
        if mode == "text":
            with open(path, encoding="utf-8") as f:
                data = f.read().encode("utf-8")
        else:
            with open(path, "rb") as f:
                data = f.read()
        if ttl is not None and not now - os.stat(path).st_mtime < ttl:
            return False  # the real path would ask the index again
    except FileNotFoundError:
        return digest is None
    except (OSError, UnicodeDecodeError):
        return False
    return digest is not None and _digest(data) == digest


# -- writing ------------------------------------------------------------------

def start() -> None:
    """Record what this run reads from now on (see readlog.py)."""
    readlog.start()


def finish(root, key: dict | None, output: Capture | None, code: int, secrets=()) -> Path | None:
    """Stop recording; write the stamp when ``key`` is given and the run can be replayed."""
    notes = readlog.stop()
    if key is None or output is None or notes is None or notes[2] is not None:
        return None
    files, globs, _ = notes
    text = json.dumps({
        "schema": SCHEMA,
        "key": key,
        "files": [[path, *_entry(data), ttl] for path, (data, ttl) in sorted(files.items())],
        "globs": [[d, pat, names] for (d, pat), names in sorted(globs.items())],
        "output": output.parts,
        "exit": code,
    }, indent=1, sort_keys=True)
    if any(s and s in text for s in secrets):
        return None  # never on disk
    path = _path(root, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        _prune(path.parent)
    except OSError:
        return None  # a stamp only saves time; a run never fails for it
    return path


def _entry(data: bytes | str | None) -> tuple[str, str | None]:
    """(how the file was read, a digest of what it held, None when it was missing)."""
    if isinstance(data, str):
        return "text", _digest(data.encode("utf-8"))
    return "bytes", None if data is None else _digest(data)


def _prune(folder: Path) -> None:
    """Keep the KEEP newest stamps; drop temp files a killed writer left (older than a minute)."""
    stamps = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in stamps[KEEP:]:
        old.unlink(missing_ok=True)
    for tmp in folder.glob(".*.tmp"):
        if time.time() - tmp.stat().st_mtime > 60:
            tmp.unlink(missing_ok=True)


class Recording:
    """One build command under the stamp: answered from it, or run while what it
    reads and prints is recorded, and stamped when it turns out a no-op.

    ``recording(...)`` gives one that does nothing when stamps do not apply::

        rec = recording(...)
        code = rec.replay()
        if code is None:
            with rec:
                code, results = run(rec.out, rec.err)
                rec.noop = code == 0 and every result is fresh
    """

    def __init__(self, root, key: dict | None, secret: str = ""):
        self.root, self.key, self.secret = root, key, secret
        self.out, self.err = sys.stdout, sys.stderr
        self.noop = False
        self._capture: Capture | None = None
        self._logged: _Logged | None = None

    def replay(self) -> int | None:
        return None if self.key is None else replay(self.root, self.key)

    def __enter__(self) -> Recording:
        if self.key is not None:
            self._capture = Capture(self.out, self.err)
            self.out, self.err = self._capture.out, self._capture.err
            self._logged = _Logged()
            logging.getLogger().addHandler(self._logged)  # sees what the console handler prints
            start()
        return self

    def __exit__(self, *exc) -> bool:
        if self.key is not None:
            logging.getLogger().removeHandler(self._logged)
            keep = self.noop and exc[0] is None and not self._logged.seen
            finish(self.root, self.key if keep else None, self._capture, 0, [self.secret])  # a no-op exits 0
        return False


class _Logged(logging.Handler):
    """Notes that a record reached the console: such a run is not replayed."""

    seen = False

    def emit(self, record) -> None:
        self.seen = True


def recording(backend: str, force: bool, command: str, params: dict, root, verbose: int,
              quiet: bool) -> Recording:
    """A Recording for this build command; one that does nothing when stamps do not
    apply or no API key is set (then the real path says how to log in)."""
    secret = api_key() if enabled(backend, force) else None
    key = make_key(command, params, root, verbose, quiet) if secret else None
    return Recording(root, key, secret or "")


class Capture:
    """stdout and stderr written through, and what went to which, in order (what a stamp replays)."""

    def __init__(self, out, err):
        self.parts: list[list] = []  # [[1 or 2, text], ...], a stream's consecutive writes joined
        self.out, self.err = _Tee(out, 1, self.parts), _Tee(err, 2, self.parts)


class _Tee:
    def __init__(self, stream, fd: int, parts: list[list]):
        self.stream, self.fd, self.parts = stream, fd, parts

    def write(self, text: str) -> int:
        if self.parts and self.parts[-1][0] == self.fd:
            self.parts[-1][1] += text
        else:
            self.parts.append([self.fd, text])
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return _isatty(self.stream)
