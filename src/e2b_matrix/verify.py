"""What a smoke check's run means: passed or failed, and why (each backend runs them its way)."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from e2b_matrix.model import Check


@attrs.frozen
class CheckResult:
    name: str
    layer: str
    ok: bool
    detail: str = ""
    duration_s: float = 0.0


def judge(check: Check, code: int, output: str) -> tuple[bool, str]:
    """A command check passes when it exits 0 and its output holds ``expect`` (if set)."""
    output = output.strip()
    if code != 0:
        return False, f"exit {code}: {output[-300:]}"
    if check.expect is not None and check.expect not in output:
        return False, f"expected {check.expect!r} in: {output[-300:]}"
    return True, output.splitlines()[-1][:120] if output else ""


def timed(check: Check, fn: Callable[[], tuple[bool, str]], one_line: Callable[[Exception], str]) -> CheckResult:
    """Run one check; an exception is a failed check whose detail is one line (``one_line``)."""
    start = time.monotonic()
    try:
        ok, detail = fn()
    except Exception as exc:  # a check that cannot run has failed, with the reason
        ok, detail = False, one_line(exc)
    return CheckResult(check.name, check.layer, ok, detail, round(time.monotonic() - start, 3))


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
