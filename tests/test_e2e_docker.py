"""End to end with a real Docker daemon (make e2e): build, verify, lock, on a Debian base.

The base image comes from debootstrap + docker import (scripts/docker-up.sh);
its Python is 3.11, so nexus "latest" can only be 0.5.6 there. Figures (build
time per variant, image size, cached rebuild) are printed: run with -s.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from conftest import DOCKER_BASE, REAL_INDEX, cli_runner, docker_required, image_size, remove_images, write
from e2b_matrix.backends.docker_engine import host_ca_certificates
from e2b_matrix.cli import cli
from e2b_matrix.lock import TemplateLock

pytestmark = pytest.mark.docker

BASE = f'[params.base]\nimage = "{DOCKER_BASE}"\nimage_python = "3.11"\n'


@pytest.fixture(scope="module")
def engine():
    return docker_required()


@pytest.fixture(scope="module")
def e2e_project(tmp_path_factory, engine):
    root = tmp_path_factory.mktemp("e2e")
    write(
        root / "variants/tools.toml",
        f"""
[variant]
name = "tools"
alias = "e2e-tools"
layers = ["base", "fuse", "extra-tools"]
{BASE}""",
    )
    write(
        root / "variants/pinned.toml",
        f"""
[variant]
name = "pinned"
alias = "e2e-pinned"
layers = ["base", "nexus"]
[params.nexus]
version = "0.5.6"
{BASE}""",
    )
    write(
        root / "layers/broken.toml",
        """
[layer]
name = "broken"
version = "1"
[[steps]]
run = "echo built > /tmp/broken"
[[checks]]
name = "always fails"
command = "test -f /nonexistent"
""",
    )
    write(
        root / "variants/broken.toml",
        f"""
