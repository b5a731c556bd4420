"""Releases through the real SDK against the emulator: pins, channels, rollback, drift.

Build (pinned, no channel moved) -> promote -> rebuild (the lock moves, channels
do not) -> rollback (lock and channels back) -> a channel moved behind the
tool's back (status exit 1 naming it).
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import run, write
from e2b_matrix.lock import TemplateLock


def lock(project) -> TemplateLock:
    return TemplateLock.load(project / "templates.lock")


def tags(alias: str) -> dict[str, str]:
    """Where E2B's tags of the alias point (through the SDK)."""
    from e2b import Template

    return {t.tag: t.build_id for t in Template.get_tags(alias)}


def sandbox_build(emu, reference: str) -> str:
    """The build a sandbox created from ``reference`` runs (through the SDK, as the Nexus server does)."""
    from e2b import Sandbox

    Sandbox.create(reference).kill()
    return emu.sandboxes[-1].build_id


def make_stale(project, name: str) -> None:
    f = project / f"variants/{name}.toml"
    f.write_text(f.read_text().replace("cpu_count = 2", "cpu_count = 4"))


def test_builds_carry_their_own_tag_and_never_move_default(project, emu):
    write(
        project / "variants/tagged.toml",
        '[variant]\nname = "tagged"\nalias = "nexus-tagged"\nlayers = ["base"]\ntags = ["edge"]\n',
    )
    r = run(project, "build-all", "--json")
    assert r.exit_code == 0, r.output
    for b in emu.builds:
        assert b.tags and "default" not in b.tags, b.tags
        assert [t for t in b.tags if t.startswith("fp-")], b.tags
    assert next(b.tags for b in emu.builds if b.name == "nexus-tagged")[1:] == ["edge"]
    entry = lock(project).entry("latest")
    assert "default" not in tags(entry.alias)  # nothing was promoted: the bare alias means nothing yet
    assert run(project, "resolve", "latest").stdout == f"{entry.alias}:{entry.build_id}\n"
    assert sandbox_build(emu, run(project, "resolve", "latest").stdout.strip()) == entry.build_id


