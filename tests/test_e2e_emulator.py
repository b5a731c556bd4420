"""The E2B emulator's Docker mode through the real e2b SDK and code-interpreter client (make e2e).

Each build's steps run as E2B's orchestrator runs them, in containers; each sandbox is a
container behind the emulator's sandbox proxy (envd's process API, the code interpreter's
/execute). What is asserted is what the SDK sees (build logs, E2B's failure reasons,
command results) and what the containers hold. Figures are printed: run with -s.
"""

from __future__ import annotations

import time
import uuid

import pytest
from e2b import BuildException, Template, wait_for_file
from e2b.api.client.api.templates import get_templates_template_id_builds_build_id_status as build_status_api
from e2b.api.client_sync import get_api_client
from e2b.connection_config import ConnectionConfig
from e2b.sandbox.commands.command_handle import CommandExitException
from e2b_code_interpreter import Sandbox

from conftest import DOCKER_BASE, KEY, wait_for
from e2b_matrix.emulator import E2BEmulator
from e2b_matrix.emulator.docker_steps import LAYERS, OWNER_LABEL

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def emulator(docker_mode):
    with E2BEmulator(api_key=KEY, docker=docker_mode) as emu:
        yield emu


@pytest.fixture
def sdk(emulator, monkeypatch):
    """The SDK (and the code interpreter) pointed at the emulator."""
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    return emulator


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def build(template, name: str, lines: list | None = None):
    start = time.monotonic()
    info = Template.build(template, name, on_build_logs=None if lines is None else lines.append)
    print(f"\n[emulator] {name}: built in {time.monotonic() - start:.1f}s")
    return info


def messages(lines) -> list[str]:
    return [e.message for e in lines]


