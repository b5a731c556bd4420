"""Each distinct build step runs once per build-all (E2B's layer cache, modelled by the emulator).

The shipped variants share long prefixes (plan shows the tree): latest, pinned
and full start base, fuse, nexus; minimal starts base, nexus. Without sharing
every build runs the shared steps itself.
"""

from __future__ import annotations

import json

import pytest

from conftest import cli_runner, sigint_default, wait_for
from e2b_matrix.cli import cli
from e2b_matrix.runner import share_gates

ALIASES = {
    "full": "nexus-sandbox-full",
    "latest": "nexus-sandbox-latest",
    "minimal": "nexus-sandbox-minimal",
    "pinned": "nexus-sandbox-pinned",
}


@pytest.fixture
def steps(emu):
    """Step timing: apt and pip steps cost more than the rest; layers publish shortly after a step."""
    emu.set_step_cost("apt-get", 0.4)
    emu.set_step_cost("pip install", 0.3)
    return emu


def build_all(project, *args):
    r = cli_runner().invoke(cli, ["-C", str(project), "build-all", "--json", *args])
    return r, {x["name"]: x for x in json.loads(r.stdout)} if r.stdout.startswith("[") else {}


def executed(emu) -> list:
    return [r for r in emu.step_records if r.outcome == "built"]


def distinct(emu) -> set[str]:
    return {r.key for r in emu.step_records if r.step != "base"}


def test_the_plan_says_who_computes_what():
    from test_core import specs

    s = specs()
    gates = share_gates(s.values())
    # full has the most steps: it computes the whole shared prefix; the others wait for their part
    # (a pip step is two: the copy of its requirements file, and the hashed install)
    assert gates == {
        "nexus-sandbox-latest": ("nexus-sandbox-full", 10),  # base, user, workdir, 6 fuse, 2 nexus
        "nexus-sandbox-pinned": ("nexus-sandbox-full", 8),  # base, user, workdir, 6 fuse
        "nexus-sandbox-minimal": ("nexus-sandbox-full", 2),
    }  # base, user, workdir


def test_each_distinct_step_runs_once(project, steps):
    r, results = build_all(project)
    assert r.exit_code == 0, r.output
    assert {x["status"] for x in results.values()} == {"built"}
    ran = [rec.key for rec in executed(steps)]
    assert sorted(ran) == sorted(distinct(steps)), "every distinct step ran, and only once"
    builds = {b.name: b for b in steps.builds}
    full = builds[ALIASES["full"]]
    # a waiting variant starts once its prefix is published, before the owner's end
    assert builds[ALIASES["minimal"]].requested_at < full.finished_at
    assert builds[ALIASES["pinned"]].requested_at < full.finished_at
    shared = {rec.key for rec in steps.step_records if rec.build_id == full.build_id and rec.outcome == "built"}
    for name in ("latest", "pinned", "minimal"):
        theirs = [rec for rec in steps.step_records if rec.build_id == builds[ALIASES[name]].build_id]
        assert all(rec.outcome in ("cached", "inherited") for rec in theirs if rec.key in shared), name


# A layer reaches E2B's cache a second after its step: a build started less than that after
# another cannot find the other's layers there, however loaded the machine is.
@pytest.mark.parametrize("emu", [{"upload_delay": 1.0}], indirect=True)
def test_without_sharing_every_build_runs_its_prefix(project, steps):
    r, _results = build_all(project, "--no-share")
    assert r.exit_code == 0, r.output
    triggered = sorted(b.triggered_at for b in steps.builds)
    assert len(triggered) == 4 and triggered[-1] - triggered[0] < 0.5, "all at once"
    # no build waited for another's layers: each ran its shared prefix itself
    assert {rec.outcome for rec in steps.step_records if rec.step != "base"} == {"built"}
    assert len(executed(steps)) >= 2 * len(distinct(steps))


def test_if_the_owner_fails_the_waiting_builds_start_at_once_and_build_it_themselves(project, steps):
    steps.configure(ALIASES["full"], fail_at_step=0, fail_message="apt mirror down")
    r, results = build_all(project)
    assert r.exit_code == 1
    assert {n: x["status"] for n, x in results.items()} == {
        "full": "failed",
        "latest": "built",
        "minimal": "built",
        "pinned": "built",
    }
    assert "apt mirror down" in results["full"]["error"]
    builds = {b.name: b for b in steps.builds}
    assert builds[ALIASES["latest"]].requested_at >= builds[ALIASES["full"]].finished_at - 0.05


def test_jobs_one_never_deadlocks_and_still_shares(project, steps):
    r, _results = build_all(project, "--jobs", "1")
    assert r.exit_code == 0, r.output
    assert sorted(rec.key for rec in executed(steps)) == sorted(distinct(steps))
    order = [b.name for b in sorted(steps.builds, key=lambda b: b.requested_at)]
    assert order[0] == ALIASES["full"], "the owner of the shared steps is submitted first"


def test_fail_fast_stops_the_waiting_builds(project, steps):
    steps.configure(ALIASES["full"], fail_at_step=1)
    r, results = build_all(project, "--fail-fast")
    assert r.exit_code == 1
    assert results["full"]["status"] == "failed"
    # they waited for steps full never published; --fail-fast stops them before they start
    assert {n: results[n]["status"] for n in ("latest", "pinned", "minimal")} == dict.fromkeys(
        ("latest", "pinned", "minimal"), "skipped"
    )
    assert [b.name for b in steps.builds] == [ALIASES["full"]]


def test_force_builds_everything_at_once(project, steps):
    assert build_all(project)[0].exit_code == 0
    before = len(steps.builds)
    r, results = build_all(project, "--force")
    assert r.exit_code == 0 and {x["status"] for x in results.values()} == {"built"}
    requested = sorted(b.requested_at for b in steps.builds[before:])
    assert requested[-1] - requested[0] < 0.5, "skip_cache: nothing to share, nothing to wait for"


def test_ctrl_c_while_waiting_for_shared_steps_exits_130_and_keeps_what_finished(project, steps):
    import os
    import signal
    import subprocess
    import sys
    import time

    from e2b_matrix.lock import TemplateLock

    steps.set_step_cost("apt-get install -y git", 30)  # full's last step: the others are done long before
    p = subprocess.Popen(
        [sys.executable, "-m", "e2b_matrix", "-C", str(project), "build-all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        preexec_fn=sigint_default,
    )
    lock = project / "templates.lock"

    def three_landed() -> bool:
        assert p.poll() is None, p.communicate()
        return lock.exists() and len(TemplateLock.load(lock)) == 3

    wait_for(three_landed, timeout=30, what="the three builds that share full's steps to land")
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=20)
    assert p.returncode == 130, err
    assert time.monotonic() - sent < 10
    assert {e.variant for e in TemplateLock.load(lock)} == {"latest", "minimal", "pinned"}
