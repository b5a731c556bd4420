"""What a build holds: recorded by verify beside the lock, compared by diff, shown by promote."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest

from conftest import run, snapshot, write
from e2b_matrix import inventory
from e2b_matrix.errors import ConfigError
from e2b_matrix.verify import CheckResult, VerifyReport
from test_build import lock_of
from test_reliability import assert_refused
from test_verify import FakeSandbox

WHEN = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def inv(build_id="b1", python="3.13.2", pip=None, apt=None, alias="nexus-sandbox-pinned"):
    return inventory.Inventory(
        alias=alias,
        build_id=build_id,
        recorded_at=WHEN,
        python=python,
        pip={"nexus-ai-fs": "0.5.6", "httpx": "0.27.0"} if pip is None else pip,
        apt={"bash": "5.2.15-2+b7"} if apt is None else apt,
    )


# -- the model and the file -----------------------------------------------------------


def test_diff_lists_added_removed_and_changed_by_kind_then_name():
    old = inv(pip={"nexus-ai-fs": "0.5.5", "httpx": "0.27.0", "gone": "1.0"}, python="3.13.1")
    new = inv(pip={"nexus-ai-fs": "0.5.6", "httpx": "0.27.0", "fresh": "2.0"}, apt={"bash": "5.2.15-2+b7", "jq": "1.6"})
    assert [c.line() for c in inventory.diff(old, new)] == [
        "~ python python 3.13.1 -> 3.13.2",
        "+ pip fresh 2.0",
        "- pip gone 1.0",
        "~ pip nexus-ai-fs 0.5.5 -> 0.5.6",
        "+ apt jq 1.6",
    ]
    assert inventory.diff(new, new) == []


def test_an_inventory_is_saved_beside_the_lock_and_read_back(tmp_path):
    lock = tmp_path / "templates.lock"
    path = inventory.save(lock, inv())
    assert path == tmp_path / "templates.inventory" / "nexus-sandbox-pinned" / "b1.toml"
    assert inventory.load(lock, "nexus-sandbox-pinned", "b1") == inv()
    assert inventory.load(lock, "nexus-sandbox-pinned", "b2") is None
    assert inventory.folder(tmp_path / "templates.docker.lock") == tmp_path / "templates.docker.inventory"


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda t: t.replace('nexus-ai-fs = "0.5.6"', 'nexus-ai-fs = "0.5.6; curl x | sh"'), "pip.nexus-ai-fs: "),
        (lambda t: t.replace("[apt]", '[apt]\n"bad name" = "1"'), "apt"),
        (lambda t: t + "\n[extra]\nx = 1\n", "extra: unknown key"),
        (lambda t: t.replace("schema = 1", "schema = 9"), "schema"),
        (lambda t: t.replace('build_id = "b1"', 'build_id = "b2"'), "holds nexus-sandbox-pinned build b2"),
        (lambda t: t.replace("[pip]", "[pip]\n" + "x = " + "[" * 50 + "]" * 50), "nested"),
    ],
)
def test_an_inventory_file_is_input_too(tmp_path, edit, key):
    lock = tmp_path / "templates.lock"
    path = inventory.save(lock, inv())
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as info:
        inventory.load(lock, "nexus-sandbox-pinned", "b1")
    assert str(info.value).startswith(str(path)) and key in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda t: t.replace('[pip]\nhttpx = "0.27.0"\nnexus-ai-fs = "0.5.6"', 'pip = "x"'),
            "pip: expected a table, got a string",
        ),
        (lambda t: t.replace('httpx = "0.27.0"', "httpx = 27"), "pip.httpx: expected a string, got an integer"),
        (lambda t: t.replace('alias = "nexus-sandbox-pinned"\n', ""), "alias: missing"),
        (lambda t: t.replace("python = ", "pyton = "), "pyton: unknown key; did you mean 'python'?"),
        (lambda t: t.replace("schema = 1\n", ""), "schema: missing"),
        (
            lambda t: t.replace("recorded_at = 2026-12-01 12:00:00+00:00", "recorded_at = 2026-12-01 12:00:00"),
            "recorded_at: expected a date-time with a timezone (e.g. 2026-11-26T17:00:00Z), got a local date-time",
        ),
    ],
)
def test_an_inventory_file_is_read_as_the_lock_is(tmp_path, edit, message):
    """The lock's table reader (files.Table): each bad key named, with what it should be."""
    lock = tmp_path / "templates.lock"
    path = inventory.save(lock, inv())
    text = path.read_text()
    assert edit(text) != text
    path.write_text(edit(text))
    with pytest.raises(ConfigError) as info:
        inventory.load(lock, "nexus-sandbox-pinned", "b1")
    assert str(info.value).startswith(f"{path}: {message}")


