"""logs.py: files only when something is logged, a switch to turn them off, redaction."""

from __future__ import annotations

import subprocess
import sys

import pytest

from e2b_matrix.errors import ConfigError
from e2b_matrix.logs import RunLogs
from e2b_matrix.secrets import Redactor
from e2b_matrix.settings import Settings

KEY = "e2b_" + "0123456789abcdef" * 2
NO_LOG_FILES_ENV = "E2B_MATRIX_NO_LOG_FILES"


def test_files_are_opened_at_the_first_record_and_redacted(tmp_path):
    logs = RunLogs(tmp_path / "logs", Redactor([KEY]))
    try:
        vlog = logs.variant("nexus-sandbox-a")
        assert not (tmp_path / "logs").exists()  # nothing logged yet: no file, no folder
        vlog.info("line 1\nline 2 with %s", KEY)
        logs.run.info("[a] built %s", "T1")
        logs.run.error("[b] failed: key=%s", KEY)
    finally:
        logs.close()
    variant = (tmp_path / "logs" / "nexus-sandbox-a.log").read_text()
    assert variant == "line 1\nline 2 with ***\n"
    run = (tmp_path / "logs" / "build.log").read_text()
    assert "INFO [a] built T1" in run and "ERROR [b] failed: key=***" in run and KEY not in run


def test_close_ends_the_files_and_a_new_run_appends(tmp_path):
    import logging

    for i in range(2):
        logs = RunLogs(tmp_path / "logs")
        vlog = logs.variant("x")
        vlog.info("run %d", i)
        logs.close()
        vlog.info("after close %d", i)  # a closed run's logger writes nothing
    assert (tmp_path / "logs" / "x.log").read_text() == "run 0\nrun 1\n"
    assert "e2b_matrix.variant.x" not in logging.Logger.manager.loggerDict  # the process's tree is untouched


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_the_environment_turns_files_off(value):
    assert Settings.from_env({NO_LOG_FILES_ENV: value}).log_files is False


@pytest.mark.parametrize("value", ["", "0", "false", "no", "OFF"])
def test_other_values_keep_files_on(value):
    assert Settings.from_env({NO_LOG_FILES_ENV: value}).log_files is True


@pytest.mark.parametrize("value", ["2", "yes please", "nein"])
def test_a_value_that_is_neither_is_an_error_naming_the_variable(value):
    with pytest.raises(ConfigError) as e:
        Settings.from_env({NO_LOG_FILES_ENV: value})
    assert str(e.value).startswith(f"{NO_LOG_FILES_ENV}: expected one of 1, true, yes, on, 0, false, no, off")


def test_no_directory_means_no_files(tmp_path):
    logs = RunLogs(None)
    logs.variant("x").info("a line")
    logs.close()
    assert list(tmp_path.iterdir()) == []


