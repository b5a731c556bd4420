"""The E2B path end to end (make e2e): the unchanged CLI, the real e2b and e2b-code-interpreter
clients, and the E2B emulator in its Docker mode, where every step and every check really runs.

- ``build pinned --verify`` passes every check of every layer: the stateful Python cells
  through the code interpreter, ``import fuse``, ``sudo -n true``, ``nexus --version``, ...;
- the inventory it records is what ``pip list`` says in a sandbox of that build, and holds the
  same packages as the Docker backend's inventory of the same variant, for the same pins (the
  Docker backend builds on the same stand-in, under the name of E2B's code-interpreter image);
- a layer whose step fails shows E2B's error naming the step, and the lock does not change;
- after a second build at another nexus-ai-fs release, ``diff`` and ``promote`` name exactly
  that change.

The releases: 0.9.19 and 0.9.20 install from wheels on Python 3.13 and their CLI prints its own
version. The shipped variants' versions cannot pass here: nexus-ai-fs 0.5.5 and 0.5.6 ship
wheels for CPython 3.11 only, so pip builds them from their sources, whose Rust extension
downloads a toolchain (unreachable from this machine, as from any sandbox without internet);
0.9.21 to 0.9.26 print "0.9.20" for ``nexus --version``. Figures are printed: run with -s.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import KEY, REAL_INDEX, ROOT, cli_runner, remove_images, write
from e2b_matrix import inventory
from e2b_matrix.backends.docker_engine import host_ca_certificates
from e2b_matrix.cli import cli
from e2b_matrix.emulator import E2BEmulator, containers
from e2b_matrix.lock import TemplateLock

pytestmark = pytest.mark.docker

FIRST, SECOND = "0.9.19", "0.9.20"
CODE_INTERPRETER_IMAGE = "e2bdev/code-interpreter:latest"  # the Docker backend's default base (layers/base.py)
PINNED = """
[variant]
name = "pinned"
alias = "nexus-sandbox-pinned"
layers = ["base", "fuse", "nexus"]
cpu_count = 2
memory_mb = 2048

[params.nexus]
version = "{version}"
"""


@pytest.fixture(scope="module")
def e2b(docker_mode, tmp_path_factory):
    """A copy of the project (pinned at FIRST, plus a variant whose layer fails) and an emulator in Docker mode."""
    import shutil

    root = tmp_path_factory.mktemp("e2b-path")
    shutil.copytree(ROOT / "requirements", root / "requirements")
    write(root / "variants/pinned.toml", PINNED.format(version=FIRST))
    write(
        root / "layers/broken.toml",
        """
[layer]
name = "broken"
version = "1"
requires = ["base"]
[[steps]]
run = "echo about to fail; exit 3"
[[checks]]
name = "never reached"
command = "true"
""",
    )
    write(
        root / "variants/broken.toml",
        """
