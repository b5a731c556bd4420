"""Against real E2B: run with E2B_MATRIX_LIVE_API_KEY set and `pytest -m live`.

E2B's cloud cannot be reached from the machine this project is developed on,
so these are skipped there; everything they exercise is also tested against
the emulator (tests/test_build.py) with the same SDK.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import cli_runner
from e2b_matrix.cli import cli
from e2b_matrix.lock import TemplateLock

pytestmark = pytest.mark.live
LIVE_KEY = os.environ.get("E2B_MATRIX_LIVE_API_KEY")


@pytest.fixture
def live_key(monkeypatch):
    if not LIVE_KEY:
        pytest.skip("set E2B_MATRIX_LIVE_API_KEY to build on real E2B")
    monkeypatch.setenv("E2B_API_KEY", LIVE_KEY)
    monkeypatch.delenv("E2B_MATRIX_UV_ARGS", raising=False)  # the real index, for "latest" and compile


def test_build_and_verify_minimal_on_e2b(project, live_key):
    r = cli_runner().invoke(cli, ["-C", str(project), "build", "minimal", "--verify", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["status"] == "built"
    entry = TemplateLock.load(project / "templates.lock").entry("minimal")
    assert entry.template_id and entry.domain
