"""The real Nexus server picks its template from the lock, and runs commands in its sandboxes (make e2e).

nexus-ai-fs 0.5.6 (the newest release Python 3.11 runs) lives in its own venv,
.venv-nexus (scripts/nexus-venv.sh; VENV_NEXUS elsewhere), with the e2b SDK its
E2B provider imports (Nexus declares no dependency on e2b; its error says
"pip install e2b"). Nexus runs as it does in production: `nexus serve` with
E2B_TEMPLATE_ID in its environment, driven through Nexus's own client
(RemoteNexusFS.sandbox_create -> JSON-RPC -> NexusFS.sandbox_create ->
SandboxManager.create_sandbox -> E2BSandboxProvider.create -> e2b's
AsyncSandbox.create), against the E2B emulator in its Docker mode: the builds' steps
run, and each sandbox is a container in which Nexus runs commands (sandbox_run ->
SandboxManager.run_code -> E2BSandboxProvider.run_code: AsyncSandbox.connect, then
commands.run; nexus-ai-fs 0.5.6 core/sandbox_e2b_provider.py, whose mount_nexus checks a
sandbox the same way, with `which nexus`). Nothing of Nexus is reimplemented.

The first scenario: build `latest` with e2b-matrix, E2B_TEMPLATE_ID=$(e2b-matrix resolve
latest), a sandbox from Nexus gets the locked build and Nexus runs a command in it;
someone builds the alias bare (moving its `default` tag); Nexus's next sandbox still gets
the locked build, while a Nexus configured with the bare alias (the seed's setting) gets
the newer one.

The second: a promote without a restart. Nexus reads E2B_TEMPLATE_ID once, when it makes its
sandbox manager (0.5.6 core/nexus_fs.py: _ensure_sandbox_manager), but a request that names
``template_id`` is sent to E2B as it is, and stored (core/sandbox_manager.py: create_sandbox;
core/sandbox_e2b_provider.py: ``template = template_id or self.default_template``; develop's
bricks/sandbox/sandbox_manager.py reads the stored value for its preinstalled-template fast
path). So a caller passes ``template_id=TemplateResolver(...).resolve(NAME)`` with each
request: create, build and promote another release, create again on the same running
server, and the second sandbox runs the new build; the server's default still serves the
first until it restarts. Timings and the requests Nexus made are printed: run with -s.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from conftest import KEY, REAL_INDEX, ROOT, unavailable, wait_for, write
from e2b_matrix.emulator import E2BEmulator
from e2b_matrix.lock import TemplateLock, TemplateResolver

pytestmark = [pytest.mark.nexus, pytest.mark.docker]

NEXUS_VERSION = os.environ.get("NEXUS_VERSION") or "0.5.6"
NEXUS_VENV = ROOT / (os.environ.get("VENV_NEXUS") or ".venv-nexus")
ALIAS = "nexus-sandbox-latest"
CLI = Path(sys.executable).with_name("e2b-matrix")  # this venv's e2b-matrix, as a shell would run it
START_TIMEOUT_S = 120

# Nexus's own client, in Nexus's venv: one sandbox_create call (with a template_id when given), its
# answer as JSON.
CLIENT = """
import json, sys
from nexus.remote import RemoteNexusFS
url, name, template_id = sys.argv[1], sys.argv[2], (sys.argv[3:] or [None])[0]
print(json.dumps(RemoteNexusFS(url).sandbox_create(name=name, provider="e2b", template_id=template_id)))
"""
# ... and one sandbox_run: a shell command in the sandbox, run by Nexus's server.
RUN = """
import json, sys
from nexus.remote import RemoteNexusFS
url, sandbox_id, command = sys.argv[1:4]
print(json.dumps(RemoteNexusFS(url).sandbox_run(sandbox_id, "bash", command, timeout=120)))
"""
# Two releases that install from wheels on the stand-in's Python 3.13 and print their own version
# (tests/test_e2e_e2b_path.py says why not the shipped ones).
FIRST, SECOND = "0.9.19", "0.9.20"
PINNED = """
[variant]
name = "pinned"
alias = "nexus-sandbox-pinned"
layers = ["base", "fuse", "nexus"]

