"""A fast start: a command loads what it uses (#18).

`--version`, `list`, `plan` and `resolve` run in a real process (the CLI's
``main``), and ``sys.modules`` at its end must hold neither the build
machinery nor a backend the command does not use. ``sys.modules``, not
``-X importtime``: importtime misses what ``importlib.import_module`` loads,
as the backend registry does. What these cost is measured in bench/run.py
(version_ratio, resolve_ratio), not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# What only a build needs: the SDK, the live table, HTTP, the runner's threads, rotating log files, the emulator.
BUILD_MACHINERY = (
    "e2b",
    "rich",
    "httpx",
    "concurrent.futures",
    "concurrent_log_handler",
    "e2b_matrix.runner",
    "e2b_matrix.emulator",
)  # the emulator: only e2b-matrix emulate loads it
UV = ("uv",)  # plan asks uv for "latest"; nothing that resolves no variant finds it
E2B_BACKEND = ("e2b_matrix.backends.e2b",)
DOCKER_BACKEND = (
    "e2b_matrix.backends.docker",
    "e2b_matrix.backends.docker_discovery",
    "e2b_matrix.backends.docker_engine",
)
PROJECT = (
    "e2b_matrix.config",
    "e2b_matrix.layers",
    "e2b_matrix.resolve",
    "e2b_matrix.plan",
    "e2b_matrix.pins",
    "e2b_matrix.index",
)  # reading variants/ and resolving them

CHILD = """
import sys
from e2b_matrix.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
modules = sorted(sys.modules)
import json
with open(sys.argv[1], "w") as f:
    json.dump(modules, f)
sys.exit(code)
"""


def modules_of(tmp_path, *args) -> list[str]:
    """Every module a CLI process running ``args`` imported."""
    out = tmp_path / "modules.json"
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), *args], capture_output=True, text=True, env={**os.environ}, timeout=60
    )  # E2B_MATRIX_UV_ARGS: the tests' index
    assert p.returncode == 0, p.stderr
    return json.loads(out.read_text())


def among(modules: list[str], packages) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


@pytest.fixture
def locked(project):
    """The project with a lock (one built variant), for resolve."""
    from test_cli_offline import lock_for

    (project / "templates.lock").write_text(lock_for({}))
    return project


@pytest.mark.parametrize(
    "args, unused",
    [
        (
            ["--version"],
            BUILD_MACHINERY
            + UV
            + E2B_BACKEND
            + DOCKER_BACKEND
            + PROJECT
            + ("e2b_matrix.workflow", "e2b_matrix.lock", "e2b_matrix.settings", "e2b_matrix.logs", "attr", "attrs"),
        ),
        (["list"], BUILD_MACHINERY + UV + E2B_BACKEND + DOCKER_BACKEND + ("e2b_matrix.workflow", "e2b_matrix.lock")),
        (["plan", "--offline"], BUILD_MACHINERY + DOCKER_BACKEND),
        (["plan", "--backend", "docker"], BUILD_MACHINERY + E2B_BACKEND),  # uv answers "latest" from the tests' index
        (["resolve", "latest"], BUILD_MACHINERY + UV + DOCKER_BACKEND + PROJECT),
    ],
    ids=["version", "list", "plan", "plan-docker", "resolve"],
)
def test_a_command_imports_only_what_it_uses(locked, tmp_path, args, unused):
    modules = modules_of(tmp_path, "-C", str(locked), *args)
    assert among(modules, unused) == []


def test_the_check_sees_the_modules_a_command_uses(locked, tmp_path):
    """The same child sees what a command does import: the check above can fail."""
    assert {"e2b_matrix.backends.e2b", "e2b_matrix.lock.format"} <= set(
        modules_of(tmp_path, "-C", str(locked), "resolve", "latest")
    )
    assert set(DOCKER_BACKEND) <= set(modules_of(tmp_path, "-C", str(locked), "plan", "--backend", "docker"))
