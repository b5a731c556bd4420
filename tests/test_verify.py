"""verify: the judgement of a check; on E2B with a stand-in sandbox (E2B's sandboxes cannot be reached
here), on Docker with a stand-in engine."""

from __future__ import annotations

import json
import re
import types
from typing import Any, ClassVar

import pytest

from conftest import KEY, ROOT, cli_runner
from e2b_matrix import inventory
from e2b_matrix.backends.docker import DockerBackend
from e2b_matrix.backends.e2b import E2BBackend
from e2b_matrix.cli import cli
from e2b_matrix.config import apply_overrides, load_project
from e2b_matrix.model import Check, Outcome
from e2b_matrix.pins import Committed
from e2b_matrix.resolve import build_spec
from e2b_matrix.settings import Settings
from e2b_matrix.verify import judge
from test_build import lock_of
from test_core import index_of, specs

BUILT = Outcome("tpl", "b1")


@pytest.fixture
def verify_e2b(monkeypatch):
    """verify on E2B, ``factory`` standing in for e2b-code-interpreter's ``Sandbox.create``."""
    import e2b_code_interpreter

    def verify(spec, factory):
        monkeypatch.setattr(e2b_code_interpreter.Sandbox, "create", staticmethod(factory))
        return E2BBackend(Settings(api_key=KEY)).verify(spec, BUILT)

    return verify


def judged(output, code=0, version="3.13"):
    return judge(
        Check("python3 --version", command="python3 --version", version=version, fact="python", layer="base"),
        code,
        output,
    )


class FakeSandbox:
    """Answers like e2b-code-interpreter's Sandbox: a stateful kernel and shell commands."""

    instances: ClassVar[list[Any]] = []

    def __init__(
        self, template_id, fail=(), explode=False, python="3.13.2", pip=None, apt=None, disk_kib=812_345, **kw
    ):
        self.template_id, self.fail, self.explode, self.killed, self.ns = template_id, fail, explode, False, {}
        self.python = python
        self.disk_kib = disk_kib
        self.pip = {"nexus-ai-fs": "0.9.26", "Jupyter_Server": "2.14.2"} if pip is None else pip
        self.apt = {"bash": "5.2.15-2+b7", "fuse": "2.9.9-6+b1"} if apt is None else apt
        self.commands = types.SimpleNamespace(run=self._run)
        FakeSandbox.instances.append(self)

    def run_code(self, code):
        if self.explode:
            raise RuntimeError("kernel died")
        value = eval(code, self.ns) if "=" not in code else exec(code, self.ns)
        return types.SimpleNamespace(error=None, text=None if value is None else str(value))

    def _run(self, command, user=None):
        code = 1 if any(f in command for f in self.fail) else 0
        if command.startswith("python3 -m pip list"):
            out = json.dumps([{"name": n, "version": v} for n, v in self.pip.items()])
        elif command.startswith("dpkg-query"):
            out = "".join(f"{n}\t{v}\n" for n, v in self.apt.items())
        elif command == inventory.DISK_USED:
            out = f"/dev/root 10255636 {self.disk_kib} 9443291 8% /\n"
        elif "importlib.metadata" in command:  # the version pip installed (layers/nexus.py INSTALLED)
            name = re.search(r"version\('([^']+)'\)", command).group(1)
            code, out = (
                (code, f"{name} {self.pip[name]}\n") if name in self.pip else (1, f"No package metadata for {name}\n")
            )
        else:
            out = {"nexus": "nexus, version 0.9.26\n", "python3": f"Python {self.python}\n"}.get(
                command.split()[0], "ok\n"
            )
        return types.SimpleNamespace(exit_code=code, stdout=out, stderr="")

    def kill(self):
        self.killed = True


