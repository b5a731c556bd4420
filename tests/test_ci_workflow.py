"""The release workflow, .github/workflows/templates.yml, and the GitHub Action it runs e2b-matrix
through, action.yml, checked offline.

GitHub's workflow and action schemas (check-jsonschema's vendored copies) accept them, and reject a
copy with a deliberate error; every `e2b-matrix ...` the workflow runs, in a shell step or given to
the action as its `command`, parses as the CLI parses it (so the workflow cannot drift from the
CLI); the pull-request job builds nothing and needs no secret; main builds in staging, and only a
manual release builds in prod, gated on staging's inputs; each step sees only the key of the
environment of e2b-matrix.toml its commands run in. The scripts that matter run as written: the
lock commit of each job against a local git remote, the prod gate against two locks, and the
action's own steps.
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
import textwrap
from pathlib import Path

import click
import pytest
from ruamel.yaml import YAML

from conftest import ROOT, fp, write
from e2b_matrix import environments
from e2b_matrix.cli import Env, cli
from e2b_matrix.lock import LockEntry, dumps

WORKFLOW = ROOT / ".github" / "workflows" / "templates.yml"
ACTION = ROOT / "action.yml"
RELEASING = ROOT / "docs" / "releasing.md"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
EVENTS = ("pull_request", "push", "workflow_dispatch")
ACTIONS = ("promote", "rollback", "release-prod")  # the workflow_dispatch input `action`
BUILDS = {("build",), ("build-all",), ("promote",), ("rollback",), ("verify",)}  # talk to E2B, need the key
ENVIRONMENTS = environments.load(ROOT)  # e2b-matrix.toml: staging (the default) and prod
KEYS = {env.key for env in ENVIRONMENTS.items.values()}


def load(path: Path = WORKFLOW) -> dict:
    return YAML(typ="safe").load(path.read_text())  # YAML 1.2: the key `on` stays a string


def dump(workflow: dict, path: Path) -> Path:
    with path.open("w") as f:
        YAML(typ="safe").dump(workflow, f)
    return path


def schema_check(path: Path, schema: str = "vendor.github-workflows") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120
    )


# -- GitHub's workflow and action schemas ------------------------------------------------------


def test_workflow_matches_githubs_schema():
    p = schema_check(WORKFLOW)
    assert p.returncode == 0, p.stdout + p.stderr


def test_action_matches_githubs_schema():
    p = schema_check(ACTION, "vendor.github-actions")
    assert p.returncode == 0, p.stdout + p.stderr


def _no_runs_on(w):
    del w["jobs"]["release"]["runs-on"]


def _unknown_event(w):
    w["on"]["merge_to_main"] = None


def _bad_permission(w):
    w["permissions"] = {"contents": "admin"}


def _no_shell(a):  # a composite action's run step names its shell
    del next(s for s in a["runs"]["steps"] if "run" in s)["shell"]


def _not_composite(a):
    a["runs"]["using"] = "compose"


def _typed_input(a):  # an action's inputs are strings: they take no type
    a["inputs"]["command"]["type"] = "string"


SCHEMAS = [(WORKFLOW, "vendor.github-workflows"), (ACTION, "vendor.github-actions")]
BROKEN = [(*SCHEMAS[0], b) for b in (_no_runs_on, _unknown_event, _bad_permission)] + [
    (*SCHEMAS[1], b) for b in (_no_shell, _not_composite, _typed_input)
]


@pytest.mark.parametrize("path, schema", SCHEMAS, ids=["workflow", "action"])
def test_the_dumped_copy_passes(tmp_path, path, schema):
    """What makes a broken copy below fail is its breakage, not the load-and-dump round trip."""
    p = schema_check(dump(load(path), tmp_path / "copy.yml"), schema)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("path, schema, breakage", BROKEN, ids=[b.__name__.strip("_") for *_, b in BROKEN])
def test_schema_check_fails_on_a_broken_copy(tmp_path, path, schema, breakage):
    broken = load(path)
    breakage(broken)
    p = schema_check(dump(broken, tmp_path / "broken.yml"), schema)
    assert p.returncode == 1, p.stdout + p.stderr


# -- what the workflow runs --------------------------------------------------------------------

SHELL_OPERATORS = ";&|()<>\n"
THE_ACTION = re.compile(r"\./|[\w.-]+/e2b-matrix@[\w.-]+")  # this repository's action.yml


def invocations(script: str) -> list[list[str]]:
    """The argument lists of every e2b-matrix the script runs (shell words, quotes removed)."""
    lex = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=SHELL_OPERATORS)
    lex.whitespace, lex.whitespace_split = " \t\r", True
    words = list(lex)
    found = []
    for i, word in enumerate(words):
        if word == "e2b-matrix" or word.endswith("/e2b-matrix"):
            args = []
            for w in words[i + 1 :]:
                if set(w) <= set(SHELL_OPERATORS):
                    break
                args.append(w)
            found.append(args)
    return found


def given_to_action(step: dict) -> list[list[str]]:
    """The argument list of the e2b-matrix a step runs through the action (its `command`, split as
    the action splits it), if it does."""
    command = step.get("with", {}).get("command", "")
    return [shlex.split(command)] if THE_ACTION.fullmatch(step.get("uses", "")) and command else []


def parse(args: list[str]) -> tuple[tuple[str, ...], click.Context]:
    """The command an e2b-matrix argument list names, parsed by click as the CLI would parse it
    (a shell variable stands for one value). Raises click.UsageError for an unknown command,
    option or choice, or a wrong number of arguments."""
    command, path, rest = cli, (), list(args)
    parent = None
    while isinstance(command, click.Group):
        ctx = click.Context(command, info_name=command.name, parent=parent, **command.context_settings)
        while rest and rest[0].startswith("-"):  # options before the command name are the group's
            option, eq, value = rest.pop(0).partition("=")
            param = next((p for p in command.get_params(ctx) if option in p.opts + p.secondary_opts), None)
            if param is None:
                raise click.NoSuchOption(option, ctx=ctx)
            if isinstance(param, click.Option) and not (param.is_flag or param.count):
                if not eq and not rest:
                    raise click.BadOptionUsage(option, f"Option '{option}' requires an argument.", ctx=ctx)
                value = value if eq else rest.pop(0)
                if param.callback is not None:  # --env and -C: the CLI's own callbacks record them
                    param.callback(ctx, param, value)
        if not rest:
            raise click.UsageError(f"no command after e2b-matrix {' '.join(path)}")
        name = rest.pop(0)
        if name not in command.commands:
            raise click.UsageError(f"no such command: e2b-matrix {' '.join((*path, name))}")
        command, path, parent = command.commands[name], (*path, name), ctx
    return path, command.make_context(path[-1], rest, parent=parent)


def steps(workflow: dict):
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def parsed(step: dict) -> list[tuple[tuple[str, ...], click.Context]]:
    """Every e2b-matrix a step runs, in its shell script or through the action, parsed."""
    return [parse(args) for args in invocations(step.get("run", "")) + given_to_action(step)]


def commands(workflow: dict, job_id: str | None = None):
    """(job id, step, command path, parsed context) of every e2b-matrix the workflow runs."""
    for jid, _job, step in steps(workflow):
        if job_id in (None, jid):
            for path, ctx in parsed(step):
                yield jid, step, path, ctx


def environment_of(workflow: dict, job_id: str, step: dict, ctx: click.Context) -> environments.Environment:
    """The environment of e2b-matrix.toml a parsed command runs in: its --env, else E2B_MATRIX_ENV of
    its step, job or workflow, else the project file's default."""
    env = ctx.find_object(Env)
    name = env.environment if env is not None else None
    for scope in (step, workflow["jobs"][job_id], workflow):
        name = name or scope.get("env", {}).get("E2B_MATRIX_ENV")
    return ENVIRONMENTS.select(name)