def test_each_step_runs_as_e2b_runs_it(sdk, tmp_path):
    """RUN as its user, COPY from the uploaded archive (owner, mode), ENV expanded in the sandbox,
    WORKDIR relative to the current one, USER made when missing; the sandbox runs as the last USER."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/a.txt").write_text("alpha\n")
    (tmp_path / "conf/sub").mkdir()
    (tmp_path / "conf/sub/b.txt").write_text("beta\n")
    (tmp_path / "single.txt").write_text("single\n")
    tag = nonce()
    template = (
        Template(file_context_path=str(tmp_path))
        .from_template("code-interpreter-v1")
        .set_envs({"GREETING": f"hi-{tag}", "WHERE": "$HOME"})
        .run_cmd("id -un > /tmp/run-as && pwd > /tmp/run-in", user="root")
        .copy("conf", "/opt/conf/")
        .copy("single.txt", "/opt/single.txt", user="root", mode=0o600)
        .set_workdir("project")
        .run_cmd("id -un > /tmp/user-as && pwd > /tmp/user-in")
        .set_user("builder")
        .set_workdir("/srv/work")
        .run_cmd("id -un > whoami && pwd > where && echo $GREETING > greeting")
    )
    lines: list = []
    info = build(template, f"steps-{tag}", lines)
    logged = messages(lines)
    assert any(m.startswith("[builder 2/9] RUN id -un") for m in logged), logged
    assert not any(m.startswith("CACHED [builder") for m in logged)  # new steps: all run

    sbx = Sandbox.create(timeout=120, template=f"steps-{tag}:{info.build_id}")
    try:
        run = sbx.commands.run
        assert run("cat /tmp/run-as /tmp/run-in").stdout.split() == ["root", "/home/user"]
        assert run("cat /tmp/user-as /tmp/user-in").stdout.split() == ["user", "/home/user/project"]
        assert run("id -un && pwd").stdout.split() == ["builder", "/srv/work"]  # the last USER and WORKDIR
        assert run("cat whoami where greeting").stdout.split() == ["builder", "/srv/work", f"hi-{tag}"]
        assert run("echo $GREETING $WHERE").stdout.split() == [f"hi-{tag}", "/root"]  # expanded as root, once
        listing = run("stat -c '%U %a %n' /opt/conf/a.txt /opt/conf/sub/b.txt /opt/single.txt", user="root").stdout
        assert listing.splitlines() == [
            "user 644 /opt/conf/a.txt",
            "user 644 /opt/conf/sub/b.txt",
            "root 600 /opt/single.txt",
        ]
        assert run("cat /opt/conf/a.txt /opt/conf/sub/b.txt", user="root").stdout == "alpha\nbeta\n"
        owners = run("stat -c %U /home/user/project /srv/work", user="root").stdout.split()
        assert owners == ["user", "builder"]  # WORKDIR makes it for the USER of the time
    finally:
        sbx.kill()


def test_a_cached_step_is_not_run_again(sdk, emulator):
    """E2B's layer cache: a second template with the same steps runs none of them; a changed step
    runs from there on; skip_cache runs every step again."""
    tag = nonce()
    marker = f"/tmp/ran-{tag}"  # a new random value each time the first step runs

    def steps(last: str):
        return (
            Template()
            .from_template("code-interpreter-v1")
            .run_cmd(f"od -An -N8 -tx1 /dev/urandom | tr -d ' \\n' > {marker}", user="root")
            .run_cmd(f"echo {last} > /tmp/last-{tag}", user="root")
        )

    def ran(name: str, build_id: str) -> str:
        sbx = Sandbox.create(timeout=120, template=f"{name}:{build_id}")
        try:
            return sbx.commands.run(f"cat {marker}").stdout
        finally:
            sbx.kill()

    first = build(steps("a"), f"cache-a-{tag}")
    lines: list = []
    second = build(steps("a"), f"cache-b-{tag}", lines)
    logged = messages(lines)
    assert sum(m.startswith("CACHED [builder") for m in logged) == 2, logged
    assert [r.outcome for r in emulator.step_records if r.build_id == second.build_id] == [
        "inherited",
        "cached",
        "cached",
    ]
    third = build(steps("b"), f"cache-c-{tag}")
    assert [r.outcome for r in emulator.step_records if r.build_id == third.build_id] == [
        "inherited",
        "cached",
        "built",
    ]
    forced = Template.build(steps("a"), f"cache-d-{tag}", skip_cache=True)
    assert [r.outcome for r in emulator.step_records if r.build_id == forced.build_id] == [
        "inherited",
        "built",
        "built",
    ]
    value = ran(f"cache-a-{tag}", first.build_id)
    assert len(value) == 16
    assert ran(f"cache-b-{tag}", second.build_id) == value == ran(f"cache-c-{tag}", third.build_id)  # never re-run
    assert ran(f"cache-d-{tag}", forced.build_id) != value  # run again
    print(f"[emulator] steps executed {emulator.steps_executed}, cache hits {emulator.cache_hits}")


def test_a_failing_step_fails_the_build_with_e2bs_reason(sdk, emulator):
    tag = nonce()
    template = (
        Template()
        .from_template("code-interpreter-v1")
        .run_cmd(f"echo before-{tag}")
        .run_cmd("echo to stderr >&2; exit 3")
        .run_cmd(f"echo never-{tag}")
    )
    lines: list = []
    with pytest.raises(BuildException) as raised:
        Template.build(template, f"fails-{tag}", on_build_logs=lines.append)
    assert "failed to run command 'echo to stderr >&2; exit 3': exit status 3" in str(raised.value)
    build_id = next(b.build_id for b in emulator.builds if b.base_name == f"fails-{tag}")
    status = build_status_api.sync_detailed(
        emulator.template_id(f"fails-{tag}"), build_id, client=get_api_client(ConnectionConfig())
    ).parsed
    assert status.status.value == "error"
    assert (status.reason.message, status.reason.step) == (
        "failed to run command 'echo to stderr >&2; exit 3': exit status 3",
        "2",
    )
    logged = messages(lines)
    assert "[builder 2/3] [stderr]: to stderr" in logged
    assert not any(f"never-{tag}" in m and "[stdout]" in m for m in logged)  # the later step never ran
    assert any(m.startswith("Build failed: failed to run command") for m in logged)


def test_sandbox_commands_as_envd_runs_them(sdk):
    sbx = Sandbox.create("code-interpreter-v1", timeout=120)
    try:
        out, err = [], []
        r = sbx.commands.run(
            "echo out; echo err >&2; pwd; id -un; echo $A",
            envs={"A": "b"},
            cwd="/tmp",
            user="root",
            on_stdout=out.append,
            on_stderr=err.append,
        )
        assert (r.exit_code, r.stdout, r.stderr) == (0, "out\n/tmp\nroot\nb\n", "err\n")
        assert "".join(out) == r.stdout and err == ["err\n"]
        assert sbx.commands.run("id -un && pwd").stdout == "user\n/home/user\n"  # the template's user and workdir
        with pytest.raises(CommandExitException) as failed:
            sbx.commands.run("echo partial; exit 7")
        assert (failed.value.exit_code, failed.value.stdout) == (7, "partial\n")
        start = time.monotonic()
        with pytest.raises(Exception, match="timed out"):
            sbx.commands.run("sleep 61", timeout=1)
        assert time.monotonic() - start < 20
        wait_for(  # killed by the sandbox when its timeout passed, as envd does
            lambda: sbx.commands.run("pgrep -f 'sleep 6[1]' || echo none").stdout == "none\n",
            what="the timed-out command to be killed",
        )
        assert sbx.commands.run("sudo -n true && echo ok").stdout == "ok\n"
        assert sbx.commands.run("python3 --version").stdout.startswith("Python 3.13.")
    finally:
        sbx.kill()


def test_the_code_interpreter_is_stateful_per_sandbox(sdk):
    """The seed's check, through the real client: x = 42, then x + 8 gives 50; a second sandbox has its own state."""
    one, two = Sandbox.create("code-interpreter-v1", timeout=120), Sandbox.create("code-interpreter-v1", timeout=120)
    try:
        assert one.run_code("x = 42").error is None
        assert one.run_code("x + 8").text == "50"
        execution = one.run_code("print('hello'); x * 2")
        assert execution.logs.stdout == ["hello\n"] and execution.text == "84"
        missing = two.run_code("x")
        assert missing.error is not None and missing.error.name == "NameError"
        assert one.run_code("import os; os.getcwd()").text == "/home/user"
    finally:
        one.kill()
        two.kill()


