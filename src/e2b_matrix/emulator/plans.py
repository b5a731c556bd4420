"""How the emulator's builds behave: each template's configured behaviour, and each step's cost and key.

A build's plan is fixed when it starts: the base (``FROM image`` or ``FROM TEMPLATE
ref``), then each received step, each with E2B's cache key (the hash chain of
packages/orchestrator/pkg/template/build: phases/base/hash.go, phases/steps; see
api.py's docstring, "Timing") and the cost :meth:`Planner.set_step_cost` gives it.
Standard library only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from e2b_matrix.emulator.rules import DISK_SIZE_MB, INDEX_VERSION, PROVISION_VERSION, hash_keys
from e2b_matrix.emulator.timing import Behaviour, Build, PlannedStep, StepSpec


class Planner:
    """The behaviours configured by template name, the step-cost rules, and the plans they give."""

    def __init__(
        self,
        lock: threading.RLock,
        default_duration: float | None,
        default_log_lines: int,
        default_step_cost: float,
        upload_delay: float,
    ) -> None:
        if default_step_cost < 0 or upload_delay < 0:
            raise ValueError("default_step_cost and upload_delay must be >= 0")
        self._lock = lock
        self._default = Behaviour(None if default_duration is None else float(default_duration), int(default_log_lines))
        self._default_step_cost = float(default_step_cost)
        self.upload_delay = float(upload_delay)
        self._behaviours: dict[str, Behaviour] = {}
        self._cost_rules: list[tuple[Callable[[StepSpec], bool], float]] = []

    def configure(
        self,
        name: str,
        duration: float | None,
        log_lines: int | None,
        fail_at_step: int | str | None,
        fail_message: str | None,
    ) -> None:
        """Builds of ``name`` requested from now on behave so (omitted values: the defaults)."""
        if duration is not None and duration < 0:
            raise ValueError("duration must be >= 0")
        if log_lines is not None and log_lines < 0:
            raise ValueError("log_lines must be >= 0")
        with self._lock:
            self._behaviours[name] = Behaviour(
                duration=self._default.duration if duration is None else float(duration),
                log_lines=self._default.log_lines if log_lines is None else int(log_lines),
                fail_at_step=fail_at_step,
                fail_message=fail_message,
            )

    def behaviour(self, name: str, base: str) -> Behaviour:
        """How a build requested as ``name`` (of template ``base``) behaves."""
        with self._lock:
            return self._behaviours.get(name) or self._behaviours.get(base) or self._default

    def set_step_cost(self, match: str | Callable[[StepSpec], bool], seconds: float) -> None:
        """The steps ``match`` selects (a substring of their text, or a predicate) cost ``seconds``."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        matcher = match if callable(match) else (lambda spec, text=match: text in spec.text)
        with self._lock:
            self._cost_rules.append((matcher, float(seconds)))

    def plan(self, b: Build, start: dict[str, Any]) -> tuple[PlannedStep, ...]:
        """The steps of a step-timed build: the base, then each received step, with keys and costs."""
        steps = start.get("steps") or []
        lines = b.behaviour.log_lines
        owners = [i * (len(steps) + 1) // lines for i in range(lines)]  # the step printing each line
        base = self._base(b, start, tuple(i for i, o in enumerate(owners) if o == 0))
        plan, key, force = [base], base.key, base.force
        for number, step in enumerate(steps, 1):
            kind, args = str(step.get("type", "")), tuple(str(a) for a in step.get("args") or ())
            force = force or bool(step.get("force"))  # a forced step forces every later one
            files_hash = step.get("filesHash")
            key = hash_keys(key, kind, " ".join(args), "<nil>" if files_hash is None else str(files_hash))
            spec = StepSpec(b.base_name, str(number), kind, args, f"{kind.upper()} {' '.join(args)}")
            lines_of = tuple(i for i, o in enumerate(owners) if o == number)
            plan.append(PlannedStep(spec, key, self._cost(spec, self._default_step_cost), force, False, lines_of))
        return tuple(plan)

    def _base(self, b: Build, start: dict[str, Any], lines: tuple[int, ...]) -> PlannedStep:
        """The base step: its key hashes the image, or ``template:<build_id>`` of the parent build."""
        if b.parent_build_id is not None:
            reference = str(start["fromTemplate"])
            source, text = f"template:{b.parent_build_id}", f"FROM TEMPLATE {reference}"
        else:
            reference = str(start["fromImage"])
            source, text = reference, f"FROM {reference}"
        key = hash_keys(INDEX_VERSION, PROVISION_VERSION, DISK_SIZE_MB, source)
        spec = StepSpec(b.base_name, "base", "FROM", (reference,), text)
        return PlannedStep(
            spec, key, self._cost(spec, 0.0), bool(start.get("force")), b.parent_build_id is not None, lines
        )

    def _cost(self, spec: StepSpec, default: float) -> float:
        for matches, seconds in reversed(self._cost_rules):
            if matches(spec):
                return seconds
        return default
