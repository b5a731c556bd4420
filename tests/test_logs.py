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


def test_close_detaches_and_a_new_run_appends(tmp_path):
    for i in range(2):
        logs = RunLogs(tmp_path / "logs")
        vlog = logs.variant("x")
        vlog.info("run %d", i)
        logs.close()
        assert vlog.handlers == []
    assert (tmp_path / "logs" / "x.log").read_text() == "run 0\nrun 1\n"


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
    code = ("import sys, e2b_matrix.logs as l; r = l.RunLogs(None); r.variant('x').info('y'); r.close(); "
            "print('concurrent_log_handler' in sys.modules)")
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
