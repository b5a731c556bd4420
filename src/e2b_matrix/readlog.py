"""What a run read: the files and folder listings its no-op stamp depends on.

The code that reads an input says so here (``note_file``, ``note_glob``);
between ``start()`` and ``stop()`` the notes are kept, at any other time they
cost one comparison. stamp.py turns them into a stamp. Imports only os: the
lock reader (and so the Nexus server) loads this module too.
"""

from __future__ import annotations

import os

# While recording: path -> (data: bytes | str | None, ttl); (folder, pattern) -> names
_files: dict[str, tuple[bytes | str | None, float | None]] | None = None
_globs: dict[tuple[str, str], list[str]] | None = None
_tainted: str | None = None


def note_file(path, data: bytes | str | None, ttl: float | None = None) -> None:
    """``path`` was read and gave ``data`` (str: read as UTF-8 text; None: it was missing).

    ``ttl``: the content is trusted for that many seconds after the file's
    mtime (the index's on-disk cache); past that a stamp no longer answers.
    """
    global _tainted
    if _files is None:
        return
    key = os.path.abspath(path)
    seen = _files.get(key)
    if seen is not None and seen[0] != data:
        _tainted = f"{key} changed during the run"
    _files[key] = (data, ttl)


def note_glob(directory, pattern: str, found) -> None:
    """``directory.glob(pattern)`` listed ``found`` (paths or names)."""
    global _tainted
    if _globs is None:
        return
    key = (os.path.abspath(directory), pattern)
    names = sorted(os.path.basename(os.fspath(p)) for p in found)
    if _globs.get(key, names) != names:
        _tainted = f"{key[0]} changed during the run"
    _globs[key] = names


def taint(reason: str) -> None:
    """What this run read cannot be checked again later (e.g. the index was not cached)."""
    global _tainted
    if _files is not None:
        _tainted = reason


def start() -> None:
    global _files, _globs, _tainted
    _files, _globs, _tainted = {}, {}, None


def stop() -> tuple[dict, dict, str | None] | None:
    """(files, globs, why it cannot be replayed or None); None when nothing was recording."""
    global _files, _globs, _tainted
    notes = None if _files is None else (_files, _globs, _tainted)
    _files, _globs, _tainted = None, None, None
    return notes