[variant]
name = "broken"
alias = "e2e-broken"
layers = ["base", "broken"]
{BASE}""",
    )
    yield root
    remove_images(engine, *{e.image for e in TemplateLock.load(root / "templates.docker.lock")})


def cli_run(root, *args):
    ca = [a for c in host_ca_certificates() for a in ("--ca-cert", str(c))]
    extra = ca if args[0] in ("build", "build-all") else []
    start = time.monotonic()
    r = cli_runner().invoke(cli, ["-C", str(root), *args, *extra], env=REAL_INDEX)  # builds compile for real
    return r, time.monotonic() - start


def test_build_verify_and_lock(e2e_project, engine):
    r, took = cli_run(e2e_project, "build-all", "--backend", "docker", "--verify", "--json")
    assert r.exit_code == 1, r.output  # the broken variant fails its check
    results = {x["name"]: x for x in json.loads(r.stdout)}
    assert results["tools"]["status"] == "built", results["tools"]
    assert results["pinned"]["status"] == "built", results["pinned"]
    assert results["broken"]["status"] == "failed"
    assert "lock entry not written:\nalways fails: " in results["broken"]["error"]
    lock = TemplateLock.load(e2e_project / "templates.docker.lock")
    assert sorted(e.alias for e in lock) == ["e2e-pinned", "e2e-tools"]  # broken stays out
    assert not (e2e_project / "templates.lock").exists()  # the Nexus lock never mixes backends
    assert lock.entry("pinned").layers["nexus"] == "0.5.6"
    for e in lock:
        assert engine.image_id(e.image) == e.template_id
        size = image_size(engine, e.image) / 2**20
        print(f"\n[e2e] {e.variant}: built in {results[e.variant]['duration_s']:.1f}s, image {size:.0f} MiB")
    print(f"[e2e] build-all (3 variants, 2 jobs of work): {took:.1f}s")


def test_verify_reports_each_check(e2e_project):
    for name, expected in (
        ("tools", ["import fuse", "rg --version"]),
        ("pinned", ["nexus-ai-fs version", "nexus --version"]),
    ):
        r, _ = cli_run(e2e_project, "verify", name, "--backend", "docker", "--json")
        assert r.exit_code == 0, r.output
        checks = {c["check"]: c for c in json.loads(r.stdout)}
        assert all(c["ok"] for c in checks.values()), checks
        assert set(expected) <= set(checks)
    r, _ = cli_run(e2e_project, "verify", "pinned", "--backend", "docker")
    assert "0.5.6" in r.stdout and "checks passed" in r.stdout


def test_unchanged_variants_are_fresh_and_cached_rebuilds_are_fast(e2e_project):
    r, took = cli_run(e2e_project, "build", "tools", "pinned", "--backend", "docker", "--json")
    assert r.exit_code == 0
    assert {x["status"] for x in json.loads(r.stdout)} == {"fresh"}
    print(f"\n[e2e] no-op build of 2 fresh variants: {took:.2f}s")
    # drop the lock entry: the rebuild runs every step from Docker's layer cache
    lock_path = e2e_project / "templates.docker.lock"
    saved = lock_path.read_text()
    # Twice: after concurrent first builds the legacy builder may hold two
    # cache chains for the shared prefix and pick the one without this tail.
    for attempt in (1, 2):
        lock_path.unlink()
        r, took = cli_run(e2e_project, "build", "pinned", "--backend", "docker", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)[0]["status"] == "built"
        print(f"[e2e] cached rebuild {attempt} of pinned: {took:.1f}s")
    log = (e2e_project / "logs" / "e2e-pinned.log").read_text()
    last = log[log.rindex("(attempt 1) ---") :]
    nexus = next(line for line in last.splitlines() if "-r /opt/e2b-matrix/requirements/nexus-" in line)
    after = last.split(nexus, 1)[1].splitlines()[1]
    assert "Using cache" in after or "CACHED" in after, after  # the legacy builder's word, or BuildKit's
    lock_path.write_text(saved)


def test_docker_channels_are_image_tags(e2e_project, engine):
    """promote, rollback and status on Docker: a channel is the tag e2b-matrix/<alias>:<channel>."""
    lock_path = e2e_project / "templates.docker.lock"
    assert cli_run(e2e_project, "build", "pinned", "--backend", "docker")[0].exit_code == 0  # fresh, or made so
    first = TemplateLock.load(lock_path).entry("pinned")
    r, _ = cli_run(e2e_project, "promote", "pinned", "--backend", "docker", "--channel", "stable")
    assert r.exit_code == 0, r.output
    assert engine.image_id("e2b-matrix/e2e-pinned:stable") == first.template_id
    r, _ = cli_run(e2e_project, "resolve", "pinned", "--backend", "docker", "--channel", "stable")
    assert r.stdout == "e2b-matrix/e2e-pinned:stable\n"
    assert cli_run(e2e_project, "resolve", "pinned", "--backend", "docker")[0].stdout == f"{first.image}\n"
    # a rebuild (another fingerprint) moves the lock, not the channel; rollback brings both back
    write(
        e2e_project / "variants/pinned.toml",
        (e2e_project / "variants/pinned.toml").read_text().replace('name = "pinned"', 'name = "pinned"\ncpu_count = 4'),
    )
    r, _ = cli_run(e2e_project, "build", "pinned", "--backend", "docker", "--json")
    assert r.exit_code == 0, r.output
    second = TemplateLock.load(lock_path).entry("pinned")
    assert second.image != first.image and engine.image_id("e2b-matrix/e2e-pinned:stable") == first.template_id
    assert cli_run(e2e_project, "promote", "pinned", "--backend", "docker", "--channel", "staging")[0].exit_code == 0
    r, _ = cli_run(e2e_project, "status", "--backend", "docker", "pinned")
    assert r.exit_code == 0, r.output
    r, _ = cli_run(e2e_project, "rollback", "pinned", "--backend", "docker")
    assert r.exit_code == 0, r.output
    back = TemplateLock.load(lock_path).entry("pinned")
    assert (back.image, back.template_id) == (first.image, first.template_id)
    assert engine.image_id("e2b-matrix/e2e-pinned:staging") == first.template_id
    # a tag moved behind the tool's back is drift
    engine.tag_image(second.image, "e2b-matrix/e2e-pinned:stable")
    r, _ = cli_run(e2e_project, "status", "--backend", "docker", "pinned")
    assert r.exit_code == 1 and "channel moved" in r.stdout
    remove_images(engine, "e2b-matrix/e2e-pinned:stable", "e2b-matrix/e2e-pinned:staging", second.image)


def test_prune_removes_an_image_no_build_needs_and_keeps_the_locked_and_the_history(tmp_path, engine):
    """A variant built twice (its first build in the lock's history), and an extra build tag
    ``e2b-matrix/<alias>:<16 hex>`` that no lock entry names (``docker tag`` of an image no build
    is): ``prune`` lists it, ``prune --yes`` removes it, and the locked and history images stay."""
    root = tmp_path / "project"
    write(root / "variants/prune.toml", f'[variant]\nname = "prune"\nalias = "e2e-prune"\nlayers = ["base"]\n{BASE}')
    lock_path = root / "templates.docker.lock"
    nonce = uuid.uuid4().hex
    orphan, stray = f"e2b-matrix-test/orphan:{nonce[:10]}", f"e2b-matrix/e2e-prune:{nonce[:16]}"
    try:
        for args in (["build", "prune"], ["build", "prune", "--force"]):
            r, _ = cli_run(root, *args, "--backend", "docker", "--json")
            assert r.exit_code == 0 and json.loads(r.stdout)[0]["status"] == "built", r.output
        entry = TemplateLock.load(lock_path).entry("prune")
        previous = entry.history[0]
        assert previous.image and previous.template_id not in ("", entry.template_id)
        engine.build_image(f"FROM {DOCKER_BASE}\nLABEL e2b-matrix.test={nonce}\n", orphan)
        engine.tag_image(orphan, stray)
        line = f"docker image {stray}: its build is in neither templates.docker.lock nor its history"

        r, _ = cli_run(root, "prune")
        assert r.exit_code == 1 and r.stdout.splitlines() == [line], r.output  # the dry run: listed, and why
        assert engine.image_exists(stray)
        r, _ = cli_run(root, "prune", "--yes")
        assert r.exit_code == 0 and r.stdout.splitlines() == [f"{line}: removed"], r.output

        assert not engine.image_exists(stray)
        assert engine.image_exists(orphan)  # a tag went; the image keeps its other tag
        assert engine.image_id(entry.image) == entry.template_id  # the locked build
        assert engine.image_id(previous.image) == previous.template_id  # its rollback target
        assert TemplateLock.load(lock_path).entry("prune") == entry
        assert "prune: removed docker image" in (root / "logs" / "build.log").read_text()
        r, _ = cli_run(root, "prune")
        assert r.exit_code == 0 and r.stdout.strip() == "nothing to prune", r.output
    finally:
        built = TemplateLock.load(lock_path) if lock_path.exists() else []
        remove_images(engine, orphan, stray, *(i for e in built for i in (e.image, *(b.image for b in e.history)) if i))