def may_run(condition, event: str, action: str | None = None) -> bool:
    """Whether an `if:` can hold for an event and, on workflow_dispatch, the input `action` (None: any;
    outside workflow_dispatch it is empty). github.event_name and inputs.action are compared; every
    other comparison or status function (always(), !cancelled()) counts as maybe true."""
    if condition is None:
        return True
    expr = str(condition).strip().removeprefix("${{").removesuffix("}}")
    known = {"github.event_name": event, "inputs.action": action if event == "workflow_dispatch" else ""}

    def compare(m):
        left, op, right = m.groups()
        value = known.get(left)
        return "True" if value is None else str((right == value) == (op == "=="))

    expr = re.sub(r"([\w.]+)\s*(==|!=)\s*'([^']*)'", compare, expr)
    expr = re.sub(r"!?\s*\w+\(\)", "True", expr)
    expr = expr.replace("||", " or ").replace("&&", " and ")
    return bool(eval(expr, {"__builtins__": {}}, {}))


def jobs_on(workflow: dict, event: str) -> list[str]:
    return [jid for jid, job in workflow["jobs"].items() if may_run(job.get("if"), event)]


def runs_when(job: dict, step: dict | None = None) -> list[tuple[str, str]]:
    """The (event, dispatch action) pairs a job, or one of its steps, may run on ('' outside a dispatch)."""
    cases = [(e, a) for e in EVENTS for a in (ACTIONS if e == "workflow_dispatch" else ("",))]
    return [(e, a) for e, a in cases if may_run(job.get("if"), e, a) and may_run((step or {}).get("if"), e, a)]


