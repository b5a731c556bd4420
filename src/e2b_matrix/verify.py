"""What a smoke check's run means: passed or failed, and why (each backend runs them its way).

The judgement lives here, once: a backend runs a check (a shell command, or
cells in a kernel) and hands its exit code and output to ``judge``; ``run``
times each check and gathers them into a ``VerifyReport``. A version check
(``Check.version``) also reports what it found (``VerifyReport.found``: the
template's Python, for an inventory), whether or not it matched.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable

import attrs

from e2b_matrix.model import Check

# A release as tools print it: "Python 3.13.1", "nexus, version 0.9.26", "3.14.0rc1".
_VERSION = re.compile(r"(?<![\d.])\d+(?:\.\d+)+(?:(?:a|b|rc)\d+)?")


@attrs.frozen
class CheckResult:
    name: str
    layer: str
    ok: bool
    detail: str = ""
    duration_s: float = 0.0
    fact: str = ""  # what a version check reports (the check's ``fact``: "python")
    found: str = ""  # the version it found in the output ("3.13.1"), matching or not
    output: str = attrs.field(default="", repr=False)  # an inventory check's whole output

    @property
    def reason(self) -> str:
        """The detail on one line (a command's output keeps its words, not its line breaks)."""
        return " ".join(self.detail.split())

    def line(self) -> str:
        """The check and its detail on one line: how a failed build names each failed check."""
        return f"{self.name}: {self.reason[:200]}" if self.reason else self.name

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.name,
            "layer": self.layer,
            "ok": self.ok,
            "detail": self.detail,
            "duration_s": self.duration_s,
            "found": {self.fact: self.found} if self.found else {},
        }


def _results(results: Iterable[CheckResult]) -> tuple[CheckResult, ...]:
    return tuple(results)


@attrs.frozen
class VerifyReport:
    """Every check run against one build, and the facts the version checks found."""

    results: tuple[CheckResult, ...] = attrs.field(converter=_results)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def failure(self, consequence: str = "") -> str:
        """Why the report failed, as a build's error says it: a headline (with ``consequence``), then
        each failed check and its reason on its own line::

            smoke checks failed (2 of 5); lock entry not written:
            user_allow_other: expected 'user_allow_other' in: ...
            python3 --version: the template has Python 3.12.8, the base declares 3.13
        """
        failed = self.failed
        head = f"smoke checks failed ({len(failed)} of {len(self.results)})"
        return "\n".join([f"{head}; {consequence}:" if consequence else f"{head}:", *(r.line() for r in failed)])

    @property
    def found(self) -> dict[str, str]:
        """fact -> the version found, e.g. ``{"python": "3.13.1"}`` (what an inventory records)."""
        return {r.fact: r.found for r in self.results if r.fact and r.found}

    def to_json(self) -> list[dict[str, object]]:
        """Each check's result, as ``verify --json`` prints them."""
        return [r.to_json() for r in self.results]

    @property
    def captured(self) -> dict[str, str]:
        """fact -> an inventory check's output, e.g. ``{"pip": "[...]"}``."""
        return {r.fact: r.output for r in self.results if r.fact and r.output}


def judge(check: Check, code: int, output: str) -> CheckResult:
    """A command check passes when it exits 0 and its output holds ``expect`` (if set); a version
    check when the first version in its output is a release of ``check.version`` ("3.13": 3.13.x)."""
    output = output.strip()
    if code != 0:
        return _result(check, False, f"exit {code}: {output[-300:]}")
    if check.capture:
        return attrs.evolve(
            _result(check, True, f"recorded ({len(output.splitlines())} lines)"), fact=check.fact, output=output
        )
    if check.expect is not None and check.expect not in output:
        return _result(check, False, f"expected {check.expect!r} in: {output[-300:]}")
    last = output.splitlines()[-1][:120] if output else ""
    if check.version is None:
        return _result(check, True, last)
    match = _VERSION.search(output)
    if match is None:
        return _result(check, False, f"no version in the output: {' '.join(output.split())[-200:]!r}")
    found = match.group(0)
    said = output[output.rfind("\n", 0, match.start()) + 1 :].splitlines()[0].strip()[:120]  # its line
    if not _is_release_of(found, check.version):
        return _result(
            check, False, f"the template has {said}, the {check.layer or 'layer'} declares {check.version}", found
        )
    return _result(check, True, said, found)


def _is_release_of(found: str, declared: str) -> bool:
    """3.13.1 is a release of 3.13 (and of 3.13.1); 3.130 and 3.1 are not of 3.13."""
    from packaging.version import Version  # ~2.5 ms: resolve imports this module (E2B backend), never verifies

    have, want = Version(found).release, Version(declared).release
    return have[: len(want)] == want


def _result(check: Check, ok: bool, detail: str, found: str = "") -> CheckResult:
    return CheckResult(check.name, check.layer, ok, detail, fact=check.fact if found else "", found=found)


def failed(check: Check, detail: str) -> CheckResult:
    """A check that could not pass, for ``detail`` (a kernel error, no sandbox)."""
    return _result(check, False, detail)


def timed(check: Check, fn: Callable[[], CheckResult], one_line: Callable[[Exception], str]) -> CheckResult:
    """Run one check; an exception is a failed check whose detail is one line (``one_line``)."""
    start = time.monotonic()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed, with the reason
        result = failed(check, one_line(exc))
    return attrs.evolve(result, duration_s=round(time.monotonic() - start, 3))


def run(checks: Iterable[Check], one: Callable[[Check], CheckResult]) -> VerifyReport:
    """Each check through ``one`` (a backend's way to run it), timed, in order."""
    return VerifyReport(timed(c, functools.partial(one, c), first_line) for c in checks)


def first_line(exc: Exception) -> str:
    """The exception's kind and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
