"""The offline commands through click's CliRunner: list, plan, render, -C, --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import DATA, ROOT, cli_runner, write
from e2b_matrix.cli import cli

EXPECTED = DATA / "expected"


def run(*args, project=None):
    argv = (["-C", str(project)] if project else ["-C", str(ROOT)]) + list(args)
    return cli_runner().invoke(cli, argv)


def test_list(project):
    r = run("list", project=project)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ALIAS", "LAYERS", "CPU", "MEMORY"]
    assert [line.split()[0] for line in lines[1:]] == ["full", "latest", "minimal", "pinned"]
    assert lines[2].split()[1:3] == ["nexus-sandbox-latest", "base,fuse,nexus"]
    data = json.loads(run("list", "--json", project=project).stdout)
    assert data[0]["name"] == "full" and data[0]["layers"] == ["base", "fuse", "nexus", "extra-tools"]


def test_plan_unbuilt_then_fresh_then_stale(project):
    r = run("plan", "--json", project=project)
    assert r.exit_code == 0, r.output
    items = {i["name"]: i for i in json.loads(r.stdout)["variants"]}
    assert {i["state"] for i in items.values()} == {"unbuilt"}
    write(project / "templates.lock", lock_for(items))
    items = {i["name"]: i for i in json.loads(run("plan", "--json", project=project).stdout)["variants"]}
    assert {i["state"] for i in items.values()} == {"fresh"}
    # change one param, one resource and one layer in three variants
    pinned = project / "variants/pinned.toml"
    pinned.write_text(pinned.read_text().replace('"0.5.6"', '"0.5.5"'))
    full = project / "variants/full.toml"
    full.write_text(full.read_text().replace("memory_mb = 4096", "memory_mb = 8192"))
    minimal = project / "variants/minimal.toml"
    minimal.write_text(minimal.read_text().replace('["base", "nexus"]', '["base", "nexus", "fuse"]'))
    r = run("plan", project=project)
    assert r.exit_code == 0
    out = r.stdout
    states = {line.split()[0]: line.split()[2] for line in out.split("\n\n")[0].splitlines()[1:]}
    assert states == {"full": "stale", "latest": "fresh", "minimal": "stale", "pinned": "stale"}
    assert "layer nexus 0.5.6 -> 0.5.5" in out
    assert "resource memory_mb 4096 -> 8192" in out
    assert "layer fuse added" in out
    only = json.loads(run("plan", "--json", "pinned", project=project).stdout)["variants"]
    assert [i["name"] for i in only] == ["pinned"] and only[0]["state"] == "stale"


def test_plan_json_shows_the_base_python_and_each_layer_version_a_build_records(project):
    items = {i["name"]: i for i in json.loads(run("plan", "--json", project=project).stdout)["variants"]}
    assert {n: (i["python"], i["layers"]) for n, i in items.items()} == {
        "full": ("3.13", {"base": "1", "fuse": "1", "nexus": "0.9.26", "extra-tools": "1"}),
        "latest": ("3.13", {"base": "1", "fuse": "1", "nexus": "0.9.26"}),  # 0.9.38+ need 3.14; 0.9.27 is yanked
        "minimal": ("3.13", {"base": "1", "nexus": "0.9.26"}),
        "pinned": ("3.13", {"base": "1", "fuse": "1", "nexus": "0.5.6"}),
    }
    # "latest" follows the base's Python: 3.11 cannot run 0.6+ (>=3.13) or 0.7-0.9 (>=3.12)
    r = run("plan", "--json", "latest", "--set", "base.python=3.11", project=project)
    assert [(i["python"], i["layers"]["nexus"]) for i in json.loads(r.stdout)["variants"]] == [("3.11", "0.5.6")]
    r = run("plan", "--json", "latest", "--backend", "docker", "--set", "base.image_python=3.12", project=project)
    assert [(i["python"], i["layers"]["nexus"]) for i in json.loads(r.stdout)["variants"]] == [("3.12", "0.9.26")]
    # the table says it too
    r = run("plan", "latest", project=project)
    assert r.stdout.splitlines()[0].split()[:6] == ["NAME", "ALIAS", "STATE", "PYTHON", "LAYERS", "WHY"]
    assert r.stdout.splitlines()[1].split()[:5] == [
        "latest",
        "nexus-sandbox-latest",
        "unbuilt",
        "3.13",
        "base@1,fuse@1,nexus@0.9.26",
    ]


def lock_for(items: dict) -> str:
    """A lock that matches the current plan (what a build would have written)."""
    import datetime as dt

    from e2b_matrix import workflow
    from e2b_matrix.lock import LockEntry, TemplateLock, dumps

    session = workflow.Session.open(workflow.Options(root=ROOT))
    specs = workflow.resolve_specs(session, workflow.load(session), TemplateLock())
    now = dt.datetime(2026, 11, 26, 17, 0, tzinfo=dt.UTC)
    return dumps(
        [
            LockEntry(
                alias=s.alias,
                variant=s.name,
                template_id=f"tpl-{s.name}",
                build_id=f"b-{s.name}",
                fingerprint=s.fingerprint,
                layers=s.layer_versions(),
                built_at=now,
                domain="e2b.app",
                inputs=s.inputs(),
            )
            for s in specs
        ]
    )


def files_hashes_shown(text: str) -> str:
    """The SDK's files hash of each COPY as a placeholder: it hashes the committed requirements file,
    which `compile --upgrade` rewrites (test_pins checks it follows the file)."""
    return re.sub(r'"filesHash": "[0-9a-f]{64}"', '"filesHash": "<sha256 of the copied file>"', text)


@pytest.mark.parametrize("name", ["latest", "full"])
def test_render_json_matches_expected_file(name):
    r = run("render", name, "--format", "json")
    assert r.exit_code == 0, r.output
    assert files_hashes_shown(r.stdout) == (EXPECTED / f"{name}.json").read_text()


@pytest.mark.parametrize("name", ["latest", "full"])
def test_render_dockerfile_matches_expected_file(name):
    r = run("render", name, "--format", "dockerfile")
    assert r.exit_code == 0, r.output
    assert r.stdout == (EXPECTED / f"{name}.Dockerfile").read_text()


def test_render_with_overrides_and_ca(project, tmp_path):
    cert = write(tmp_path / "corp.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    debian = ["--set", "base.image=debian-base:bookworm", "--set", "base.image_python=3.11"]
    r = run("compile", "minimal", "--backend", "docker", *debian, "--json", project=project)
    assert r.exit_code == 0, r.output
    (nexus,) = json.loads(r.stdout)  # another base, another question: its own file
    r = run("render", "minimal", "--format", "dockerfile", *debian, "--ca-cert", str(cert), project=project)
    assert r.exit_code == 0, r.output
    assert "FROM debian-base:bookworm" in r.stdout
    assert "COPY ca/ /usr/local/share/ca-certificates/e2b-matrix/" in r.stdout
    assert f"COPY --chown=root {nexus['path']} /opt/e2b-matrix/requirements/" in r.stdout
    assert "nexus-ai-fs==0.5.6 \\" in (project / nexus["path"]).read_text()  # Python 3.11 -> newest it can run


def test_dash_C_from_elsewhere(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("list", project=project).exit_code == 0


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["list"],
        ["plan"],
        ["render"],
        ["compile"],
        ["build"],
        ["build-all"],
        ["resolve"],
        ["lock"],
        ["lock", "show"],
        ["lock", "check"],
        ["verify"],
        ["promote"],
        ["rollback"],
        ["status"],
    ],
)
def test_every_command_has_one_line_help(command):
    r = cli_runner().invoke(cli, [*command, "--help"])
    assert r.exit_code == 0, r.output
    cmd = cli
    for name in command:
        cmd = cmd.commands[name]
    text = cmd.help.strip()
    assert (text and "\n" not in text and text.endswith(")")) or text.endswith(".")
    assert text in " ".join(r.stdout.split())


@pytest.mark.parametrize(
    "args", [["list"], ["plan"], ["render", "full", "--format", "dockerfile"], ["resolve", "latest"], ["lock", "show"]]
)
def test_offline_commands_never_import_e2b(project, args):
    from e2b_matrix.lock import dumps

    (project / "templates.lock").write_text(dumps([]) if args[0] != "resolve" else lock_for({}))
    asks_uv = args[0] in ("plan", "render")  # they ask uv for "latest"; the others never run it
    code = (
        "import sys\nfrom e2b_matrix.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'e2b' not in sys.modules, 'e2b was imported'\n"
        + ("" if asks_uv else "assert 'uv' not in sys.modules, 'uv was imported'\n")
        + "sys.exit(code)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "-C", str(project), *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=60,
    )
    assert p.returncode == 0, p.stderr


def test_version():
    r = cli_runner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "e2b-matrix" in r.stdout


def test_python_dash_m():
    p = subprocess.run([sys.executable, "-m", "e2b_matrix", "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "e2b-matrix" in p.stdout