def test_containers_go_with_their_sandboxes(docker_mode, monkeypatch):
    with E2BEmulator(api_key=KEY, docker=docker_mode) as emu:
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        owner = emu._docker.owner
        killed, kept = (
            Sandbox.create("code-interpreter-v1", timeout=120),
            Sandbox.create("code-interpreter-v1", timeout=120),
        )
        assert emu.container_of(killed.sandbox_id) is not None
        assert len(docker_mode.cli.containers(f"{OWNER_LABEL}={owner}")) == 2
        killed.kill()
        assert emu.container_of(killed.sandbox_id) is None
        assert len(docker_mode.cli.containers(f"{OWNER_LABEL}={owner}")) == 1
        assert kept.is_running() and not killed.is_running()
    assert docker_mode.cli.containers(f"{OWNER_LABEL}={owner}") == []  # the emulator stopped: none left


def test_start_and_ready_commands_run_as_e2b_runs_them(sdk, emulator):
    """From a local image: E2B's default user (with passwordless sudo) is made; the start command runs
    in the background and the build waits for the ready command; a sandbox runs it again."""
    tag = nonce()
    template = (
        Template()
        .from_image(DOCKER_BASE)
        .run_cmd(f"echo {tag} > /tmp/built", user="root")
        .set_start_cmd(f"sleep 1 && echo started-{tag} > /tmp/started && sleep infinity", wait_for_file("/tmp/started"))
    )
    lines: list = []
    info = build(template, f"start-{tag}", lines)
    logged = messages(lines)
    assert any(m.startswith(f"Running start command: sleep 1 && echo started-{tag}") for m in logged), logged
    assert "Template is ready" in logged
    assert any("emulator: the processes the start command leaves running are not kept" in m for m in logged)
    sbx = Sandbox.create(timeout=120, template=f"start-{tag}:{info.build_id}")
    try:
        assert sbx.commands.run("id -un && sudo -n true && echo sudo").stdout == "user\nsudo\n"
        assert sbx.commands.run("cat /tmp/built /tmp/started").stdout == f"{tag}\nstarted-{tag}\n"
        assert sbx.commands.run("pgrep -f 'sleep infinity' >/dev/null && echo running").stdout == "running\n"
    finally:
        sbx.kill()


def test_what_docker_cannot_express_is_named(sdk, emulator):
    """Registry credentials (the Docker mode never pulls) are named in one line of the log, not used
    silently; a build from an image the daemon does not have fails at its base, saying why."""
    tag = nonce()
    lines: list = []
    secret = f"pw-{tag}"
    build(
        Template().from_image(DOCKER_BASE, username="someone", password=secret).run_cmd(f"echo {tag}"),
        f"registry-{tag}",
        lines,
    )
    named = [e for e in lines if "fromImageRegistry" in e.message]
    assert [(e.level, e.message) for e in named] == [
        ("warn", "emulator: fromImageRegistry ignored (registry credentials: the Docker mode never pulls an image)")
    ]
    assert not any(secret in e.message for e in lines)
    with pytest.raises(BuildException, match="never pulls"):
        Template.build(Template().from_image(f"e2b-emulator/absent-{tag}:latest").run_cmd("true"), f"absent-{tag}")


def test_layers_are_images_keyed_by_e2bs_hash_chain(sdk, emulator):
    tag = nonce()
    info = build(Template().from_template("code-interpreter-v1").run_cmd(f"echo {tag}"), f"keys-{tag}")
    key = next(r.key for r in emulator.step_records if r.build_id == info.build_id and r.step == "1")
    image = emulator.image_of(info.build_id)
    assert image is not None and image == emulator._docker.cli.image_id(f"{LAYERS}:{key}")