def test_importing_logs_does_not_import_the_file_handler():
    code = (
        "import sys, e2b_matrix.logs as l; r = l.RunLogs(None); r.variant('x').info('y'); r.close(); "
        "print('concurrent_log_handler' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_run_and_variant_logs_stay_off_the_console(tmp_path):
    """The console is the reporter's: a record passed up to a console handler tears the live table."""
    from e2b_matrix.logs import RunLogs

    logs = RunLogs(tmp_path / "logs")
    try:
        assert logs.run.propagate is False
        assert logs.variant("x").propagate is False
    finally:
        logs.close()


def test_a_second_run_writes_its_file_even_with_foreign_handlers(tmp_path):
    """A host application (or pytest) may hang its own handler on the variant logger."""
    import logging

    from e2b_matrix.logs import RunLogs

    foreign = logging.NullHandler()
    logging.getLogger("e2b_matrix.variant.y").addHandler(foreign)
    try:
        for i in range(2):
            logs = RunLogs(tmp_path / "logs")
            logs.variant("y").info("run %d", i)
            logs.variant("y").info("again %d", i)  # asking twice attaches once
            logs.close()
        assert (tmp_path / "logs" / "y.log").read_text() == "run 0\nagain 0\nrun 1\nagain 1\n"
    finally:
        logging.getLogger("e2b_matrix.variant.y").removeHandler(foreign)


# -- promote and rollback in the run log ------------------------------------------------------


def write_latest(project, **changes) -> None:
    """The fake backend's lock: latest at build b2 with b1 before it, the channel ``old`` at b1."""
    import datetime as dt

    from conftest import fp
    from e2b_matrix.lock import store
    from e2b_matrix.lock.model import Build, LockEntry

    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    fields = {
        "alias": "nexus-sandbox-latest",
        "variant": "latest",
        "template_id": "fake-latest",
        "build_id": "b2",
        "fingerprint": fp(2),
        "layers": {"base": "1"},
        "built_at": at,
        "channels": {"old": "b1"},
        "history": [Build("b1", fp(1), at, {"base": "1"})],
    }
    store.update_lock(project / "templates.fake.lock", [LockEntry(**{**fields, **changes})])


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A project on the fake backend (tests/fake_backend.py) whose lock holds latest (``write_latest``)."""
    import fake_backend
    from e2b_matrix import backends

    monkeypatch.setitem(backends.REGISTRY, "fake", fake_backend.REGISTERED)
    fake_backend.CHANNELS.clear()
    for build_id in ("b1", "b2"):  # the builds the lock names are on the backend
        monkeypatch.setitem(fake_backend.BUILT, build_id, {"alias": "nexus-sandbox-latest"})
    write_latest(tmp_path)
    return tmp_path


def cli(project, *args, env=None):
    from conftest import cli_runner
    from e2b_matrix.cli import cli as command

    return cli_runner().invoke(command, ["-C", str(project), *args, "--backend", "fake"], env=env)


def run_log(project) -> list[str]:
    import re

    return [
        re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ", "", line)
        for line in (project / "logs" / "build.log").read_text().splitlines()
    ]


def test_promote_and_rollback_are_in_the_run_log(fake):
    import fake_backend

    steps = [
        (["promote", "latest", "--channel", "stable"], "nexus-sandbox-latest: stable -> b2"),
        (["promote", "latest", "--channel", "stable"], "nexus-sandbox-latest: stable -> b2"),
        (["promote", "latest", "--channel", "old"], "nexus-sandbox-latest: old -> b2"),
        (["rollback", "latest"], "nexus-sandbox-latest: b2 -> b1 (channels moved back: old, stable)"),
        (["promote", "nexus-sandbox-latest", "--channel", "edge"], "nexus-sandbox-latest: edge -> b1"),
    ]
    for args, said in steps:
        r = cli(fake, *args)
        assert (r.exit_code, r.stdout, r.stderr) == (0, said + "\n", ""), r.output
    assert {("nexus-sandbox-latest", ch): "b1" for ch in ("stable", "old", "edge")} == fake_backend.CHANNELS
    assert run_log(fake) == [
        "INFO promote: nexus-sandbox-latest: stable -> b2 (new)",
        "INFO promote: nexus-sandbox-latest: stable -> b2 (already there)",
        "INFO promote: nexus-sandbox-latest: old -> b2 (was b1)",
        "INFO rollback: nexus-sandbox-latest: b2 -> b1 (channels moved back: old, stable)",
        "INFO promote: nexus-sandbox-latest: edge -> b1 (new)",
    ]


def test_a_refused_promote_and_rollback_are_in_the_run_log_and_the_lock_stays(fake, monkeypatch):
    import fake_backend
    from e2b_matrix.errors import BuildError

    def refuse(self, entry, channel, build_id):
        raise BuildError(f"E2B refused the tag {channel} (key {KEY})")

    monkeypatch.setattr(fake_backend.FakeBackend, "point", refuse)
    write_latest(fake, channels={"stable": "b2"})  # at the current build: rollback moves it back
    locked = (fake / "templates.fake.lock").read_bytes()
    for args in (["promote", "latest", "--channel", "edge"], ["rollback", "latest"]):
        r = cli(fake, *args, env={"E2B_API_KEY": KEY})
        assert (
            r.exit_code == 1
            and r.stderr
            == "e2b-matrix: error: E2B refused the tag "
            + ("edge" if args[0] == "promote" else "stable")
            + " (key ***)\n"
        ), r.output
    assert (fake / "templates.fake.lock").read_bytes() == locked
    assert run_log(fake) == [
        "ERROR promote: nexus-sandbox-latest failed: E2B refused the tag edge (key ***)",
        "ERROR rollback: nexus-sandbox-latest failed: E2B refused the tag stable (key ***)",
    ]


def test_promote_and_rollback_work_without_log_files(fake):
    for args in (["promote", "latest"], ["rollback", "latest"]):
        r = cli(fake, *args, env={NO_LOG_FILES_ENV: "1"})
        assert r.exit_code == 0 and r.stderr == "", r.output
    assert not (fake / "logs").exists()


def test_promote_and_rollback_work_when_the_logs_folder_cannot_be_written(fake):
    (fake / "logs").write_text("a file where the folder goes")
    for args in (["promote", "latest"], ["rollback", "latest"]):
        r = cli(fake, *args)
        assert r.exit_code == 0, r.output
        assert r.stderr == (
            f"WARNING e2b_matrix.session: {fake / 'logs'}: exists and is not a folder; writing no log files\n"
        )
    assert (fake / "logs").read_text() == "a file where the folder goes"
    from e2b_matrix.lock import TemplateLock

    assert TemplateLock.load(fake / "templates.fake.lock").entry("latest").build_id == "b1"


def test_two_runs_at_once_in_one_process_each_log_only_their_own(tmp_path, wheels):
    """Loggers, caches and streams belong to a run: two library runs in one process, against two
    projects and two E2B emulators, each write only their own run log and variant logs."""
    import shutil
    import threading

    from conftest import KEY, ROOT, uv_args
    from e2b_matrix import workflow
    from e2b_matrix.emulator import E2BEmulator
    from e2b_matrix.settings import Settings

    projects = {}
    for name in ("one", "two"):
        root = tmp_path / name
        shutil.copytree(ROOT / "variants", root / "variants")
        shutil.copytree(ROOT / "requirements", root / "requirements")
        projects[name] = root
    chosen = {"one": "minimal", "two": "pinned"}
    summaries: dict[str, workflow.Summary] = {}
    failures: dict[str, BaseException] = {}
    with E2BEmulator(api_key=KEY) as a, E2BEmulator(api_key=KEY) as b:
        emulators = {"one": a, "two": b}

        def build(name: str) -> None:
            env = {
                "E2B_API_KEY": KEY,
                "E2B_API_URL": emulators[name].url,
                "HOME": str(tmp_path),
                "E2B_MATRIX_UV_ARGS": uv_args(wheels),
            }
            try:
                summaries[name] = workflow.build(
                    workflow.Options(root=projects[name], names=(chosen[name],)), Settings.from_env(env)
                )
            except BaseException:  # seen by the assertion below, not lost in the thread
                import traceback

                failures[name] = traceback.format_exc()

        threads = [threading.Thread(target=build, args=(n,)) for n in projects]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not failures, failures
    assert {n: s.exit_code for n, s in summaries.items()} == {"one": 0, "two": 0}
    for name, root in projects.items():
        other = chosen["two" if name == "one" else "one"]
        run_log = (root / "logs" / "build.log").read_text()
        assert f"[{chosen[name]}] built" in run_log and f"[{other}]" not in run_log, run_log
        assert sorted(p.name for p in (root / "logs").glob("*.log")) == [
            "build.log",
            f"nexus-sandbox-{chosen[name]}.log",
        ]