def test_every_command_and_option_exists_in_the_cli():
    workflow = load()
    found = {path for _, _, path, _ in commands(workflow)}  # parse() raised on anything unknown
    assert {
        ("plan",),
        ("compile",),
        ("lock", "check"),
        ("lock", "show"),
        ("build-all",),
        ("promote",),
        ("rollback",),
    } <= found


def test_every_command_given_to_the_action_parses_and_holds_no_expression():
    """A `with: command:` is split into words by the action: an expression in it (a dispatch input)
    could become several words, so commands with inputs run in shell steps instead."""
    workflow, action = load(), load(ACTION)
    given = [(jid, step) for jid, _, step in steps(workflow) if THE_ACTION.fullmatch(step.get("uses", ""))]
    assert given
    for jid, step in given:
        assert set(step.get("with", {})) <= set(action["inputs"]), (jid, step.get("name"))
        assert "${{" not in step.get("with", {}).get("command", ""), (jid, step.get("name"))
    ran = {(jid, path) for jid, step in given for path, _ in parsed(step)}
    assert {("plan", ("compile",)), ("release", ("build-all",)), ("release-prod", ("build-all",))} <= ran
    assert_installs_first_without_a_key(workflow)


def assert_installs_first_without_a_key(workflow: dict) -> None:
    """In each job the action's first use installs e2b-matrix with no command and no env (what it is
    given reaches setup-python and pip too), before any shell step runs it."""
    for jid, job in workflow["jobs"].items():
        first = next(i for i, s in enumerate(job["steps"]) if THE_ACTION.fullmatch(s.get("uses", "")))
        assert not job["steps"][first].get("with", {}).get("command") and not job["steps"][first].get("env"), jid
        assert not any(invocations(s.get("run", "")) for s in job["steps"][:first]), jid


@pytest.mark.parametrize(
    "args, error",
    [
        (["plan", "--format", "markdwn"], "markdwn"),
        (["lock", "chek"], "lock chek"),
        (["build-all", "--verfy"], "--verfy"),
        (["rollback", "a", "b"], "unexpected extra argument"),
        (["promote", "--channel"], "--channel"),
        (["--env", "prod", "lock", "chek"], "lock chek"),
        (["--env"], "--env"),
    ],
)
def test_the_command_check_catches_drift(args, error):
    with pytest.raises(click.UsageError) as exc:
        parse(args)
    assert error in exc.value.format_message().lower()


def test_the_command_finder_reads_shell_as_the_shell_does():
    script = (
        'set -euo pipefail\n# e2b-matrix nosuch\necho "e2b-matrix nosuch"\n'
        "x=$(.venv/bin/e2b-matrix lock show --json)\n"
        '.venv/bin/e2b-matrix plan \\\n  --format markdown | tee -a "$GITHUB_STEP_SUMMARY"\n'
        'for n in "${names[@]}"; do .venv/bin/e2b-matrix rollback -- "$n"; done\n'
    )
    assert invocations(script) == [
        ["lock", "show", "--json"],
        ["plan", "--format", "markdown"],
        ["rollback", "--", "$n"],
    ]


def test_the_environment_of_a_command_is_its_flag_else_the_variable_else_the_default():
    workflow = {"jobs": {"j": {"env": {"E2B_MATRIX_ENV": "prod"}}}, "env": {}}
    plain = {"jobs": {"j": {}}}
    assert environment_of(plain, "j", {}, parse(["plan"])[1]).name == ENVIRONMENTS.default == "staging"
    assert environment_of(plain, "j", {}, parse(["--env", "prod", "plan"])[1]).name == "prod"
    assert environment_of(plain, "j", {}, parse(["plan", "--env=prod"])[1]).name == "prod"
    assert environment_of(workflow, "j", {}, parse(["plan"])[1]).name == "prod"
    assert environment_of(workflow, "j", {}, parse(["plan", "--env", "staging"])[1]).name == "staging"
    assert environment_of(plain, "j", {"env": {"E2B_MATRIX_ENV": "prod"}}, parse(["plan"])[1]).name == "prod"


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
    plan_steps = [
        s["run"]
        for jid in pr_jobs
        for _, _, s in steps({"jobs": {jid: workflow["jobs"][jid]}})
        if "plan --format markdown" in s.get("run", "")
    ]
    assert plan_steps and all("$GITHUB_STEP_SUMMARY" in run for run in plan_steps)