def test_promote_rebuild_rollback_and_drift(project, emu):
    assert run(project, "build-all").exit_code == 0
    first = lock(project).entry("latest")

    # promote: a channel points at the locked build, on E2B and in the lock
    r = run(project, "promote", "latest", "pinned", "--channel", "stable")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"nexus-sandbox-latest: stable -> {first.build_id}",
        f"nexus-sandbox-pinned: stable -> {lock(project).entry('pinned').build_id}",
    ]
    assert tags(first.alias)["stable"] == first.build_id
    assert lock(project).entry("latest").channels == {"stable": first.build_id}
    assert run(project, "promote", "latest").exit_code == 0  # default channel: what a bare alias means
    assert sandbox_build(emu, first.alias) == first.build_id
    assert run(project, "resolve", "latest", "--channel", "stable").stdout == "nexus-sandbox-latest:stable\n"
    assert sandbox_build(emu, "nexus-sandbox-latest:stable") == first.build_id
    assert run(project, "status").exit_code == 0

    # rebuild: the lock moves to the new build, channels stay where they were
    make_stale(project, "latest")
    r = run(project, "build", "latest", "--json")
    assert r.exit_code == 0, r.output
    second = lock(project).entry("latest")
    assert second.build_id != first.build_id and second.history[0].build_id == first.build_id
    assert second.channels == {"stable": first.build_id, "default": first.build_id}
    assert tags(first.alias)["stable"] == tags(first.alias)["default"] == first.build_id
    assert sandbox_build(emu, first.alias) == first.build_id  # the bare alias did not move
    assert sandbox_build(emu, second.reference) == second.build_id  # the pin is the new build
    assert run(project, "status", "latest").exit_code == 0

    # promote the new build to staging only, then roll back: staging follows, stable stays
    assert run(project, "promote", "latest", "--channel", "staging").exit_code == 0
    start = time.monotonic()
    r = run(project, "rollback", "latest")
    took = time.monotonic() - start
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == (
        f"nexus-sandbox-latest: {second.build_id} -> {first.build_id} (channels moved back: staging)"
    )
    back = lock(project).entry("latest")
    assert (back.build_id, back.fingerprint) == (first.build_id, first.fingerprint)
    assert back.channels == {"stable": first.build_id, "default": first.build_id, "staging": first.build_id}
    assert tags(first.alias)["staging"] == first.build_id
    assert run(project, "resolve", "latest").stdout.strip() == first.reference
    assert took < 5, "a rollback is no rebuild"
    assert len([b for b in emu.builds if b.name == "nexus-sandbox-latest"]) == 2

    # nothing left to roll back to: exit 1, one line
    r = run(project, "rollback", "latest")
    assert r.exit_code == 1 and r.stderr.strip().splitlines() == [
        "e2b-matrix: error: nexus-sandbox-latest has no previous build to roll back to"
    ]

    # a channel moved behind the tool's back: drift, named
    from e2b import Template

    Template.assign_tags(f"nexus-sandbox-latest:{second.build_id}", ["stable"])
    r = run(project, "status", "--json")
    assert r.exit_code == 1
    drift = {d["alias"]: d for d in json.loads(r.stdout)}
    assert drift["nexus-sandbox-latest"]["state"] == "channel moved"
    assert drift["nexus-sandbox-latest"]["details"] == [
        f"stable points at {second.build_id}; the lock says {first.build_id}"
    ]
    assert drift["nexus-sandbox-pinned"]["state"] == "in sync"
    r = run(project, "lock", "check", "--remote")
    assert r.exit_code == 1 and "nexus-sandbox-latest: channel moved: stable points at" in r.stdout
    r = run(project, "lock", "check")  # offline: no drift, only that the rolled-back entry is stale
    assert r.exit_code == 1 and "channel moved" not in r.stdout and "nexus-sandbox-latest: stale" in r.stdout


def test_build_promote_promotes_what_built_and_what_was_fresh_never_a_failure(project, emu):
    assert run(project, "build", "minimal").exit_code == 0
    make_stale(project, "pinned")
    emu.configure("nexus-sandbox-pinned", fail_at_step=1)
    r = run(project, "build", "minimal", "latest", "pinned", "--promote", "staging", "--json")
    assert r.exit_code == 1
    results = {x["name"]: x["status"] for x in json.loads(r.stdout)}
    assert results == {"minimal": "fresh", "latest": "built", "pinned": "failed"}
    for name in ("minimal", "latest"):
        e = lock(project).entry(name)
        assert e.channels == {"staging": e.build_id} and tags(e.alias)["staging"] == e.build_id
    assert "nexus-sandbox-pinned" not in lock(project).entries


def test_a_failed_check_is_never_promoted(project, emu, monkeypatch):
    import e2b_code_interpreter

    from test_verify import FakeSandbox

    monkeypatch.setattr(
        e2b_code_interpreter.Sandbox,
        "create",
        staticmethod(lambda template, **kw: FakeSandbox(template, fail=("fuse.conf",))),
    )
    r = run(project, "build", "latest", "minimal", "--verify", "--promote", "staging", "--json")
    assert r.exit_code == 1
    assert {x["name"]: x["status"] for x in json.loads(r.stdout)} == {"latest": "failed", "minimal": "built"}
    assert "staging" not in tags("nexus-sandbox-latest")  # its build ran, its check failed: not promoted
    assert lock(project).entry("minimal").channels == {"staging": lock(project).entry("minimal").build_id}


def test_a_build_gone_from_e2b_is_drift(project, emu):
    assert run(project, "build", "minimal").exit_code == 0
    entry = lock(project).entry("minimal")
    text = (project / "templates.lock").read_text()
    gone = "0f1c2d3e-0000-4000-8000-00000000dead"
    (project / "templates.lock").write_text(text.replace(entry.build_id, gone))
    r = run(project, "status", "minimal", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)[0]["details"] == [f"build {gone} is gone from E2B"]


