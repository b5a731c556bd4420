"""Fake uv executables, found through E2B_MATRIX_UV: the seam the product itself uses for its uv.

Each is a small Python script (this interpreter in its ``#!`` line) that e2b-matrix runs as it runs
uv: in a temporary folder, ``uv pip compile requirements.in --output-file requirements.txt ...``.
``script`` writes one; ``recording`` wraps the real uv, writing each command line to a log and
refusing to compile when told (what a test that must never compile asserts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from uv import find_uv_bin

REAL = find_uv_bin()


def script(folder: Path, body: str, name: str = "uv") -> Path:
    """An executable ``folder/name`` running ``body`` (Python, with os, sys and json imported)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    path.chmod(0o755)
    return path


def recording(folder: Path, compile_ok: bool = True) -> tuple[Path, Path]:
    """(a uv that runs the real one, the file each of its command lines is appended to as JSON);
    with ``compile_ok`` false, a compile (``--generate-hashes``) exits 99 instead."""
    log = folder / "uv-calls.jsonl"
    exe = script(
        folder,
        f"""
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if {not compile_ok!r} and "--generate-hashes" in sys.argv:
    sys.exit(99)
os.execv({REAL!r}, [{REAL!r}] + sys.argv[1:])
""",
        name="uv-recording",
    )
    return exe, log


def calls(log: Path) -> list[list[str]]:
    """The command lines a ``recording`` uv was run with, in order."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