def test_all_checks_pass_and_the_sandbox_is_killed(verify_e2b):
    spec = specs()["latest"]
    report = verify_e2b(spec, lambda t, **kw: FakeSandbox(t))
    assert [r.name for r in report.results][:2] == ["stateful python", "python3 --version"]
    assert report.ok and not report.failed, report
    assert report.found == {"python": "3.13.2"}  # what the template has, for an inventory
    assert FakeSandbox.instances[-1].killed and FakeSandbox.instances[-1].template_id == "tpl:b1"  # the exact build


def test_failures_are_reported_and_the_sandbox_still_killed(verify_e2b):
    spec = specs()["latest"]
    report = verify_e2b(spec, lambda t, **kw: FakeSandbox(t, fail=("sudo",), explode=True))
    bad = {r.name: r.detail for r in report.failed}
    assert bad["stateful python"] == "RuntimeError: kernel died"
    assert bad["passwordless sudo"].startswith("exit 1")
    assert FakeSandbox.instances[-1].killed


def test_stateful_check_needs_fifty(verify_e2b):
    spec = specs()["minimal"]

    class Off(FakeSandbox):
        def run_code(self, code):
            return types.SimpleNamespace(error=None, text="49")

    results = verify_e2b(spec, lambda t, **kw: Off(t)).results
    assert results[0].name == "stateful python" and not results[0].ok and "expected '50'" in results[0].detail


def test_a_sandbox_e2b_refuses_fails_every_check_in_one_line(verify_e2b):
    from e2b.exceptions import SandboxException

    def refuse(template, **kw):
        raise SandboxException("400: Template 'tpl' is not ready\nTraceback (most recent call last): ...")

    results = verify_e2b(specs()["minimal"], refuse).results
    assert results and all(not r.ok for r in results)
    assert {r.detail for r in results} == {"no sandbox: 400: Template 'tpl' is not ready"}


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
    assert len(failed) == 7 and all("no sandbox: 500: sandbox could not start" in line for line in failed)
    assert "0/7 checks passed" in r.stdout


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
    assert statuses["latest"]["error"].startswith(
        "smoke checks failed (1 of 11); lock entry not written:\nuser_allow_other: "
    )
    assert [e.alias for e in lock_of(project)] == ["nexus-sandbox-minimal"]
    # verify NAME on E2B reads the lock and reports each check
    r = cli_runner().invoke(cli, ["-C", str(project), "verify", "minimal"])
    assert r.exit_code == 0, r.output
    assert "7/7 checks passed" in r.stdout
    r = cli_runner().invoke(cli, ["-C", str(project), "verify", "latest"])
    assert r.exit_code == 2 and "not built yet" in r.stderr


# -- the base's Python: what the template has against what the base declares -----------


@pytest.mark.parametrize(
    "output,found",
    [("Python 3.13.2\n", "3.13.2"), ("Python 3.13.0rc1", "3.13.0rc1"), ("warning: x\nPython 3.13.11\n", "3.13.11")],
)
def test_a_release_of_the_declared_python_passes_and_is_found(output, found):
    r = judged(output)
    assert (r.ok, r.found, r.fact) == (True, found, "python")
    assert r.detail == f"Python {found}"


@pytest.mark.parametrize(
    "output,found",
    [
        ("Python 3.12.8", "3.12.8"),
        ("Python 3.130.1", "3.130.1"),
        ("Python 3.1.4", "3.1.4"),
        ("Python 3.14.0", "3.14.0"),
    ],
)
def test_another_python_fails_in_one_line_naming_both(output, found):
    r = judged(output)
    assert not r.ok and r.found == found
    assert r.detail == f"the template has Python {found}, the base declares 3.13"
    assert r.line() == f"python3 --version: the template has Python {found}, the base declares 3.13"


def test_a_patch_declared_needs_that_patch():
    assert judged("Python 3.13.2", version="3.13.2").ok
    assert not judged("Python 3.13.20", version="3.13.2").ok


