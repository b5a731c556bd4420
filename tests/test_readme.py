"""The docs' code sample for the Nexus server runs as written (docs/python-api.md), and the local
E2B runs by itself as docs/emulator.md says."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

from conftest import ROOT
from e2b_matrix.lock import LockEntry, dumps


def nexus_server_sample() -> str:
    text = (ROOT / "docs" / "python-api.md").read_text()
    section = text.split("## Using the lock from the Nexus server", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_nexus_server_sample_runs(tmp_path):
    when = dt.datetime(2026, 11, 26, 17, 0, tzinfo=dt.UTC)
    (tmp_path / "templates.lock").write_text(
        dumps(
            [
                LockEntry(
                    alias="nexus-sandbox-latest",
                    variant="latest",
                    template_id="tpl123",
                    build_id="b1",
                    fingerprint="sha256:" + "0" * 64,
                    layers={"base": "1", "fuse": "1", "nexus": "0.9.26"},
                    built_at=when,
                    domain="e2b.app",
                )
            ]
        )
    )
    code = nexus_server_sample() + "\nimport sys\nassert 'e2b' not in sys.modules and 'click' not in sys.modules\n"
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["tpl123", "tpl123", "0.9.26 2026-11-26T17:00:00+00:00", "nexus-sandbox-latest:b1"]