[params.nexus]
version = "{version}"
"""
PROBE = """
import json, e2b, nexus
from importlib.metadata import version
print(json.dumps({p: version(p) for p in ("nexus-ai-fs", "e2b")}))
"""


@pytest.fixture
def nexus() -> dict[str, str]:
    return nexus_required()


@pytest.fixture
def emu(docker_mode, monkeypatch):
    """The emulator in its Docker mode, e2b-matrix pointed at it, pins resolved with the real index."""
    with E2BEmulator(api_key=KEY, docker=docker_mode) as e:
        for k, v in e.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("E2B_MATRIX_UV_ARGS", REAL_INDEX["E2B_MATRIX_UV_ARGS"])  # the package index
        yield e


def nexus_required() -> dict[str, str]:
    """Skip without .venv-nexus at NEXUS_VERSION (with e2b), except in CI (CI=true), where that fails.

    Returns the installed versions of nexus-ai-fs and e2b.
    """
    python = NEXUS_VENV / "bin/python"
    reason, versions = None, {}
    if not python.exists():
        reason = f"no {NEXUS_VENV.name}: run scripts/nexus-venv.sh (make e2e does)"
    else:
        probe = subprocess.run(
            [str(python), "-c", PROBE], capture_output=True, text=True, env=_clean_env(), timeout=120
        )
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            reason = f"{NEXUS_VENV.name} cannot import nexus and e2b ({last}): run scripts/nexus-venv.sh"
        else:
            versions = json.loads(probe.stdout)
            if versions["nexus-ai-fs"] != NEXUS_VERSION:
                got = versions["nexus-ai-fs"]
                reason = f"{NEXUS_VENV.name} has nexus-ai-fs {got}, not {NEXUS_VERSION}: run scripts/nexus-venv.sh"
    if reason:
        unavailable(reason, "make e2e must run scripts/nexus-venv.sh first")
    return versions


def _clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment for Nexus's processes: nothing of ours or the user's leaks in
    (no NEXUS_URL, NEXUS_DATABASE_URL, E2B_TEMPLATE_ID ... unless given).

    PATH holds Nexus's venv only: `nexus serve` "cleans up" its port by running
    `lsof -ti :PORT` and `kill -9` on what it finds (cli/commands/server.py); without
    lsof and netstat on PATH it prints one warning instead, and can kill nothing of ours.
    """
    env = {"PATH": str(NEXUS_VENV / "bin"), "HOME": os.environ["HOME"], "LANG": "C.UTF-8"}
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def nexus_serve(tmp: Path, label: str, emu, template_id: str):
    """`nexus serve` on 127.0.0.1 with E2B_TEMPLATE_ID=template_id; yields (url, process, log path)."""
    port, log = _free_port(), tmp / f"nexus-{label}.log"
    env = _clean_env(**emu.env(), E2B_TEMPLATE_ID=template_id)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(NEXUS_VENV / "bin/nexus"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(tmp / f"nexus-data-{label}"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    try:
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"nexus serve exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return json.loads(r.read()).get("status") == "healthy"
        except (OSError, ValueError):
            return False

    wait_for(healthy, timeout=START_TIMEOUT_S, what=lambda: f"nexus serve to answer /health:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def nexus_sandbox_create(
    emu, url: str, name: str, log: Path, template_id: str | None = None
) -> tuple[dict, list, float]:
    """Nexus's client asks Nexus's server for a sandbox (of ``template_id`` when given): (Nexus's
    answer, the E2B requests made meanwhile, seconds)."""
    before, start = len(emu.requests), time.monotonic()
    r = subprocess.run(
        [str(NEXUS_VENV / "bin/python"), "-c", CLIENT, url, name, *([template_id] if template_id else [])],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )
    took = time.monotonic() - start
    assert r.returncode == 0, f"sandbox_create failed:\n{r.stderr[-3000:]}\nserver log:\n{_tail(log)}"
    return json.loads(r.stdout.strip().splitlines()[-1]), emu.requests[before:], took


def nexus_sandbox_run(url: str, sandbox_id: str, command: str, log: Path) -> dict:
    """Nexus's client asks Nexus's server to run ``command`` in the sandbox: Nexus's answer
    (stdout, stderr, exit_code, execution_time)."""
    r = subprocess.run(
        [str(NEXUS_VENV / "bin/python"), "-c", RUN, url, sandbox_id, command],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=180,
    )
    assert r.returncode == 0, f"sandbox_run failed:\n{r.stderr[-3000:]}\nserver log:\n{_tail(log)}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def the_sandbox(emu, sandbox_id: str):
    made = [s for s in emu.sandboxes if s.sandbox_id == sandbox_id]
    assert len(made) == 1, (sandbox_id, emu.sandboxes)
    return made[0]


def e2b_matrix(project: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(CLI), "-C", str(project), *args], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"e2b-matrix {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def emu_api(emu, method: str, path: str, body: dict | None = None):
    """A plain request to the emulator's E2B API (what a bare build elsewhere sends)."""
    req = urllib.request.Request(
        emu.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-KEY": emu.api_key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        payload = resp.read()
        return json.loads(payload) if payload else None


def bare_build(emu, alias: str) -> str:
    """Build the alias with no tag (E2B gives it `default`), outside the lock; its build ID once ready."""
    made = emu_api(emu, "POST", "/v3/templates", {"name": alias, "cpuCount": 2, "memoryMB": 2048})
    assert made["tags"] == ["default"], made
    tid, bid = made["templateID"], made["buildID"]
    emu_api(emu, "POST", f"/v2/templates/{tid}/builds/{bid}", {"fromTemplate": "code-interpreter-v1", "steps": []})

    def ready() -> bool:
        status = emu_api(emu, "GET", f"/templates/{tid}/builds/{bid}/status")["status"]
        assert status in ("waiting", "building", "ready"), status
        return status == "ready"

    wait_for(ready, timeout=120, what=f"the bare build {bid} of {alias} to be ready")
    return bid


def test_nexus_server_gets_the_locked_build_even_after_a_newer_build(nexus, project, emu, tmp_path):
    versions = nexus
    timings: dict[str, float] = {}
    print(f"\nnexus-ai-fs {versions['nexus-ai-fs']}, e2b {versions['e2b']} in {NEXUS_VENV.name}")

    # (1) build latest with e2b-matrix; (2) REF=$(e2b-matrix resolve latest)
    start = time.monotonic()
    e2b_matrix(project, "build", "latest")
    timings["e2b-matrix build latest"] = time.monotonic() - start
    lock_file = project / "templates.lock"
    entry = TemplateLock.load(lock_file).entry("latest")
    ours = emu.build(entry.build_id)
    assert "default" not in ours.tags and any(t.startswith("fp-") for t in ours.tags), ours.tags
    ref = e2b_matrix(project, "resolve", "latest").stdout.strip()
    # the alias and the exact build: Nexus keeps its fast path (the reference holds "nexus-sandbox")
    assert ref == f"{ALIAS}:{entry.build_id}" and "nexus-sandbox" in ref
    print(f"E2B_TEMPLATE_ID={ref}  (lock: {ALIAS} build {entry.build_id}, tags {ours.tags})")

    with ExitStack() as stack:
        # Two Nexus servers, started together: one with the pinned reference (this
        # project's way), one with the bare alias (the seed's way, for contrast).
        start = time.monotonic()
        pinned_url, pinned_proc, pinned_log = stack.enter_context(nexus_serve(tmp_path, "pinned", emu, ref))
        bare_url, bare_proc, bare_log = stack.enter_context(nexus_serve(tmp_path, "bare", emu, ALIAS))
        wait_healthy(pinned_url, pinned_proc, pinned_log)
        wait_healthy(bare_url, bare_proc, bare_log)
        timings["nexus serve start (two, in parallel)"] = time.monotonic() - start

        # (3) Nexus creates a sandbox: the request carries REF and gets the locked build
        first, requests, took = nexus_sandbox_create(emu, pinned_url, "first", pinned_log)
        timings["sandbox_create #1 (pinned)"] = took
        print(f"Nexus sandbox_create #1 -> E2B requests {requests}")
        assert requests == [("POST", "/v2/sandboxes", 201)]
        assert first["provider"] == "e2b" and first["status"] == "active", first
        made = the_sandbox(emu, first["sandbox_id"])
        assert (made.reference, made.template_id, made.build_id) == (ref, entry.template_id, entry.build_id)
        assert f"Created E2B sandbox: {first['sandbox_id']} (template={ref})" in pinned_log.read_text()
        assert emu.container_of(first["sandbox_id"]) is not None  # a container of the locked build's image

        # ... and runs a command in it, as it checks a sandbox (mount_nexus: `which nexus`)
        before, start = len(emu.requests), time.monotonic()
        ran = nexus_sandbox_run(pinned_url, first["sandbox_id"], "which nexus && nexus --version", pinned_log)
        timings["sandbox_run #1 (which nexus)"] = time.monotonic() - start
        print(f"Nexus sandbox_run #1 -> {ran} (E2B requests {emu.requests[before:]})")
        assert ran["exit_code"] == 0, ran
        assert ran["stdout"].splitlines()[0].endswith("/bin/nexus") and "nexus, version" in ran["stdout"]
        assert emu.requests[before:] == [("POST", f"/v2/sandboxes/{first['sandbox_id']}/connect", 200)]

        # (4) a newer build of the alias, outside the lock: it moves `default`
        lock_before = lock_file.read_bytes()
        newer = bare_build(emu, ALIAS)
        assert newer != entry.build_id
        tags = {t["tag"]: t["buildID"] for t in emu_api(emu, "GET", f"/templates/{entry.template_id}/tags")}
        assert tags["default"] == newer, tags
        assert e2b_matrix(project, "resolve", "latest").stdout.strip() == ref  # the lock still pins ours
        assert lock_file.read_bytes() == lock_before

        # (5) the same Nexus, same E2B_TEMPLATE_ID: still the locked build
        second, requests, took = nexus_sandbox_create(emu, pinned_url, "second", pinned_log)
        timings["sandbox_create #2 (pinned)"] = took
        print(f"Nexus sandbox_create #2 -> E2B requests {requests}")
        assert requests == [("POST", "/v2/sandboxes", 201)]
        made = the_sandbox(emu, second["sandbox_id"])
        assert (made.reference, made.build_id) == (ref, entry.build_id)

        # What the pin prevents: a Nexus started with the bare alias gets the newer build
        third, requests, took = nexus_sandbox_create(emu, bare_url, "third", bare_log)
        timings["sandbox_create #3 (bare alias)"] = took
        print(f"Nexus sandbox_create #3 (E2B_TEMPLATE_ID={ALIAS}) -> E2B requests {requests}")
        assert requests == [("POST", "/v2/sandboxes", 201)]
        made = the_sandbox(emu, third["sandbox_id"])
        assert (made.reference, made.build_id) == (ALIAS, newer)
        assert f"Created E2B sandbox: {third['sandbox_id']} (template={ALIAS})" in bare_log.read_text()

    for s in emu.sandboxes:
        print(f"  sandbox {s.sandbox_id}: reference {s.reference!r} -> build {s.build_id}")
    for what, seconds in timings.items():
        print(f"  {what:40} {seconds:6.2f}s")


def test_a_promote_reaches_a_running_nexus_through_a_per_request_template_id(nexus, emu, tmp_path):
    """Create, build and promote another release, create again on the same server: the second sandbox
    runs the new build (the caller resolves the name for each request); the server's default
    (E2B_TEMPLATE_ID, read once) still serves the first build until Nexus restarts."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "requirements", project / "requirements")
    write(project / "variants/pinned.toml", PINNED.format(version=FIRST))
    timings: dict[str, float] = {}
    start = time.monotonic()
    e2b_matrix(project, "build", "pinned")
    e2b_matrix(project, "promote", "pinned")
    timings[f"build + promote pinned ({FIRST})"] = time.monotonic() - start
    resolver = TemplateResolver(project / "templates.lock")  # the caller's, one object for every request
    first_ref = resolver.resolve("pinned")
    first_build = TemplateLock.load(project / "templates.lock").entry("pinned").build_id
    assert first_ref == f"nexus-sandbox-pinned:{first_build}"

    with nexus_serve(tmp_path, "promote", emu, first_ref) as (url, proc, log):
        wait_healthy(url, proc, log)
        one, _, _ = nexus_sandbox_create(emu, url, "one", log, template_id=resolver.resolve("pinned"))
        assert the_sandbox(emu, one["sandbox_id"]).build_id == first_build
        assert one["template_id"] == first_ref  # Nexus stored what it was given
        assert (
            nexus_sandbox_run(url, one["sandbox_id"], "nexus --version", log)["stdout"].strip()
            == f"nexus, version {FIRST}"
        )

        # another release, built and promoted while the same Nexus runs
        write(project / "variants/pinned.toml", PINNED.format(version=SECOND))
        start = time.monotonic()
        e2b_matrix(project, "build", "pinned")
        promoted = e2b_matrix(project, "promote", "pinned").stdout
        timings[f"build + promote pinned ({SECOND})"] = time.monotonic() - start
        second_build = TemplateLock.load(project / "templates.lock").entry("pinned").build_id
        assert second_build != first_build and "nexus-sandbox-pinned" in promoted
        second_ref = resolver.resolve("pinned")  # the resolver saw the lock change: no restart of anything
        assert second_ref == f"nexus-sandbox-pinned:{second_build}"

        two, _, _ = nexus_sandbox_create(emu, url, "two", log, template_id=second_ref)
        assert the_sandbox(emu, two["sandbox_id"]).build_id == second_build
        assert two["template_id"] == second_ref
        assert (
            nexus_sandbox_run(url, two["sandbox_id"], "nexus --version", log)["stdout"].strip()
            == f"nexus, version {SECOND}"
        )

        # the route that needs a restart: no template_id, E2B_TEMPLATE_ID as Nexus read it at its start
        three, _, _ = nexus_sandbox_create(emu, url, "three", log)
        assert the_sandbox(emu, three["sandbox_id"]).build_id == first_build
        assert (
            nexus_sandbox_run(url, three["sandbox_id"], "nexus --version", log)["stdout"].strip()
            == f"nexus, version {FIRST}"
        )
    for what, seconds in timings.items():
        print(f"  {what:40} {seconds:6.2f}s")