def test_main_builds_verified_and_promotes_staging_one_build_at_a_time():
    workflow = load()
    staging = ENVIRONMENTS.select(None)
    builds = [
        (jid, step, ctx)
        for jid, step, path, ctx in commands(workflow)
        if path == ("build-all",) and environment_of(workflow, jid, step, ctx) == staging
    ]
    assert builds
    for jid, step, ctx in builds:
        job = workflow["jobs"][jid]
        assert ctx.params["verify"] is True and ctx.params["promote"] == "staging"
        assert ctx.params["locked"] is True  # the committed requirements files, never resolved again
        assert runs_when(job, step) == [("push", "")]
        concurrency = job["concurrency"]
        assert concurrency["cancel-in-progress"] is False
        assert "${{" not in concurrency["group"]  # one group for every run, whatever it was started with
        assert job["env"]["LOCK"] == staging.lock
    assert workflow["on"]["push"]["branches"] == ["main"]


def test_a_manual_release_builds_the_same_inputs_in_prod_checks_them_then_promotes():
    workflow = load()
    prod = ENVIRONMENTS.select("prod")
    in_prod = [
        (jid, step, path, ctx)
        for jid, step, path, ctx in commands(workflow)
        if environment_of(workflow, jid, step, ctx) == prod
    ]
    assert {jid for jid, *_ in in_prod} == {"release-prod"}  # nothing else touches prod
    job = workflow["jobs"]["release-prod"]
    assert runs_when(job) == [("workflow_dispatch", "release-prod")]
    assert ("workflow_dispatch", "release-prod") not in runs_when(workflow["jobs"]["release"])
    assert set(workflow["on"]["workflow_dispatch"]["inputs"]["action"]["options"]) == set(ACTIONS)
    assert job["environment"] == "production"  # prod's key and its approvals live there
    assert job["env"]["LOCK"] == prod.lock and job["env"]["E2B_MATRIX_ENV"] == prod.name
    assert job["concurrency"] == workflow["jobs"]["release"]["concurrency"]  # never beside a staging build

    order = [(path, ctx.params, step) for _, step, path, ctx in in_prod]
    kinds = [path for path, _, _ in order]
    build = kinds.index(("build-all",))
    gate = next(i for i, (path, params, _) in enumerate(order) if path == ("lock", "check") and params["same_as"])
    promote = kinds.index(("promote",))
    assert build < gate < promote
    params = order[build][1]
    assert params["locked"] and params["verify"] and not params["force"] and params["promote"] is None
    assert order[gate][1]["same_as"] == ENVIRONMENTS.default and order[gate][1]["as_json"]
    assert order[gate][2]["id"] == "gate"
    commit = next(s for s in job["steps"] if s.get("name") == "Commit the lock")
    assert "steps.gate.outcome == 'success'" in commit["if"]  # nothing unproven reaches prod's lock
    for _, _, step in order:  # no step of the release may run on anything but its dispatch
        assert runs_when(job, step) == [("workflow_dispatch", "release-prod")]


def test_dispatch_promotes_or_rolls_back_in_staging():
    workflow = load()
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["action"]["type"] == "choice" and set(inputs["action"]["options"]) == set(ACTIONS)
    assert inputs["channel"]["default"] == "default"
    assert inputs["variants"]["required"] is True
    for action in ("promote", "rollback"):
        ran = [
            (jid, step, path, ctx)
            for jid, step, path, ctx in commands(workflow)
            if path == (action,) and ("workflow_dispatch", action) in runs_when(workflow["jobs"][jid], step)
        ]
        assert ran, action
        for jid, step, _, ctx in ran:
            assert environment_of(workflow, jid, step, ctx).name == ENVIRONMENTS.default
            assert workflow["jobs"][jid]["concurrency"]["cancel-in-progress"] is False


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
    assert "write" not in json.dumps(
        {jid: workflow["jobs"][jid].get("permissions") for jid in jobs_on(workflow, "pull_request")}
    )


