"""resolve, lock show and lock check through the CLI."""

from __future__ import annotations

import json

from conftest import run, write
from e2b_matrix.lock import TemplateLock, dumps
from test_cli_offline import lock_for


def test_resolve_prints_only_the_id(project):
    write(project / "templates.lock", lock_for({}))
    r = run(project, "resolve", "latest")
    assert r.exit_code == 0 and r.stdout == "nexus-sandbox-latest:b-latest\n"  # the pinned build
    assert run(project, "resolve", "nexus-sandbox-pinned").stdout == "nexus-sandbox-pinned:b-pinned\n"
    r = run(project, "resolve", "latest", "--id")
    assert r.stdout == "tpl-latest\n" and "bare template ID means its default channel" in r.stderr
    assert run(project, "resolve", "latest", "--channel", "stable").stdout == "nexus-sandbox-latest:stable\n"
    r = run(project, "resolve", "latest", "--channel", "Bad Tag")
    assert (
        r.exit_code == 2
        and r.stderr.strip()
        == "e2b-matrix: error: --channel: 'Bad Tag' is not a valid E2B tag (must match ^[a-z0-9-_.]+$)"
    )


def test_resolve_answers_for_the_name_given_and_the_environment_only_for_the_default(project):
    write(project / "templates.lock", lock_for({}))
    env = {"E2B_TEMPLATE_ID": "from-env"}
    assert run(project, "resolve", "pinned", env=env).stdout == "nexus-sandbox-pinned:b-pinned\n"
    assert run(project, "resolve", "latest", env=env).stdout == "nexus-sandbox-latest:b-latest\n"
    assert run(project, "resolve", env=env).stdout == "from-env\n"  # the server's default template
    assert run(project, "resolve").stdout == "nexus-sandbox-latest:b-latest\n"
    r = run(project, "resolve", "nope", env=env)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.startswith("e2b-matrix: error: ")


def test_resolve_with_conflicting_flags_is_an_error(project):
    write(project / "templates.lock", lock_for({}))
    r = run(project, "resolve", "latest", "--id", "--channel", "stable")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == "e2b-matrix: error: --channel: --id and --channel ask for different things; give one"


def test_an_unknown_name_is_exit_2_with_the_same_prefix_in_every_command(project):
    write(project / "templates.lock", lock_for({}))
    for args in (
        ["resolve", "lates"],
        ["render", "lates"],
        ["plan", "lates"],
        ["build", "lates"],
        ["verify", "lates"],
        ["promote", "lates"],
        ["rollback", "lates"],
        ["status", "lates"],
        ["resolve", "lates", "--id"],
    ):
        r = run(project, *args, env={"E2B_API_KEY": "e2b_" + "0" * 40})
        err = r.stderr.strip().splitlines()
        assert r.exit_code == 2, (args, r.output)
        assert len(err) == 1 and err[0].startswith("e2b-matrix: error: ") and "'latest'" in err[0], (args, err)
        assert r.stdout == "", args


def test_lock_show(project):
    write(project / "templates.lock", lock_for({}))
    r = run(project, "lock", "show")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].split()[:4] == ["ALIAS", "VARIANT", "TEMPLATE", "ID"]
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["nexus-sandbox-latest"][1:4] == ["latest", "tpl-latest", "b-latest"]
    data = json.loads(run(project, "lock", "show", "--json").stdout)
    assert data["nexus-sandbox-latest"]["template_id"] == "tpl-latest"
    assert data["nexus-sandbox-latest"]["built_at"] == "2026-11-26T17:00:00Z"


def test_lock_check_is_a_ci_gate(project):
    r = run(project, "lock", "check")
    assert r.exit_code == 1  # no lock: every variant unbuilt
    assert "nexus-sandbox-latest: unbuilt: not in the lock" in r.stdout
    write(project / "templates.lock", lock_for({}))
    r = run(project, "lock", "check")
    assert r.exit_code == 0, r.output
    assert "4 variants, all fresh" in r.stdout
    # stale: a parameter changed
    pinned = project / "variants/pinned.toml"
    pinned.write_text(pinned.read_text().replace('"0.5.6"', '"0.5.5"'))
    r = run(project, "lock", "check")
    assert r.exit_code == 1
    layer, missing = r.stdout.strip().split("; ")  # another nexus, another requirements file to compile
    assert layer == "nexus-sandbox-pinned: stale: layer nexus 0.5.6 -> 0.5.5"
    assert missing.startswith("requirements/nexus-")
    assert missing.endswith(" is missing: run `e2b-matrix compile pinned`")
    # orphan: in the lock but no longer defined
    pinned.unlink()
    r = run(project, "lock", "check", "--json")
    assert r.exit_code == 1
    items = {i["alias"]: i for i in json.loads(r.stdout)["items"]}
    assert items["nexus-sandbox-pinned"]["state"] == "orphan"


def test_lock_check_for_the_docker_lock(project):
    r = run(project, "lock", "check", "--backend", "docker")
    assert r.exit_code == 1 and "unbuilt" in r.stdout
    write(project / "templates.docker.lock", dumps([]))
    assert len(TemplateLock.load(project / "templates.docker.lock")) == 0


def test_newer_schema_is_refused_in_one_line(project):
    write(project / "templates.lock", "schema = 3\n")
    for args in (["resolve", "latest"], ["lock", "show"], ["plan"]):
        r = run(project, *args)
        assert r.exit_code == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "schema 3" in lines[0] and "templates.lock" in lines[0], lines
