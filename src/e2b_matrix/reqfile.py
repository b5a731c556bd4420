"""A requirements file's lines: the one parser of the files e2b-matrix writes and of uv's answers.

Every requirement is ``name==version``, with its ``--hash=sha256:...`` options when hashed, and
nothing else (no option, URL or marker reaches pip); comments and continuation lines as pip reads
them. pins.py judges committed files with it; index.py reads uv's answers with it. Names are
compared canonical (PEP 503, packaging's ``canonicalize_name``).
"""

from __future__ import annotations

import re

from e2b_matrix import names

REQUIREMENT = re.compile(rf"({names.PROJECT.pattern})==([A-Za-z0-9][A-Za-z0-9._+!-]*)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def canonical_name(name: str) -> str:
    from packaging.utils import canonicalize_name  # with packaging.tags: ~9 ms at the start of `list`

    return str(canonicalize_name(name))


def _logical_lines(text: str) -> tuple[list[tuple[int, list[str]]], str | None]:
    """(each requirement's first line number and its words, continuation lines joined; the value of the
    first ``# identity:`` comment, or None)."""
    identity = None
    logical: list[tuple[int, list[str]]] = []
    words: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            if identity is None and line.startswith("# identity:"):
                identity = line.split(":", 1)[1].strip()
            continue
        line = re.split(r"\s#", line, maxsplit=1)[0].rstrip()
        more = line.endswith("\\")
        if not words:
            start = n
        words += (line[:-1] if more else line).split()
        if not more:
            if words:
                logical.append((start, words))
            words = []
    if words:
        logical.append((start, words))
    return logical, identity


def parse(text: str, hashed: bool = True) -> tuple[dict[str, str], str | None, str]:
    """(canonical name -> version, the identity line, the problem or "") of a requirements file;
    ``hashed``: every requirement has its sha256 hashes."""
    logical, identity = _logical_lines(text)
    pins: dict[str, str] = {}
    for n, (head, *hashes) in logical:
        m = REQUIREMENT.fullmatch(head)
        if not m:
            return {}, identity, f"line {n}: {names.shown(head)} is not a pinned requirement (name==version)"
        bad = next((h for h in hashes if not _HASH.fullmatch(h)), None)
        if bad is not None:
            return {}, identity, f"line {n}: {names.shown(bad)} is not a sha256 hash (--hash=sha256:...)"
        name = canonical_name(m.group(1))
        if hashed and not hashes:
            return {}, identity, f"line {n}: {name} has no hash"
        if name in pins:
            return {}, identity, f"line {n}: {name} is pinned twice"
        pins[name] = m.group(2)
    return pins, identity, ""