def test_from_report_reads_pip_json_and_dpkg_lines():
    report = VerifyReport(
        [
            CheckResult("python3 --version", "base", True, fact="python", found="3.13.2"),
            CheckResult(
                "pip packages",
                "base",
                True,
                fact="pip",
                output=json.dumps([{"name": "Jupyter_Server", "version": "2.14.2"}]),
            ),
            CheckResult("apt packages", "base", True, fact="apt", output="bash\t5.2\nlibc6\t2.36-9+deb12u4\n\n"),
        ]
    )
    got = inventory.from_report("a", "b", report)
    assert (got.python, dict(got.pip), dict(got.apt)) == (
        "3.13.2",
        {"jupyter-server": "2.14.2"},
        {"bash": "5.2", "libc6": "2.36-9+deb12u4"},
    )


# -- through the CLI, on E2B with a stand-in sandbox -----------------------------------------


@pytest.fixture
def sandboxes(monkeypatch):
    """What the next sandboxes hold: set ``state["pip"]`` before a verify."""
    import e2b_code_interpreter

    # nexus-ai-fs at the version "latest" pins here (the verify checks what pip installed)
    state = {"pip": {"nexus-ai-fs": "0.9.26", "httpx": "0.27.0", "anyio": "4.4.0"}, "disk": 800 * 1024}
    monkeypatch.setattr(
        e2b_code_interpreter.Sandbox,
        "create",
        staticmethod(lambda template, **kw: FakeSandbox(template, pip=dict(state["pip"]), disk_kib=state["disk"])),
    )
    return state


def test_verify_records_an_inventory_and_diff_compares_two_builds(project, emu, sandboxes):
    assert run(project, "build", "latest", "--verify").exit_code == 0
    first = lock_of(project).entry("latest")
    path = project / "templates.inventory" / first.alias / f"{first.build_id}.toml"
    assert path.exists()
    recorded = inventory.load(project / "templates.lock", first.alias, first.build_id)
    assert recorded.python == "3.13.2" and recorded.pip["nexus-ai-fs"] == "0.9.26" and recorded.apt["fuse"]
    assert recorded.disk_used_kib == 800 * 1024  # df's "Used" column of the sandbox's root
    assert "templates.inventory" not in (project / "templates.lock").read_text()  # not inside the lock
    r = run(project, "diff", "latest")
    assert r.exit_code == 1 and "has no previous build" in r.stderr

    assert run(project, "promote", "latest", "--channel", "stable").exit_code == 0
    sandboxes["pip"] = {"nexus-ai-fs": "0.9.26", "httpx": "0.28.1", "sniffio": "1.3.1"}
    sandboxes["disk"] = 887 * 1024
    assert run(project, "build", "latest", "--force").exit_code == 0  # built, not verified: no inventory yet
    r = run(project, "diff", "latest")
    assert r.exit_code == 1 and "no inventory of nexus-sandbox-latest build" in r.stderr
    r = run(project, "verify", "latest")
    assert (
        r.exit_code == 0
        and "inventory of build" in r.stdout
        and "3 Python packages, 2 apt packages, 887 MiB used" in r.stdout
    )
    second = lock_of(project).entry("latest")

    expected = [
        "- pip anyio 4.4.0",
        "~ pip httpx 0.27.0 -> 0.28.1",
        "+ pip sniffio 1.3.1",
    ]
    for args in ([], ["previous", "current"], [first.build_id, second.build_id], ["stable", "current"]):
        r = run(project, "diff", "latest", *args)
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert lines[0] == (
            f"nexus-sandbox-latest: build {first.build_id} -> {second.build_id}: "
            "1 added, 1 removed, 1 changed; size 800 MiB -> 887 MiB (+87 MiB)"
        )
        assert [x.strip() for x in lines[1:]] == sorted(expected, key=lambda x: x.split()[2])
    data = json.loads(run(project, "diff", "latest", "--json").stdout)
    assert data["from"] == first.build_id and {c["name"]: c["change"] for c in data["changes"]} == {
        "anyio": "removed",
        "httpx": "changed",
        "sniffio": "added",
    }
    assert data["disk_used_kib"] == {"from": 800 * 1024, "to": 887 * 1024}
    summary = run(project, "plan", "--format", "markdown").stdout  # each variant's last known size
    assert "| latest | `nexus-sandbox-latest` | **fresh** | 887 MiB |" in summary
    assert run(project, "diff", "latest", "current", "previous").stdout.count("+ pip anyio 4.4.0") == 1

    # promote prints what the move changes: stable pointed at the first build
    r = run(project, "promote", "latest", "--channel", "stable")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == f"nexus-sandbox-latest: stable -> {second.build_id}"
    assert "~ pip httpx 0.27.0 -> 0.28.1" in r.stdout and "1 added, 1 removed, 1 changed" in r.stdout