def test_each_step_sees_only_the_key_of_the_environment_it_runs_in():
    """E2B_API_KEY reaches staging's build and release steps, E2B_API_KEY_PROD prod's, each from the
    secret of its name, in the step's own env; no other step, job or workflow env holds a key."""
    workflow = load()
    assert {"E2B_API_KEY", "E2B_API_KEY_PROD"} == KEYS
    assert "secrets." not in json.dumps(workflow.get("env", {}))
    needing = {}
    for jid, job, step in steps(workflow):
        where = f"{jid}: {step.get('name') or step.get('uses')}"
        assert "secrets." not in json.dumps(job.get("env", {})), jid
        assert "secrets." not in json.dumps(step.get("with", {})), where
        env = step.get("env", {})
        secret = {name for name, value in env.items() if "secrets." in str(value)}
        assert "secrets." not in json.dumps({k: v for k, v in step.items() if k != "env"}), where
        needed = {environment_of(workflow, jid, step, ctx).key for path, ctx in parsed(step) if path in BUILDS}
        assert len(needed) <= 1, where  # one environment per step
        assert secret == needed, where
        for name in needed:
            assert env[name] == f"${{{{ secrets.{name} }}}}", where
            needing.setdefault(jid, set()).add(name)
        assert not (set(env) - secret) & KEYS, where  # no key under its name from anywhere else
    assert needing == {"release": {"E2B_API_KEY"}, "release-prod": {"E2B_API_KEY_PROD"}}
    assert "E2B_API_KEY_PROD" not in json.dumps(workflow["jobs"]["release"])
    assert not re.search(r"E2B_API_KEY(?!_)", json.dumps(workflow["jobs"]["release-prod"]))
    assert "secrets." not in ACTION.read_text()


def test_actions_pinned_to_a_major_version_and_scripts_fail_early():
    workflow_steps = [(jid, step) for jid, _job, step in steps(load())]
    for jid, step in workflow_steps + [("action.yml", s) for s in load(ACTION)["runs"]["steps"]]:
        if "uses" in step:
            assert step["uses"] == "./" or re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
        run = step.get("run", "")
        if len(run.strip().splitlines()) > 1:
            assert run.startswith("set -euo pipefail\n"), f"{jid}: {step.get('name')}"


# -- the lock commit, run as written ---------------------------------------------------------


def _step(job: str, name: str) -> dict:
    return next(s for jid, _, s in steps(load()) if jid == job and s.get("name") == name)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def _lock(*entries: tuple) -> str:
    """A lock of (variant, build ID, channels[, fingerprint]) entries."""
    when = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
    return dumps(
        [
            LockEntry(
                alias=f"nexus-sandbox-{v}",
                variant=v,
                template_id="tpl" + v,
                build_id=b,
                fingerprint=f[0] if f else "sha256:" + "0" * 64,
                layers={"base": "1"},
                built_at=when,
                domain="e2b.app",
                channels=ch,
            )
            for v, b, ch, *f in entries
        ]
    )


def _runner_env(temp: Path, **extra: str) -> dict[str, str]:
    """The environment a GitHub runner gives a step, with the installed e2b-matrix on PATH (the action
    puts it there)."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RUNNER_TEMP": str(temp),
        "GITHUB_STEP_SUMMARY": str(temp / "summary.md"),
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_REF_NAME": "main",
        "ACTION": "",
        "VARIANTS": "",
        "CHANNEL": "",
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "7",
        **extra,
    }


def run_step(job: str, name: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A step of the workflow run as GitHub runs it (bash -eo pipefail), with its job's literal env."""
    literal = {k: str(v) for k, v in load()["jobs"][job].get("env", {}).items() if "${{" not in str(v)}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _step(job, name)["run"]],
        cwd=cwd,
        env={**env, **literal},
        capture_output=True,
        text=True,
        timeout=120,
    )


def needs_git_and_jq() -> None:
    if not (shutil.which("git") and shutil.which("jq")):
        pytest.skip("needs git and jq (a GitHub runner has both)")


@pytest.fixture
def checkout(tmp_path):
    """A shallow clone of a bare `origin` with main (the project file and both environments' locks),
    as actions/checkout leaves it, and a runner for the workflow's steps in it."""
    needs_git_and_jq()
    seed, origin, work, temp = (tmp_path / d for d in ("seed", "origin.git", "work", "runner-temp"))
    seed.mkdir(), temp.mkdir()
    _git(seed, "init", "-q", "-b", "main")
    shutil.copy(ROOT / environments.PROJECT_FILE, seed)
    (seed / "templates.lock").write_text(_lock(("latest", "b1", {})))
    (seed / "templates.prod.lock").write_text(_lock(("latest", "p1", {"default": "p1"})))
    _git(seed, "add", "."), _git(seed, "commit", "-q", "-m", "seed")
    _git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    _git(tmp_path, "clone", "-q", "--depth", "1", origin.as_uri(), str(work))

    def run(job: str, name: str, **extra: str) -> subprocess.CompletedProcess:
        return run_step(job, name, work, _runner_env(temp, **extra))

    return work, origin, run