def test_a_template_gone_from_e2b_is_drift(project, emu):
    assert run(project, "build", "minimal").exit_code == 0
    text = (project / "templates.lock").read_text()
    entry = lock(project).entry("minimal")
    (project / "templates.lock").write_text(text.replace(entry.template_id, "zzzzzzzzzzzzzzzzzzzz"))
    r = run(project, "status", "minimal")
    assert r.exit_code == 1 and "gone" in r.stdout and "template zzzzzzzzzzzzzzzzzzzz is gone" in r.stdout


@pytest.mark.parametrize("channel", ["Bad Tag", "0f1c2d3e-0000-4000-8000-000000000001", "a\nb"])
def test_a_bad_channel_is_refused_before_any_request(project, emu, channel):
    assert run(project, "build", "minimal").exit_code == 0
    emu.reset_counters()
    for args in (["promote", "minimal", "--channel", channel], ["build", "minimal", "--promote", channel]):
        r = run(project, *args)
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert emu.request_count == 0


def test_a_promote_that_fails_at_the_third_alias_keeps_the_first_two_recorded(project, emu, monkeypatch):
    """Each alias is moved on E2B, then recorded at once: when the third move fails, the first two are
    in the lock, the third is not, and `status` finds E2B and the lock agreeing on all three."""
    from e2b_matrix.backends.e2b import E2BBackend

    assert run(project, "build", "minimal", "pinned", "latest").exit_code == 0
    real_point, moved = E2BBackend.point, []

    def point(self, entry, channel, build_id):
        if len(moved) == 2:  # E2B refuses the third tag request
            emu.inject("assign_tags", 400, body={"code": 400, "message": "tag request refused"})
        real_point(self, entry, channel, build_id)
        moved.append(entry.variant)

    monkeypatch.setattr(E2BBackend, "point", point)
    r = run(project, "promote", "minimal", "pinned", "latest", "--channel", "stable")
    assert r.exit_code == 1 and "tag request refused" in r.stderr, r.output
    assert moved == ["minimal", "pinned"]
    after = lock(project)
    assert [after.entry(n).channels.get("stable") for n in ("minimal", "pinned", "latest")] == [
        after.entry("minimal").build_id,
        after.entry("pinned").build_id,
        None,
    ]
    for name in ("minimal", "pinned", "latest"):
        assert tags(after.entry(name).alias).get("stable") == after.entry(name).channels.get("stable")
    r = run(project, "status", "minimal", "pinned", "latest")
    assert r.exit_code == 0, r.output  # no drift: E2B's tags are what the lock records


def counting_lock_reads(monkeypatch) -> list[str]:
    """Every TemplateLock.load from now on, by path."""
    read: list[str] = []
    load = TemplateLock.load
    monkeypatch.setattr(
        TemplateLock, "load", staticmethod(lambda path, **kw: read.append(str(path)) or load(path, **kw))
    )
    return read


def test_lock_check_remote_reads_the_lock_once(project, emu, monkeypatch):
    """The drift lock check --remote asks for is of the lock it checked, not of the lock read again."""
    assert run(project, "build", "minimal").exit_code == 0
    read = counting_lock_reads(monkeypatch)
    assert run(project, "lock", "check", "--remote").exit_code == 1  # the other variants are unbuilt
    assert read == [str(project / "templates.lock")]


def test_promote_reads_the_lock_once(project, emu, monkeypatch):
    """The diff promote shows for a moved channel is of the entry the move recorded: promote reads
    templates.lock once, however many channels it moves."""
    for args in (["build", "minimal"], ["promote", "minimal", "--channel", "stable"], ["build", "minimal", "--force"]):
        assert run(project, *args).exit_code == 0
    read = counting_lock_reads(monkeypatch)
    assert run(project, "promote", "minimal", "--channel", "stable").exit_code == 0
    assert read == [str(project / "templates.lock")]