def test_diff_refuses_what_names_no_build(project, emu, sandboxes):
    assert run(project, "build", "latest", "--verify").exit_code == 0
    emu.reset_counters()
    before = snapshot(project)
    for ref, expected in [
        ("nope", "FROM: 'nope' is not a build ID, a channel, 'previous' or 'current'"),
        ("../../etc/passwd", "FROM: '../../etc/passwd' is not a build ID"),
        ("a\x1b[2J", "FROM: 'a\\x1b[2J' is not a build ID"),
    ]:
        line = assert_refused(project, emu, ["diff", "latest", ref, "current"], expected, before=before)
        assert "\x1b" not in line
    assert_refused(project, emu, ["diff", "lates"], "no template 'lates'", before=before)


def test_a_build_verify_that_fails_records_no_inventory(project, emu, monkeypatch):
    import e2b_code_interpreter

    monkeypatch.setattr(
        e2b_code_interpreter.Sandbox,
        "create",
        staticmethod(lambda template, **kw: FakeSandbox(template, fail=("fuse.conf",))),
    )
    assert run(project, "build", "latest", "--verify").exit_code == 1
    assert not (project / "templates.inventory").exists()


def test_a_bad_inventory_file_is_one_line(project, emu, sandboxes):
    assert run(project, "build", "latest", "--verify").exit_code == 0
    entry = lock_of(project).entry("latest")
    path = project / "templates.inventory" / entry.alias / f"{entry.build_id}.toml"
    write(path, path.read_text().replace("[pip]", '[pip]\n"x y" = "1"'))
    assert run(project, "build", "latest", "--force").exit_code == 0
    assert run(project, "verify", "latest").exit_code == 0
    emu.reset_counters()
    assert_refused(project, emu, ["diff", "latest"], f"{path}: pip.")


@pytest.mark.parametrize("linked", ["templates.inventory", "templates.inventory/nexus-sandbox-latest"])
def test_an_inventory_is_never_written_through_a_link(project, emu, sandboxes, tmp_path_factory, linked):
    outside = tmp_path_factory.mktemp("outside")
    (project / linked).parent.mkdir(parents=True, exist_ok=True)
    (project / linked).symlink_to(outside, target_is_directory=True)
    assert run(project, "build", "latest", "--verify").exit_code == 0  # the build stands: a warning
    assert list(outside.iterdir()) == []
    r = run(project, "verify", "latest")
    assert r.exit_code == 2 and "symbolic link" in r.stderr and list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "text,kib",
    [
        ("overlay 10255636 812345 9443291 8% /\n", 812345),
        (
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 263174212 23011852 226718260 10% /\n",
            23011852,
        ),
        ("", 0),
    ],
)
def test_df_lines_give_the_used_kib(text, kib):
    assert inventory.parse_df(text) == kib


@pytest.mark.parametrize(
    "df_line,du_calls,kib",
    [
        ("/dev/vda 263174212 23011852 226718260 10% /", 0, 23011852),  # a disk of its own (E2B): df's Used
        ("overlay 264212084 57147968 49242944 54% /", 1, 1934624),  # a container: the host's disk; du counts
    ],
)
def test_disk_used_is_dfs_unless_the_root_is_an_overlay(tmp_path, df_line, du_calls, kib):
    """DISK_USED run by a real sh, with stand-ins for df and du on its PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "du.calls"
    for name, body in (
        (
            "df",
            f'[ "$*" = "-Pk /" ] || exit 9\necho "Filesystem 1024-blocks Used Available Capacity Mounted on"\necho "{df_line}"',
        ),
        ("du", f'[ "$*" = "-skx /" ] || exit 9\necho x >> {calls}\nprintf "1934624\\t/\\n"'),
    ):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", "-c", inventory.DISK_USED], capture_output=True, text=True, env=env, check=True)
    assert inventory.parse_df(out.stdout) == kib
    assert (calls.read_text().count("x") if calls.exists() else 0) == du_calls


@pytest.mark.parametrize("text", ["no df here", "overlay x used 1 2% /", f"overlay 1 {2**60} 1 1% /"])
def test_a_df_line_that_is_not_one_is_an_error(text):
    with pytest.raises(ValueError):
        inventory.parse_df(text)


def test_sizes_read_as_people_read_them():
    assert inventory.size(812345) == "793 MiB" and inventory.size(3 * 1024 * 1024) == "3.0 GiB"
    assert inventory.size(20) == "20 KiB" and inventory.size_change(1487936, 1487956) == "1.4 GiB -> 1.4 GiB (+20 KiB)"
    assert inventory.size_change(800 * 1024, 700 * 1024) == "800 MiB -> 700 MiB (-100 MiB)"
    assert inventory.size_change(0, 700) == ""
