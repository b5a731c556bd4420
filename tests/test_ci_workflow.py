"""The release workflow, .github/workflows/templates.yml, checked offline.

GitHub's workflow schema (check-jsonschema's vendored copy) accepts it, and rejects a copy with a
deliberate error; every `e2b-matrix ...` it runs parses as the CLI parses it (so the workflow cannot
drift from the CLI); the pull-request job builds nothing and needs no secret; and the lock-commit
step, run as written against a local git remote, commits and pushes only a changed lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from ruamel.yaml import YAML

from conftest import ROOT
from e2b_matrix.cli import cli
from e2b_matrix.lock import LockEntry, dumps

WORKFLOW = ROOT / ".github" / "workflows" / "templates.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
EVENTS = ("pull_request", "push", "workflow_dispatch")
BUILDS = {("build",), ("build-all",), ("promote",), ("rollback",), ("verify",)}  # talk to E2B, need the key


def load(path: Path = WORKFLOW) -> dict:
    return YAML(typ="safe").load(path.read_text())  # YAML 1.2: the key `on` stays a string


def dump(workflow: dict, path: Path) -> Path:
    with path.open("w") as f:
        YAML(typ="safe").dump(workflow, f)
    return path


def schema_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


# -- GitHub's workflow schema ------------------------------------------------------------------

def test_workflow_matches_githubs_schema():
    p = schema_check(WORKFLOW)
    assert p.returncode == 0, p.stdout + p.stderr


def _no_runs_on(w):
    del w["jobs"]["release"]["runs-on"]


def _unknown_event(w):
    w["on"]["merge_to_main"] = None


def _bad_permission(w):
    w["permissions"] = {"contents": "admin"}


def test_the_dumped_copy_passes(tmp_path):
    """What makes a broken copy below fail is its breakage, not the load-and-dump round trip."""
    p = schema_check(dump(load(), tmp_path / "copy.yml"))
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("breakage", [_no_runs_on, _unknown_event, _bad_permission])
def test_schema_check_fails_on_a_broken_copy(tmp_path, breakage):
    broken = load()
    breakage(broken)
    p = schema_check(dump(broken, tmp_path / "broken.yml"))
    assert p.returncode == 1, p.stdout + p.stderr


# -- what the workflow runs --------------------------------------------------------------------

SHELL_OPERATORS = ";&|()<>\n"


def invocations(script: str) -> list[list[str]]:
    """The argument lists of every e2b-matrix the script runs (shell words, quotes removed)."""
    lex = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=SHELL_OPERATORS)
    lex.whitespace, lex.whitespace_split = " \t\r", True
    words = list(lex)
    found = []
    for i, word in enumerate(words):
        if word == "e2b-matrix" or word.endswith("/e2b-matrix"):
            args = []
            for w in words[i + 1:]:
                if set(w) <= set(SHELL_OPERATORS):
                    break
                args.append(w)
            found.append(args)
    return found


def parse(args: list[str]) -> tuple[tuple[str, ...], click.Context]:
    """The command an e2b-matrix argument list names, parsed by click as the CLI would parse it
    (a shell variable stands for one value). Raises click.UsageError for an unknown command,
    option or choice, or a wrong number of arguments."""
    command, path, rest = cli, (), list(args)
    parent = None
    while isinstance(command, click.Group):
        ctx = click.Context(command, info_name=command.name, parent=parent, **command.context_settings)
        while rest and rest[0].startswith("-"):  # options before the command name are the group's
            option = rest.pop(0).split("=", 1)[0]
            if not any(option in p.opts + p.secondary_opts for p in command.get_params(ctx)):
                raise click.NoSuchOption(option, ctx=ctx)
        if not rest:
            raise click.UsageError(f"no command after e2b-matrix {' '.join(path)}")
        name = rest.pop(0)
        if name not in command.commands:
            raise click.UsageError(f"no such command: e2b-matrix {' '.join(path + (name,))}")
        command, path, parent = command.commands[name], path + (name,), ctx
    return path, command.make_context(path[-1], rest, parent=parent)


def steps(workflow: dict):
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def commands(workflow: dict, job_id: str | None = None):
    """(job id, step, command path, parsed context) of every e2b-matrix the workflow runs."""
    for jid, _job, step in steps(workflow):
        if job_id in (None, jid):
            for args in invocations(step.get("run", "")):
                path, ctx = parse(args)
                yield jid, step, path, ctx


def may_run(condition, event: str) -> bool:
    """Whether an `if:` can hold for an event: github.event_name is compared, every other
    comparison or status function (always(), !cancelled()) counts as maybe true."""
    if condition is None:
        return True
    expr = str(condition).strip().removeprefix("${{").removesuffix("}}")

    def compare(m):
        left, op, right = m.groups()
        return str((right == event) == (op == "==")) if left == "github.event_name" else "True"

    expr = re.sub(r"([\w.]+)\s*(==|!=)\s*'([^']*)'", compare, expr)
    expr = re.sub(r"!?\s*\w+\(\)", "True", expr)
    expr = expr.replace("||", " or ").replace("&&", " and ")
    return bool(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - only True/False/and/or/() remain


def jobs_on(workflow: dict, event: str) -> list[str]:
    return [jid for jid, job in workflow["jobs"].items() if may_run(job.get("if"), event)]


def test_every_command_and_option_exists_in_the_cli():
    workflow = load()
    found = {path for _, _, path, _ in commands(workflow)}  # parse() raised on anything unknown
    assert {("plan",), ("lock", "check"), ("lock", "show"), ("build-all",), ("promote",), ("rollback",)} <= found


@pytest.mark.parametrize("args, error", [
    (["plan", "--format", "markdwn"], "markdwn"),
    (["lock", "chek"], "lock chek"),
    (["build-all", "--verfy"], "--verfy"),
    (["rollback", "a", "b"], "unexpected extra argument"),
    (["promote", "--channel"], "--channel"),
])
def test_the_command_check_catches_drift(args, error):
    with pytest.raises(click.UsageError) as exc:
        parse(args)
    assert error in exc.value.format_message().lower()


def test_the_command_finder_reads_shell_as_the_shell_does():
    script = ('set -euo pipefail\n# e2b-matrix nosuch\necho "e2b-matrix nosuch"\n'
              'x=$(.venv/bin/e2b-matrix lock show --json)\n'
              '.venv/bin/e2b-matrix plan \\\n  --format markdown | tee -a "$GITHUB_STEP_SUMMARY"\n'
              'for n in "${names[@]}"; do .venv/bin/e2b-matrix rollback -- "$n"; done\n')
    assert invocations(script) == [["lock", "show", "--json"], ["plan", "--format", "markdown"],
                                   ["rollback", "--", "$n"]]


def test_pull_requests_plan_and_check_without_building_or_secrets():
    workflow = load()
    pr_jobs = jobs_on(workflow, "pull_request")
    assert pr_jobs
    ran = {(path, ctx.params.get("fmt")) for jid in pr_jobs for _, _, path, ctx in commands(workflow, jid)}
    assert (("plan",), "markdown") in ran and (("lock", "check"), None) in ran and (("compile",), None) in ran
    checks = [ctx for jid in pr_jobs for _, _, path, ctx in commands(workflow, jid) if path == ("compile",)]
    assert checks and all(ctx.params["check"] for ctx in checks)  # a pull request writes no requirements file
    assert not {path for path, _ in ran} & BUILDS
    for jid in pr_jobs:
        assert "secrets." not in json.dumps(workflow["jobs"][jid])
    plan_steps = [s["run"] for jid in pr_jobs for _, _, s in steps({"jobs": {jid: workflow["jobs"][jid]}})
                  if "plan --format markdown" in s.get("run", "")]
    assert plan_steps and all("$GITHUB_STEP_SUMMARY" in run for run in plan_steps)


def test_main_builds_verified_and_promotes_staging_one_build_at_a_time():
    workflow = load()
    builds = [(jid, step, ctx) for jid, step, path, ctx in commands(workflow) if path == ("build-all",)]
    assert builds
    for jid, step, ctx in builds:
        job = workflow["jobs"][jid]
        assert ctx.params["verify"] is True and ctx.params["promote"] == "staging"
        assert ctx.params["locked"] is True  # the committed requirements files, never resolved again
        assert [e for e in EVENTS if may_run(job.get("if"), e) and may_run(step.get("if"), e)] == ["push"]
        concurrency = job["concurrency"]
        assert concurrency["cancel-in-progress"] is False
        assert "${{" not in concurrency["group"]  # one group for every run: E2B aliases are global
    assert workflow["on"]["push"]["branches"] == ["main"]


def test_dispatch_promotes_or_rolls_back():
    workflow = load()
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["action"]["type"] == "choice" and set(inputs["action"]["options"]) == {"promote", "rollback"}
    assert inputs["channel"]["default"] == "default"
    assert inputs["variants"]["required"] is True
    ran = {path: jid for jid, _, path, _ in commands(workflow)}
    for path in (("promote",), ("rollback",)):
        job = workflow["jobs"][ran[path]]
        assert may_run(job.get("if"), "workflow_dispatch") and job["concurrency"]["cancel-in-progress"] is False


def test_permissions_read_only_but_the_lock_commit():
    workflow = load()
    assert workflow["permissions"] == {"contents": "read"}
    for jid, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        assert isinstance(permissions, dict), f"{jid}: permissions {permissions!r}"  # not write-all
        writes = {scope for scope, level in permissions.items() if level == "write"}
        assert writes <= {"contents"}, jid
        if writes:
            assert "git push" in json.dumps(job), f"{jid} may write but pushes nothing"
    assert "write" not in json.dumps({jid: workflow["jobs"][jid].get("permissions") for jid in
                                      jobs_on(workflow, "pull_request")})


def test_the_key_only_reaches_the_steps_that_use_it():
    workflow = load()
    assert "secrets." not in json.dumps(workflow.get("env", {}))
    for jid, job, step in steps(workflow):
        assert "secrets." not in json.dumps(job.get("env", {})), jid
        if "secrets." in json.dumps(step):
            assert set(step["env"]) == {"E2B_API_KEY"}
            assert {path for args in invocations(step["run"]) for path in [parse(args)[0]]} & BUILDS


def test_actions_pinned_to_a_major_version_and_scripts_fail_early():
    for jid, _job, step in steps(load()):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
        run = step.get("run", "")
        if len(run.strip().splitlines()) > 1:
            assert run.startswith("set -euo pipefail\n"), f"{jid}: {step.get('name')}"


# -- the lock commit, run as written ---------------------------------------------------------

def _step(name: str) -> str:
    return next(s["run"] for _, _, s in steps(load()) if s.get("name") == name)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True, timeout=60).stdout


def _lock(*entries: tuple[str, str, dict]) -> str:
    when = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc)
    return dumps([LockEntry(alias=f"nexus-sandbox-{v}", variant=v, template_id="tpl" + v, build_id=b,
                            fingerprint="sha256:" + "0" * 64, layers={"base": "1"}, built_at=when,
                            domain="e2b.app", channels=ch) for v, b, ch in entries])


@pytest.fixture
def checkout(tmp_path):
    """A shallow clone of a bare `origin` with main, as actions/checkout leaves it, and the
    environment a GitHub runner gives a step."""
    if not (shutil.which("git") and shutil.which("jq")):
        pytest.skip("needs git and jq (a GitHub runner has both)")
    seed, origin, work, temp = (tmp_path / d for d in ("seed", "origin.git", "work", "runner-temp"))
    seed.mkdir(), temp.mkdir()
    _git(seed, "init", "-q", "-b", "main")
    (seed / "templates.lock").write_text(_lock(("latest", "b1", {})))
    _git(seed, "add", "."), _git(seed, "commit", "-q", "-m", "seed")
    _git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    _git(tmp_path, "clone", "-q", "--depth", "1", origin.as_uri(), str(work))
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (work / ".git" / "info" / "exclude").write_text(".venv\n")
    env = {**os.environ, "RUNNER_TEMP": str(temp), "GITHUB_STEP_SUMMARY": str(temp / "summary.md"),
           "GITHUB_EVENT_NAME": "push", "GITHUB_REF_NAME": "main", "ACTION": "", "VARIANTS": "", "CHANNEL": "",
           "GITHUB_SERVER_URL": "https://github.example", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "7"}

    def run(name: str, **extra) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _step(name)], cwd=work,
                              env={**env, **extra}, capture_output=True, text=True, timeout=120)

    return work, origin, run


def test_an_unchanged_lock_is_not_committed(checkout):
    work, origin, run = checkout
    head = _git(origin, "rev-parse", "main")
    assert run("Record the lock before").returncode == 0
    p = run("Commit templates.lock")
    assert p.returncode == 0, p.stderr
    assert "nothing to commit" in p.stdout and _git(origin, "rev-parse", "main") == head


def test_a_build_is_committed_by_the_bot_saying_what_changed(checkout):
    work, origin, run = checkout
    assert run("Record the lock before").returncode == 0
    (work / "templates.lock").write_text(_lock(("latest", "b2", {"staging": "b2"}), ("pinned", "p1", {"staging": "p1"})))
    # meanwhile main moved on: the commit is rebased onto it
    other = work.parent / "other"
    _git(work.parent, "clone", "-q", str(origin), str(other))
    (other / "README.md").write_text("x\n")
    _git(other, "add", "."), _git(other, "commit", "-q", "-m", "docs"), _git(other, "push", "-q", "origin", "main")

    p = run("Commit templates.lock")
    assert p.returncode == 0, p.stdout + p.stderr
    log = _git(origin, "log", "-2", "--format=%an <%ae>%n%B%n--")
    assert log.startswith("github-actions[bot] <41898282+github-actions[bot]@users.noreply.github.com>\n"
                          "templates.lock: build-all --verify --promote staging: latest pinned\n")
    for line in ("latest (nexus-sandbox-latest): build b1 -> b2", "latest (nexus-sandbox-latest): staging -> b2",
                 "pinned (nexus-sandbox-pinned): build (none) -> p1", "pinned (nexus-sandbox-pinned): staging -> p1",
                 "Run: https://github.example/o/r/actions/runs/7", "docs"):
        assert line in log
    assert _git(origin, "show", "main:templates.lock") == (work / "templates.lock").read_text()
    assert _git(origin, "diff", "--name-only", "main~1", "main").split() == ["templates.lock"]


def test_a_dispatch_commit_names_the_command(checkout):
    work, origin, run = checkout
    assert run("Record the lock before").returncode == 0
    (work / "templates.lock").write_text(_lock(("latest", "b1", {"default": "b1"})))
    p = run("Commit templates.lock", GITHUB_EVENT_NAME="workflow_dispatch", ACTION="promote", VARIANTS="latest",
            CHANNEL="default")
    assert p.returncode == 0, p.stdout + p.stderr
    assert _git(origin, "log", "-1", "--format=%s") == "templates.lock: promote latest --channel default\n"
    assert "latest (nexus-sandbox-latest): default -> b1" in _git(origin, "log", "-1", "--format=%b")