[variant]
name = "broken"
alias = "nexus-sandbox-broken"
layers = ["base", "broken"]
""",
    )
    with E2BEmulator(api_key=KEY, docker=docker_mode) as emu:
        yield root, emu


def cli_run(e2b, *args):
    root, emu = e2b
    # the real index (REAL_INDEX): uv pins what pip then installs in the sandbox
    env = {**emu.env(), **REAL_INDEX}
    extra = [a for c in host_ca_certificates() for a in ("--ca-cert", str(c))] if "docker" in args else []
    start = time.monotonic()
    r = cli_runner().invoke(cli, ["-C", str(root), *args, *extra], env=env)
    return r, time.monotonic() - start


def test_build_pinned_verify_passes_every_check_of_every_layer(e2b):
    root, emu = e2b
    r, took = cli_run(e2b, "build", "pinned", "--verify", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["status"] == "built"
    print(f"\n[e2b-path] build pinned --verify ({FIRST}), Docker mode: {took:.1f}s")
    entry = TemplateLock.load(root / "templates.lock").entry("pinned")
    assert emu.build(entry.build_id).status == "ready" and entry.api_url == emu.url
    r, took = cli_run(e2b, "verify", "pinned", "--json")
    assert r.exit_code == 0, r.output
    checks = {c["check"]: c for c in json.loads(r.stdout)}
    assert all(c["ok"] for c in checks.values()), checks
    assert {
        "stateful python",
        "python3 --version",
        "import fuse",
        "user_allow_other",
        "passwordless sudo",
        "mount points",
        "nexus-ai-fs version",
        "nexus --version",
    } <= set(checks)
    assert checks["nexus-ai-fs version"]["detail"] == f"nexus-ai-fs {FIRST}"
    assert checks["stateful python"]["detail"] == "50"  # x = 42, then x + 8, in the code interpreter
    assert checks["nexus --version"]["detail"] == f"nexus, version {FIRST}"
    print(f"[e2b-path] verify pinned: {len(checks)} checks in {took:.1f}s")


def test_the_inventory_is_what_pip_lists_in_the_sandbox_and_what_docker_builds(e2b, docker_mode, monkeypatch):
    from e2b_code_interpreter import Sandbox

    root, emu = e2b
    lock = root / "templates.lock"
    entry = TemplateLock.load(lock).entry("pinned")
    inv = inventory.load(lock, entry.alias, entry.build_id)
    assert inv is not None and inv.pip["nexus-ai-fs"] == FIRST and inv.python.startswith("3.13.")
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    sandbox = Sandbox.create(entry.reference, timeout=120)
    try:
        container = emu.container_of(sandbox.sandbox_id)
        assert container is not None
        code, out, err = containers.run(docker_mode.cli, container, ["sh", "-c", inventory.PIP_LIST], user="user")
        assert code == 0, err
        assert inventory.parse_pip(out) == dict(inv.pip)
    finally:
        sandbox.kill()
    # The Docker backend, the same variant and pins, on the same stand-in under E2B's image name.
    cli = docker_mode.cli
    made_tag = not cli.image_exists(CODE_INTERPRETER_IMAGE)
    if made_tag:
        cli.tag_image(docker_mode.public["code-interpreter-v1"].image, CODE_INTERPRETER_IMAGE)
    docker_lock = root / "templates.docker.lock"
    try:
        r, took = cli_run(e2b, "build", "pinned", "--backend", "docker", "--verify", "--json")
        assert r.exit_code == 0, r.output
        print(f"\n[e2b-path] the same variant with the Docker backend: {took:.1f}s")
        local = TemplateLock.load(docker_lock).entry("pinned")
        docker_inv = inventory.load(docker_lock, local.alias, local.build_id)
        assert docker_inv is not None
        assert dict(docker_inv.pip) == dict(inv.pip)  # the same packages at the same versions
        assert inventory.diff(inv, docker_inv) == []  # and the same Python and apt packages
        print(f"[e2b-path] inventories agree: {len(inv.pip)} Python packages, {len(inv.apt)} apt packages")
    finally:
        for e in TemplateLock.load(docker_lock) if docker_lock.exists() else ():
            remove_images(cli, *({e.image, *(b.image for b in e.history)} - {""}))
        if made_tag:
            cli.remove_image(CODE_INTERPRETER_IMAGE)  # the tag only: the stand-in stays


def test_a_failing_layer_shows_e2bs_error_and_the_lock_does_not_change(e2b):
    root, emu = e2b
    before = (root / "templates.lock").read_bytes()
    r, _ = cli_run(e2b, "build", "broken", "--json")
    assert r.exit_code == 1, r.output
    result = json.loads(r.stdout)[0]
    assert result["status"] == "failed"
    assert result["error"] == (
        "E2B build failed at step 3: failed to run command 'echo about to fail; exit 3': exit status 3"
    )  # steps 1-2: base's USER and WORKDIR; 3: the broken layer's RUN
    assert (root / "templates.lock").read_bytes() == before
    failed = next(b for b in emu.builds if b.base_name == "nexus-sandbox-broken")
    assert failed.status == "error" and failed.reason == result["error"].split(": ", 1)[1]


def test_a_second_build_at_another_release_diff_and_promote_name_exactly_that_change(e2b):
    root, _ = e2b
    r, _ = cli_run(e2b, "promote", "pinned")  # the first build is what the default channel serves
    assert r.exit_code == 0, r.output
    first = TemplateLock.load(root / "templates.lock").entry("pinned")
    write(root / "variants/pinned.toml", PINNED.format(version=SECOND))
    r, took = cli_run(e2b, "build", "pinned", "--verify", "--json")
    assert r.exit_code == 0, r.output
    print(f"\n[e2b-path] second build ({SECOND}) with --verify: {took:.1f}s")
    second = TemplateLock.load(root / "templates.lock").entry("pinned")
    assert second.build_id != first.build_id
    change = f"~ pip nexus-ai-fs {FIRST} -> {SECOND}"
    r, _ = cli_run(e2b, "diff", "pinned", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["changes"] == [
        {"kind": "pip", "name": "nexus-ai-fs", "change": "changed", "from": FIRST, "to": SECOND}
    ]
    r, _ = cli_run(e2b, "diff", "pinned")
    assert change in r.stdout
    r, _ = cli_run(e2b, "promote", "pinned")
    assert r.exit_code == 0, r.output
    assert change in r.stdout and first.build_id in r.stdout
    print(r.stdout)