def test_an_unchanged_lock_is_not_committed(checkout):
    _work, origin, run = checkout
    head = _git(origin, "rev-parse", "main")
    for job in ("release", "release-prod"):
        assert run(job, "Record the lock before").returncode == 0
        p = run(job, "Commit the lock")
        assert p.returncode == 0, p.stderr
        assert "nothing to commit" in p.stdout and _git(origin, "rev-parse", "main") == head


def _inventory(work: Path, lock: str, alias: str, build: str) -> str:
    path = f"{lock.removesuffix('.lock')}.inventory/{alias}/{build}.toml"
    write(work / path, "# Recorded by e2b-matrix verify; do not edit.\n")
    return path


def test_a_build_is_committed_by_the_bot_saying_what_changed(checkout):
    work, origin, run = checkout
    assert run("release", "Record the lock before").returncode == 0
    built = (("latest", "b2"), ("pinned", "p1"))
    (work / "templates.lock").write_text(_lock(*((v, b, {"staging": b}) for v, b in built)))
    inventories = [_inventory(work, "templates.lock", f"nexus-sandbox-{v}", b) for v, b in built]
    # meanwhile main moved on: the commit is rebased onto it
    other = work.parent / "other"
    _git(work.parent, "clone", "-q", str(origin), str(other))
    (other / "README.md").write_text("x\n")
    _git(other, "add", "."), _git(other, "commit", "-q", "-m", "docs"), _git(other, "push", "-q", "origin", "main")

    p = run("release", "Commit the lock")
    assert p.returncode == 0, p.stdout + p.stderr
    log = _git(origin, "log", "-2", "--format=%an <%ae>%n%B%n--")
    assert log.startswith(
        "github-actions[bot] <41898282+github-actions[bot]@users.noreply.github.com>\n"
        "templates.lock: build-all --verify --promote staging: latest pinned\n"
    )
    for line in (
        "latest (nexus-sandbox-latest): build b1 -> b2",
        "latest (nexus-sandbox-latest): staging -> b2",
        "pinned (nexus-sandbox-pinned): build (none) -> p1",
        "pinned (nexus-sandbox-pinned): staging -> p1",
        "Run: https://github.example/o/r/actions/runs/7",
        "docs",
    ):
        assert line in log
    assert _git(origin, "show", "main:templates.lock") == (work / "templates.lock").read_text()
    assert _git(origin, "diff", "--name-only", "main~1", "main").split() == sorted([*inventories, "templates.lock"])


def test_a_dispatch_commit_names_the_command(checkout):
    work, origin, run = checkout
    assert run("release", "Record the lock before").returncode == 0
    (work / "templates.lock").write_text(_lock(("latest", "b1", {"default": "b1"})))
    p = run(
        "release",
        "Commit the lock",
        GITHUB_EVENT_NAME="workflow_dispatch",
        ACTION="promote",
        VARIANTS="latest",
        CHANNEL="default",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert _git(origin, "log", "-1", "--format=%s") == "templates.lock: promote latest --channel default\n"
    assert "latest (nexus-sandbox-latest): default -> b1" in _git(origin, "log", "-1", "--format=%b")


def test_the_prod_release_commits_prods_lock_and_inventories_only(checkout):
    work, origin, run = checkout
    dispatch = {
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "ACTION": "release-prod",
        "VARIANTS": "latest",
        "CHANNEL": "default",
    }
    assert run("release-prod", "Record the lock before", **dispatch).returncode == 0
    (work / "templates.prod.lock").write_text(_lock(("latest", "p2", {"default": "p2"})))
    inventory = _inventory(work, "templates.prod.lock", "nexus-sandbox-latest", "p2")
    (work / "templates.lock").write_text(_lock(("latest", "b9", {})))  # staging's: not this job's to commit
    p = run("release-prod", "Commit the lock", **dispatch)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        _git(origin, "log", "-1", "--format=%s")
        == "templates.prod.lock: release-prod latest --channel default: latest\n"
    )
    body = _git(origin, "log", "-1", "--format=%b").splitlines()
    assert {"latest (nexus-sandbox-latest): build p1 -> p2", "latest (nexus-sandbox-latest): default -> p2"} <= set(
        body
    )
    assert _git(origin, "diff", "--name-only", "main~1", "main").split() == [inventory, "templates.prod.lock"]
    assert _git(work, "status", "--porcelain").split() == ["M", "templates.lock"]
    assert "### templates.prod.lock" in (work.parent / "runner-temp" / "summary.md").read_text()


# -- the prod gate, run as written -----------------------------------------------------------

GATE = "The same inputs as staging"


