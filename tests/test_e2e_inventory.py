"""End to end with real Docker (make e2e): what two builds of `pinned` hold, and what changed.

Builds nexus-ai-fs 0.5.5 with --verify (the inventory is recorded beside the
lock), then 0.5.6, and checks that `diff pinned` names the nexus change, that
the inventory agrees with what `pip` reports inside the image, and that
`promote` prints the diff of the move. Figures are printed: run with -s.
"""

from __future__ import annotations

import json

import pytest

from conftest import DOCKER_BASE, docker_required, remove_images, write
from e2b_matrix import inventory
from e2b_matrix.lock import TemplateLock
from test_e2e_docker import cli_run

pytestmark = pytest.mark.docker

VARIANT = """
[variant]
name = "pinned"
alias = "e2e-inv-pinned"
layers = ["base", "nexus"]
[params.nexus]
version = "{version}"
[params.base]
image = "{base}"
image_python = "3.11"
"""


@pytest.fixture(scope="module")
def engine():
    return docker_required()


def test_two_builds_their_inventories_and_the_diff(tmp_path, engine):
    root = tmp_path
    lock_path = root / "templates.docker.lock"
    try:
        recorded = {}
        for version in ("0.5.5", "0.5.6"):
            write(root / "variants/pinned.toml", VARIANT.format(version=version, base=DOCKER_BASE))
            r, took = cli_run(root, "build", "pinned", "--backend", "docker", "--verify", "--json")
            assert r.exit_code == 0, r.output
            entry = TemplateLock.load(lock_path).entry("pinned")
            inv = inventory.load(lock_path, entry.alias, entry.build_id)
            assert inv is not None and inv.pip["nexus-ai-fs"] == version and inv.python.startswith("3.11")
            assert "python3" in inv.apt or "python3-minimal" in inv.apt
            # the inventory is what pip says inside the image
            code, out = engine.run_in_container(entry.image, inventory.PIP_LIST)
            assert code == 0 and inventory.parse_pip(out) == dict(inv.pip)
            recorded[version] = (entry, inv)
            print(
                f"\n[inventory] nexus-ai-fs {version}: built and verified in {took:.1f}s; "
                f"{len(inv.pip)} Python packages, {len(inv.apt)} apt packages, "
                f"{inventory.path_of(lock_path, entry.alias, entry.build_id).stat().st_size} bytes"
            )
        r, _ = cli_run(root, "diff", "pinned", "--backend", "docker")
        assert r.exit_code == 0, r.output
        assert "~ pip nexus-ai-fs 0.5.5 -> 0.5.6" in r.stdout
        print(r.stdout)
        data = json.loads(cli_run(root, "diff", "pinned", "--backend", "docker", "--json")[0].stdout)
        expected = inventory.diff(recorded["0.5.5"][1], recorded["0.5.6"][1])
        assert data["changes"] == [c.to_json() for c in expected]
        # promote the old build first, then the new: the second promote prints the move's diff
        old = recorded["0.5.5"][0]
        assert cli_run(root, "rollback", "pinned", "--backend", "docker")[0].exit_code == 0
        assert cli_run(root, "promote", "pinned", "--backend", "docker", "--channel", "stable")[0].exit_code == 0
        write(root / "variants/pinned.toml", VARIANT.format(version="0.5.6", base=DOCKER_BASE))
        r, _ = cli_run(root, "build", "pinned", "--backend", "docker")  # its image is still there: a new entry
        assert r.exit_code == 0, r.output
        r, _ = cli_run(root, "verify", "pinned", "--backend", "docker")
        assert r.exit_code == 0, r.output
        r, _ = cli_run(root, "promote", "pinned", "--backend", "docker", "--channel", "stable")
        assert r.exit_code == 0 and "~ pip nexus-ai-fs 0.5.5 -> 0.5.6" in r.stdout, r.output
        assert old.build_id in r.stdout
    finally:
        for entry in TemplateLock.load(lock_path) if lock_path.exists() else ():
            remove_images(engine, *({entry.image, *(b.image for b in entry.history)} - {""}))
