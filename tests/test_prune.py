"""prune: what no one needs, listed with why; removed with --yes; never a build in the lock, its
history or behind a channel; a template E2B refuses to delete is reported and the run goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run, sigint_default, snapshot, wait_for, write
from e2b_matrix.lock import TemplateLock
from test_reliability import assert_refused

STALE = "requirements/nexus-0123456789ab.txt"


def lock(project: Path) -> TemplateLock:
    return TemplateLock.load(project / "templates.lock")


@pytest.fixture
def cluttered(project, emu):
    """minimal built twice (its first build in the history) and promoted, pinned built then its
    variant deleted (an orphan template), a stale requirements file, an inventory of no build."""
    for args in (
        ["build", "minimal"],
        ["build", "minimal", "--force"],
        ["promote", "minimal", "--channel", "stable"],
        ["build", "pinned"],
    ):
        assert run(project, *args).exit_code == 0
    (project / "variants" / "pinned.toml").unlink()
    write(project / STALE, "# a question no variant asks any more\n")
    minimal = lock(project).entry("minimal")
    for build_id in (minimal.build_id, minimal.history[0].build_id, "0f1c2d3e-dead-4000-8000-000000000000"):
        write(project / "templates.inventory" / minimal.alias / f"{build_id}.toml", "# an inventory\n")
    return project


def test_a_clean_project_is_clean(project, emu):
    assert run(project, "build", "minimal").exit_code == 0
    r = run(project, "prune")
    assert r.exit_code == 0 and r.stdout.strip() == "nothing to prune", r.output
    r = run(project, "prune", "--json")
    assert json.loads(r.stdout)["clean"] is True


def test_the_dry_run_lists_what_and_why_and_changes_nothing(cluttered, emu):
    before = snapshot(cluttered)
    emu.reset_counters()
    r = run(cluttered, "prune")
    assert r.exit_code == 1, r.output
    pinned = lock(cluttered).entry("pinned")
    assert r.stdout.splitlines() == [
        f"requirements file {STALE}: no variant's pip step names it, on any backend",
        "requirements file requirements/nexus-6d8c650bd2d9.txt: no variant's pip step names it, on any backend",
        "inventory templates.inventory/nexus-sandbox-minimal/0f1c2d3e-dead-4000-8000-000000000000.toml: build "
        "0f1c2d3e-dead-4000-8000-000000000000 of nexus-sandbox-minimal is in neither templates.lock nor its history",
        f"e2b template nexus-sandbox-pinned ({pinned.template_id}): its variant pinned is gone from variants/",
    ]
    assert "4 to remove: run again with --yes" in r.stderr
    assert snapshot(cluttered) == before and emu.count("delete_template") == 0


def test_prune_reads_each_lock_and_the_project_file_once(cluttered, emu, monkeypatch):
    """Each backend is made once and its lock read once, for the requirements and the leftovers alike;
    e2b-matrix.toml is read once, when the session opens."""
    from e2b_matrix import environments

    read: list[str] = []
    load_lock, load_envs = TemplateLock.load, environments.load
    monkeypatch.setattr(
        TemplateLock, "load", staticmethod(lambda path, **kw: read.append(Path(path).name) or load_lock(path, **kw))
    )
    monkeypatch.setattr(environments, "load", lambda root: read.append("e2b-matrix.toml") or load_envs(root))
    assert run(cluttered, "prune", "--yes").exit_code == 0
    assert sorted(read) == ["e2b-matrix.toml", "templates.docker.lock", "templates.lock"]


def test_yes_removes_it_all_and_keeps_every_build_the_lock_names(cluttered, emu):
    minimal, pinned = lock(cluttered).entry("minimal"), lock(cluttered).entry("pinned")
    r = run(cluttered, "prune", "--yes", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["applied"] and done["ok"] and all(row["removed"] for row in done["removals"])
    assert not (cluttered / STALE).exists() and not (cluttered / "requirements/nexus-6d8c650bd2d9.txt").exists()
    assert (cluttered / "requirements/nexus-741f12c2ce4b.txt").exists()  # minimal's: kept
    kept = sorted(p.stem for p in (cluttered / "templates.inventory" / minimal.alias).iterdir())
    assert kept == sorted([minimal.build_id, minimal.history[0].build_id])  # current and rollback target
    assert emu.count("delete_template", 204) == 1 and emu.template_id("nexus-sandbox-pinned") is None
    assert [e.alias for e in lock(cluttered)] == ["nexus-sandbox-minimal"]  # the pinned entry went with it
    assert lock(cluttered).entry("minimal").channels == {"stable": minimal.build_id}
    log = (cluttered / "logs" / "build.log").read_text()
    for target in (STALE, f"nexus-sandbox-pinned ({pinned.template_id})"):
        assert "prune: removed " in log and target in log
    assert run(cluttered, "prune").exit_code == 0  # clean now
    assert run(cluttered, "resolve", "minimal").exit_code == 0


def test_a_template_with_a_running_sandbox_is_reported_and_the_run_goes_on(cluttered, emu):
    from e2b import Sandbox

    pinned = lock(cluttered).entry("pinned")
    sandbox = Sandbox.create(pinned.reference, api_key=emu.api_key, api_url=emu.url)
    r = run(cluttered, "prune", "--yes")
    assert r.exit_code == 1, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("e2b template"))
    assert line.endswith(
        f"not removed: 400: cannot delete template '{pinned.template_id}' because there are running sandboxes using it"
    )
    assert not (cluttered / STALE).exists()  # the rest was removed
    assert lock(cluttered).entry("pinned") == pinned  # its entry stays with its template
    assert "ERROR prune: e2b template" in (cluttered / "logs" / "build.log").read_text()
    sandbox.kill()
    assert run(cluttered, "prune", "--yes").exit_code == 0 and "nexus-sandbox-pinned" not in lock(cluttered)


def test_an_interrupt_in_the_middle_leaves_a_valid_lock_and_prune_finishes_later(cluttered, emu):
    """SIGINT while E2B is slow to delete the template: the lock is whole, and a second prune ends it."""
    emu.inject("delete_template", delay=60)
    p = subprocess.Popen(
        [sys.executable, "-m", "e2b_matrix", "-C", str(cluttered), "prune", "--yes"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_default,
    )
    try:
        wait_for(lambda: not (cluttered / STALE).exists(), what="prune to remove the files first")
        wait_for(
            lambda: "prune: removed inventory" in (cluttered / "logs" / "build.log").read_text(),
            what="prune to reach the template",
        )
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, out + err
    assert "nexus-sandbox-pinned" in lock(cluttered)  # valid, and the entry of the template not yet deleted
    emu.clear_faults()
    assert run(cluttered, "prune", "--yes").exit_code == 0 and "nexus-sandbox-pinned" not in lock(cluttered)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["prune", "--env", "nope"], "--env: no environment 'nope'"),
        (["prune", "--yes", "--set", "x"], "No such option"),
    ],
)
def test_bad_input_to_prune_is_one_line_and_nothing_changes(cluttered, emu, args, expected):
    emu.reset_counters()
    if "No such option" in expected:  # click's own usage error: exit 2, nothing run
        before = snapshot(cluttered)
        r = run(cluttered, *args)
        assert r.exit_code == 2 and snapshot(cluttered) == before
        assert expected.lower() in r.stderr.lower()  # click 8.0 says "no such option"
        return
    assert_refused(cluttered, emu, args, expected)


def test_a_bad_variant_file_stops_prune_before_it_removes_anything(cluttered, emu):
    write(cluttered / "variants/bad.toml", "[variant\n")
    emu.reset_counters()
    assert_refused(cluttered, emu, ["prune", "--yes"], "variants/bad.toml: invalid TOML")