@pytest.fixture
def gate(project, tmp_path_factory):
    """The gate step on the shipped project with its project file, given each environment's builds
    ({variant: fingerprint}); returns the step's result and plain `lock check --same-as`'s exit status."""
    needs_git_and_jq()
    shutil.copy(ROOT / environments.PROJECT_FILE, project)
    temp = tmp_path_factory.mktemp("runner-temp")

    def run(staging: dict[str, str], prod: dict[str, str]) -> tuple[subprocess.CompletedProcess, int]:
        for env, builds in ((ENVIRONMENTS.select("staging"), staging), (ENVIRONMENTS.select("prod"), prod)):
            write(project / env.lock, _lock(*((v, f"{env.name}-{v}", {}, f) for v, f in builds.items())))
        env = _runner_env(temp, GITHUB_EVENT_NAME="workflow_dispatch", ACTION="release-prod")
        plain = subprocess.run(
            ["e2b-matrix", "lock", "check", "--env", "prod", "--same-as", "staging", "--offline"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return run_step("release-prod", GATE, project, env), plain.returncode

    return run


def test_the_gate_passes_when_prod_built_what_staging_built(gate):
    """minimal is built in neither, full in staging only: prod has nothing of them to release. The plain
    exit status fails on them; the gate, reading `unlike`, does not."""
    p, plain = gate({"latest": fp(1), "pinned": fp(2), "full": fp(3)}, {"latest": fp(1), "pinned": fp(2)})
    assert plain == 1
    assert p.returncode == 0, p.stdout + p.stderr
    assert "every variant built in prod was built from the same inputs in staging" in p.stdout


def _other(alias: str, prod: str, staging: str) -> str:
    return (
        f"::error::{alias}: built in prod, from other inputs than in staging "
        f"(prod {prod[:19]}…, staging {staging[:19]}…)"
    )


@pytest.mark.parametrize(
    "prod, expected",
    [
        ({"latest": fp(1), "pinned": fp(9)}, [_other("nexus-sandbox-pinned", fp(9), fp(2))]),
        ({"latest": fp(1), "minimal": fp(4)}, ["::error::nexus-sandbox-minimal: built in prod, never in staging"]),
        (
            {"latest": fp(8), "minimal": fp(4)},
            [
                _other("nexus-sandbox-latest", fp(8), fp(1)),
                "::error::nexus-sandbox-minimal: built in prod, never in staging",
            ],
        ),
    ],
    ids=["other-inputs", "not-in-staging", "both"],
)
def test_the_gate_fails_naming_each_variant_prod_built_from_other_inputs(gate, prod, expected):
    p, plain = gate({"latest": fp(1), "pinned": fp(2)}, prod)
    assert (p.returncode, plain) == (1, 1), p.stdout + p.stderr
    assert [line for line in p.stdout.splitlines() if line.startswith("::error::")] == expected


def test_the_gate_stops_on_bad_input_with_its_one_line(gate, project):
    write(project / environments.PROJECT_FILE, '[environments.prod]\ndomain = "e2b.app"\nkye = "X"\n')
    p, plain = gate({}, {})
    assert p.returncode == plain == 2
    assert p.stderr.splitlines() == [
        "e2b-matrix: error: e2b-matrix.toml: environments.prod.kye: unknown key; did you mean 'key'?"
    ]


# -- the action's own steps, run as written ----------------------------------------------------


def action_step(name: str) -> dict:
    return next(s for s in load(ACTION)["runs"]["steps"] if name in (s.get("id"), s.get("name")))


def run_action_step(step: dict, cwd: Path, context: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """A run step of action.yml as the runner runs it: its expressions (inputs, step outputs) replaced
    by their values, in its working-directory, under bash -eo pipefail."""

    def value(text: str) -> str:
        return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: context[m.group(1)], str(text))

    where = cwd / value(step.get("working-directory", "."))
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=where,
        env={**env, **{k: value(v) for k, v in step.get("env", {}).items()}},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()) if path.exists() else {}


def test_the_action_installs_once_and_puts_only_e2b_matrix_on_path(tmp_path):
    """The install step, with a stand-in python (no package index here): a virtualenv, e2b-matrix
    installed from the action's own checkout, only its folder of e2b-matrix on PATH; the next use of
    the action in the job finds it installed."""
    temp, pip_log = tmp_path / "runner-temp", tmp_path / "pip.log"
    temp.mkdir()
    stand_in = write(
        tmp_path / "python",
        textwrap.dedent("""\
        #!/bin/bash
        set -eu
        if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
        [ "$1 $2 $3" = "-m pip install" ] || exit 9
        echo "${@: -1}" >>"$PIP_LOG"
        printf '#!/bin/sh\\necho e2b-matrix 0.0\\n' >"$(dirname "$0")/e2b-matrix"
        chmod +x "$(dirname "$0")/e2b-matrix"
        """),
    )
    stand_in.chmod(0o755)
    env = {
        **os.environ,
        "RUNNER_TEMP": str(temp),
        "GITHUB_ACTION_PATH": str(ROOT),
        "PIP_LOG": str(pip_log),
        "GITHUB_OUTPUT": str(temp / "output"),
        "GITHUB_PATH": str(temp / "path"),
    }
    context = {"inputs.python-version": "3.12", "steps.python.outputs.python-path": str(stand_in)}

    p = run_action_step(action_step("home"), tmp_path, context, env)
    assert p.returncode == 0, p.stderr
    home = _outputs(temp / "output")
    assert "installed" not in home and Path(home["dir"]).parent == temp
    context.update({f"steps.home.outputs.{k}": v for k, v in home.items()})
    p = run_action_step(action_step("Install e2b-matrix"), tmp_path, context, env)
    assert p.returncode == 0, p.stderr
    assert pip_log.read_text() == f"{ROOT}\n" and "e2b-matrix 0.0" in p.stdout
    assert (temp / "path").read_text() == f"{home['bin']}\n"
    assert [f.name for f in Path(home["bin"]).iterdir()] == ["e2b-matrix"]  # not the virtualenv's python

    (temp / "output").unlink()
    assert run_action_step(action_step("home"), tmp_path, context, env).returncode == 0
    assert _outputs(temp / "output") == {**home, "installed": "true"}  # setup-python and pip are skipped
    for name in ("python", "Install e2b-matrix"):
        assert action_step(name)["if"] == "steps.home.outputs.installed != 'true'"


@pytest.fixture
def installed(tmp_path):
    """The action's install folder as the install step leaves it, holding this test run's e2b-matrix."""
    venv = tmp_path / "home" / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    (venv / "e2b-matrix").symlink_to(Path(sys.executable).parent / "e2b-matrix")
    shutil.copytree(ROOT / "variants", tmp_path / "workspace" / "templates" / "variants")

    def run(command: str, working_directory: str = "templates") -> subprocess.CompletedProcess:
        context = {
            "inputs.command": command,
            "inputs.working-directory": working_directory,
            "steps.home.outputs.dir": str(tmp_path / "home"),
        }
        return run_action_step(action_step("run"), tmp_path / "workspace", context, dict(os.environ))

    return run


def test_the_action_runs_its_command_in_the_working_directory(installed):
    p = installed("list")
    assert p.returncode == 0, p.stderr
    assert {"full", "latest", "minimal", "pinned"} <= {line.split()[0] for line in p.stdout.splitlines()[1:]}
    assert installed("lock check --offline").returncode == 1  # its exit status is the step's: no lock yet


@pytest.mark.parametrize(
    "command, error",
    [
        ("list --env '$HOME; touch pwned'", "e2b-matrix: error: --env: no environment '$HOME; touch pwned'"),
        ('list "$(touch pwned)" `touch pwned` && touch pwned', "Got unexpected extra arguments ($(touch pwned) `touch"),
        ("list 'unclosed", "e2b-matrix: error: the action input command: No closing quotation"),
    ],
)
def test_the_action_splits_its_command_into_words_and_runs_no_shell(installed, tmp_path, command, error):
    p = installed(command)
    assert p.returncode == 2 and error in p.stderr, p.stderr
    assert not list(tmp_path.rglob("pwned"))


# -- the example for other repositories ----------------------------------------------------------


def test_the_documented_adoption_is_a_valid_workflow_whose_commands_parse(tmp_path):
    """docs/releasing.md shows another repository's workflow using the action: GitHub's schema accepts
    it, and every command it gives the action or runs parses; each key reaches only its environment."""
    blocks = re.findall(r"^```yaml\n(.*?)^```$", RELEASING.read_text(), re.M | re.S)
    examples = [b for b in blocks if "/e2b-matrix@" in b]
    assert examples
    for i, text in enumerate(examples):
        file = write(tmp_path / f"example{i}.yml", text)
        p = schema_check(file)
        assert p.returncode == 0, p.stdout + p.stderr
        workflow = load(file)
        ran = list(commands(workflow))
        assert {("build-all",), ("promote",)} <= {path for _, _, path, _ in ran}
        assert_installs_first_without_a_key(workflow)
        for jid, step, path, ctx in ran:
            if path in BUILDS:
                key = environment_of(workflow, jid, step, ctx).key
                assert set(step["env"]) == {key} and step["env"][key] == f"${{{{ secrets.{key} }}}}"
