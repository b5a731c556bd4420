"""verify on E2B with a stand-in sandbox (E2B's sandboxes cannot be reached here)."""

from __future__ import annotations

import json
import types


from e2b_matrix.backends.e2b import E2BBackend
from e2b_matrix.cli import cli
from e2b_matrix.model import Outcome
from e2b_matrix.settings import Settings
from conftest import KEY, cli_runner
from test_build import lock_of
from test_core import specs

BUILT = Outcome("tpl", "b1")


def verify_e2b(spec, factory):
    return E2BBackend(Settings(api_key=KEY)).verify(spec, BUILT, sandbox_factory=factory)


class FakeSandbox:
    """Answers like e2b-code-interpreter's Sandbox: a stateful kernel and shell commands."""

    instances: list = []

    def __init__(self, template_id, fail=(), explode=False, **kw):
        self.template_id, self.fail, self.explode, self.killed, self.ns = template_id, fail, explode, False, {}
        self.commands = types.SimpleNamespace(run=self._run)
        FakeSandbox.instances.append(self)

    def run_code(self, code):
        if self.explode:
            raise RuntimeError("kernel died")
        value = eval(code, self.ns) if "=" not in code else exec(code, self.ns)
        return types.SimpleNamespace(error=None, text=None if value is None else str(value))

    def _run(self, command, user=None):
        code = 1 if any(f in command for f in self.fail) else 0
        out = {"nexus": "nexus, version 0.9.26\n", "python3": "Python 3.12.7\n"}.get(command.split()[0], "ok\n")
        return types.SimpleNamespace(exit_code=code, stdout=out, stderr="")

    def kill(self):
        self.killed = True


def test_all_checks_pass_and_the_sandbox_is_killed():
    spec = specs()["latest"]
    results = verify_e2b(spec, lambda t, **kw: FakeSandbox(t))
    assert [r.name for r in results][:2] == ["stateful python", "python3 --version"]
    assert all(r.ok for r in results), results
    assert FakeSandbox.instances[-1].killed and FakeSandbox.instances[-1].template_id == "tpl:b1"  # the exact build


def test_failures_are_reported_and_the_sandbox_still_killed():
    spec = specs()["latest"]
    results = verify_e2b(spec, lambda t, **kw: FakeSandbox(t, fail=("sudo",), explode=True))
    bad = {r.name: r.detail for r in results if not r.ok}
    assert bad["stateful python"] == "RuntimeError: kernel died"
    assert bad["passwordless sudo"].startswith("exit 1")
    assert FakeSandbox.instances[-1].killed


def test_stateful_check_needs_fifty():
    spec = specs()["minimal"]

    class Off(FakeSandbox):
        def run_code(self, code):
            return types.SimpleNamespace(error=None, text="49")

    results = verify_e2b(spec, lambda t, **kw: Off(t))
    assert results[0].name == "stateful python" and not results[0].ok and "expected '50'" in results[0].detail


def test_a_sandbox_e2b_refuses_fails_every_check_in_one_line():
    from e2b.exceptions import SandboxException

    def refuse(template, **kw):
        raise SandboxException("400: Template 'tpl' is not ready\nTraceback (most recent call last): ...")

    results = verify_e2b(specs()["minimal"], refuse)
    assert results and all(not r.ok for r in results)
    assert {r.detail for r in results} == {"no sandbox: SandboxException: 400: Template 'tpl' is not ready"}


def test_verify_on_e2b_prints_one_line_per_failed_check_not_a_traceback(project, emu, monkeypatch):
    import e2b_code_interpreter
    from e2b.exceptions import SandboxException

    assert cli_runner().invoke(cli, ["-C", str(project), "build", "minimal"]).exit_code == 0

    def refuse(template, **kw):
        raise SandboxException("500: sandbox could not start")

    monkeypatch.setattr(e2b_code_interpreter.Sandbox, "create", staticmethod(refuse))
    r = cli_runner().invoke(cli, ["-C", str(project), "verify", "minimal"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    failed = [line for line in r.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 3 and all("no sandbox: SandboxException: 500: sandbox could not start" in line
                                    for line in failed)
    assert "0/3 checks passed" in r.stdout


def test_build_verify_keeps_a_failing_template_out_of_the_lock(project, emu, monkeypatch):
    import e2b_code_interpreter

    def create(template, **kw):
        return FakeSandbox(template, fail=("fuse.conf",))

    monkeypatch.setattr(e2b_code_interpreter.Sandbox, "create", staticmethod(create))
    r = cli_runner().invoke(cli, ["-C", str(project), "build", "latest", "minimal", "--verify", "--json"])
    assert r.exit_code == 1
    statuses = {x["name"]: x for x in json.loads(r.stdout)}
    assert statuses["minimal"]["status"] == "built"
    assert statuses["latest"]["status"] == "failed"
    assert "smoke checks failed: user_allow_other" in statuses["latest"]["error"]
    assert [e.alias for e in lock_of(project)] == ["nexus-sandbox-minimal"]
    # verify NAME on E2B reads the lock and reports each check
    r = cli_runner().invoke(cli, ["-C", str(project), "verify", "minimal"])
    assert r.exit_code == 0, r.output
    assert "3/3 checks passed" in r.stdout
    r = cli_runner().invoke(cli, ["-C", str(project), "verify", "latest"])
    assert r.exit_code == 2 and "not built yet" in r.stderr
