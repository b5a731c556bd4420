"""Run a variant's smoke checks against what was built: a Docker image or an E2B template.

Docker: each shell check in a fresh container from the image (FUSE checks get
/dev/fuse). E2B: one sandbox from the template ID (e2b-code-interpreter),
the stateful Python check and the shell checks, the sandbox always killed
afterwards, even on failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from e2b_matrix.errors import ConfigError
from e2b_matrix.model import BuildSpec, Check


@attrs.frozen(slots=False)
class CheckResult:
    name: str
    layer: str
    ok: bool
    detail: str = ""
    duration_s: float = 0.0


def _judge(check: Check, code: int, output: str) -> tuple[bool, str]:
    output = output.strip()
    if code != 0:
        return False, f"exit {code}: {output[-300:]}"
    if check.expect is not None and check.expect not in output:
        return False, f"expected {check.expect!r} in: {output[-300:]}"
    return True, output.splitlines()[-1][:120] if output else ""


def _timed(check: Check, fn: Callable[[], tuple[bool, str]]) -> CheckResult:
    start = time.monotonic()
    try:
        ok, detail = fn()
    except Exception as exc:  # a check that cannot run has failed, with the reason
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return CheckResult(check.name, check.layer, ok, detail, round(time.monotonic() - start, 3))


def verify_docker(spec: BuildSpec, image: str) -> list[CheckResult]:
    from e2b_matrix.backends import docker_engine as engine

    def one(check: Check):
        code, output = engine.run_in_container(image, check.command, user=check.user, devices=check.devices)
        return _judge(check, code, output)

    return [_timed(c, lambda c=c: one(c)) for c in spec.checks if not c.stateful and "docker" in c.backends]


def verify_e2b(spec: BuildSpec, template_id: str, api_key: str, domain: str | None = None,
               sandbox_factory=None) -> list[CheckResult]:
    if sandbox_factory is None:
        try:
            from e2b_code_interpreter import Sandbox
        except ImportError:
            raise ConfigError("verifying on E2B needs e2b-code-interpreter: pip install 'e2b-matrix[verify]'",
                              key="verify") from None
        sandbox_factory = Sandbox.create
    sandbox = sandbox_factory(template_id, api_key=api_key, domain=domain)
    try:
        results = []
        for check in spec.checks:
            if "e2b" not in check.backends:
                continue
            if check.stateful:
                def cells(check=check):
                    text = ""
                    for cell in check.cells:
                        execution = sandbox.run_code(cell)
                        if execution.error:
                            return False, f"{execution.error.name}: {execution.error.value}"
                        text = execution.text or ""
                    return _judge(check, 0, text)
                results.append(_timed(check, cells))
            else:
                def shell(check=check):
                    from e2b.sandbox.commands.command_handle import CommandExitException

                    try:
                        r = sandbox.commands.run(check.command, user=check.user)
                        return _judge(check, r.exit_code, (r.stdout or "") + (r.stderr or ""))
                    except CommandExitException as exc:
                        return _judge(check, exc.exit_code, (exc.stdout or "") + (exc.stderr or ""))
                results.append(_timed(check, shell))
        return results
    finally:
        sandbox.kill()


def check_built(engine, spec: BuildSpec, built) -> list[CheckResult]:
    """The spec's checks against what ``engine`` built (a lock entry or a build outcome)."""
    if engine.name == "docker":
        return verify_docker(spec, built.image)
    return verify_e2b(spec, built.template_id, engine.api_key, engine.domain)


def verifier(engine):
    """For ``build --verify``: (spec, outcome) -> names of failed checks."""
    return lambda spec, outcome: [r.name for r in check_built(engine, spec, outcome) if not r.ok]