def test_no_version_in_the_output_or_a_failed_command_fails_and_finds_nothing():
    r = judged("python3: command not found", code=127)
    assert (r.ok, r.found) == (False, "") and r.detail.startswith("exit 127")
    r = judged("Python\n")
    assert (r.ok, r.found) == (False, "") and r.detail.startswith("no version in the output")


def test_verify_on_e2b_records_the_python_it_finds_even_when_it_is_another(verify_e2b):
    report = verify_e2b(specs()["minimal"], lambda t, **kw: FakeSandbox(t, python="3.12.8"))
    assert not report.ok and report.found == {"python": "3.12.8"}
    assert [r.line() for r in report.failed] == [
        "python3 --version: the template has Python 3.12.8, the base declares 3.13"
    ]


def test_cli_verify_names_both_pythons_in_one_line_and_reports_the_found_one(project, emu, monkeypatch):
    import e2b_code_interpreter

    assert cli_runner().invoke(cli, ["-C", str(project), "build", "minimal"]).exit_code == 0
    python = ["3.12.8"]
    monkeypatch.setattr(
        e2b_code_interpreter.Sandbox,
        "create",
        staticmethod(lambda template, **kw: FakeSandbox(template, python=python[0])),
    )
    r = cli_runner().invoke(cli, ["-C", str(project), "verify", "minimal"])
    assert r.exit_code == 1, r.output
    lines = [line for line in r.stdout.splitlines() if "3.12.8" in line]
    assert len(lines) == 2 and "the template has Python 3.12.8, the base declares 3.13" in lines[0]
    assert lines[1] == "minimal: 6/7 checks passed; python 3.12.8"
    python[0] = "3.13.5"
    r = cli_runner().invoke(cli, ["-C", str(project), "verify", "minimal", "--json"])
    assert r.exit_code == 0, r.output
    checks = {c["check"]: c for c in json.loads(r.stdout)}
    assert checks["python3 --version"]["found"] == {"python": "3.13.5"}
    assert checks["nexus --version"]["found"] == {}


def test_build_verify_fails_on_another_python_naming_both(project, emu, monkeypatch):
    import e2b_code_interpreter

    monkeypatch.setattr(
        e2b_code_interpreter.Sandbox,
        "create",
        staticmethod(lambda template, **kw: FakeSandbox(template, python="3.12.8")),
    )
    r = cli_runner().invoke(cli, ["-C", str(project), "build", "minimal", "--verify", "--json"])
    assert r.exit_code == 1, r.output
    error = json.loads(r.stdout)[0]["error"]
    assert error == (
        "smoke checks failed (1 of 7); lock entry not written:\n"
        "python3 --version: the template has Python 3.12.8, the base declares 3.13"
    )
    assert not (project / "templates.lock").exists()


def test_docker_verify_judges_the_image_python_the_same_way():
    """The Docker backend runs each check in a container and hands the output to the same judgement."""

    class Engine:
        def run_in_container(self, image, command, user=None, devices=()):
            if "importlib.metadata" in command:  # the version pip installed (layers/nexus.py)
                return 0, "nexus-ai-fs 0.5.6\n"
            return 0, {"python3": "Python 3.11.2\n", "nexus": "nexus, version 0.5.6\n"}.get(command.split()[0], "")

    backend = DockerBackend(Settings())
    backend._engine = Engine()
    built = Outcome("sha256:1", "b1", image="e2b-matrix/x:1")
    report = backend.verify(specs(backend="docker")["pinned"], built)  # the image's Python: 3.13 by default
    assert report.found == {"python": "3.11.2"}
    assert [r.line() for r in report.failed] == [
        "python3 --version: the template has Python 3.11.2, the base declares 3.13"
    ]
    project = apply_overrides(load_project(ROOT), ("base.image_python=3.11",))  # as the e2e tests set it
    spec = build_spec(project.select(("pinned",))[0], project.layers, backend, index_of(), pins=Committed(ROOT))
    assert backend.verify(spec, built).ok
