"""make e2e: the four shipped variants from a cold cache, ours against BuildKit's own peer.

The peer is four concurrent ``DOCKER_BUILDKIT=1 docker build`` of the same
rendered Dockerfiles: BuildKit runs an identical step of concurrent builds
once. Ours must run ``pip install nexus-ai-fs`` as often as the peer does (twice:
latest, pinned and full share one install on the Debian base, where "latest"
is 0.5.6; minimal installs on another parent), with BuildKit and with only the
legacy builder left (then the step trie schedules). The wall times are printed
and written to .bench/e2e.json: a figure, not an assertion (downloads vary).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import DOCKER_BASE, REAL_INDEX, ROOT, cli_runner, docker_required, remove_images
from e2b_matrix.backends.docker_discovery import discover
from e2b_matrix.backends.docker_engine import DockerCLI, host_ca_certificates
from e2b_matrix.cli import cli

pytestmark = pytest.mark.docker

VARIANTS = ("full", "latest", "minimal", "pinned")
SETS = ["--set", f"base.image={DOCKER_BASE}", "--set", "base.image_python=3.11"]
INSTALLED = re.compile(r"Successfully installed .*nexus-ai-fs-0\.5\.6")


@pytest.fixture(scope="module")
def engine():
    return docker_required()


def ca_args() -> list[str]:
    return [a for c in host_ca_certificates() for a in ("--ca-cert", str(c))]


def cold(engine: DockerCLI) -> None:
    """No build cache and none of the images these builds make; the base image stays."""
    out = subprocess.run(
        [engine.discovery.binary, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    remove_images(engine, *(t for t in out if t.startswith(("e2b-matrix/nexus-sandbox-", "e2b-matrix-peer/"))))
    subprocess.run([engine.discovery.binary, "image", "prune", "-f"], capture_output=True, check=True)
    subprocess.run([engine.discovery.binary, "builder", "prune", "-af"], capture_output=True, check=True)


def ours(tmp_path: Path, engine: DockerCLI, env: dict[str, str]) -> tuple[float, int]:
    project = tmp_path / "ours"
    shutil.copytree(ROOT / "variants", project / "variants")
    cold(engine)
    start = time.monotonic()
    r = cli_runner().invoke(
        cli,
        ["-C", str(project), "build-all", "--backend", "docker", "--json", *SETS, *ca_args()],
        env={**REAL_INDEX, **env},
    )  # the Debian base's requirements files are compiled here
    took = time.monotonic() - start
    assert r.exit_code == 0, r.output
    assert {x["status"] for x in json.loads(r.stdout)} == {"built"}
    logs = [p.read_text() for p in (project / "logs").glob("nexus-sandbox-*.log")]
    return took, sum(len(INSTALLED.findall(text)) for text in logs)


def peer(tmp_path: Path, engine: DockerCLI) -> tuple[float, int]:
    """Four concurrent DOCKER_BUILDKIT=1 docker build of the Dockerfiles our backend renders (with the
    requirements files our build compiled, in the same context)."""
    project = tmp_path / "ours"
    context = tmp_path / "peer-context"
    (context / "ca").mkdir(parents=True)
    for cert in host_ca_certificates():
        shutil.copy(cert, context / "ca" / (cert.stem + ".crt"))
    shutil.copytree(project / "requirements", context / "requirements")
    dockerfiles = {}
    for name in VARIANTS:
        r = cli_runner().invoke(cli, ["-C", str(project), "render", name, "--format", "dockerfile", *SETS, *ca_args()])
        assert r.exit_code == 0, r.output
        dockerfiles[name] = tmp_path / f"{name}.Dockerfile"
        dockerfiles[name].write_text(r.stdout)
    cold(engine)
    outputs: dict[str, str] = {}

    def one(name: str) -> None:
        proc = subprocess.run(
            [
                engine.discovery.binary,
                "build",
                "--network",
                "host",
                "--progress",
                "plain",
                "-t",
                f"e2b-matrix-peer/{name}:e2e",
                "-f",
                str(dockerfiles[name]),
                str(context),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )
        outputs[name] = proc.stdout + proc.stderr if proc.returncode == 0 else f"FAILED {proc.returncode}"

    start = time.monotonic()
    threads = [threading.Thread(target=one, args=(n,)) for n in VARIANTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    assert not [n for n, o in outputs.items() if o.startswith("FAILED")], outputs
    return took, sum(len(INSTALLED.findall(o)) for o in outputs.values())


def record(figures: dict) -> None:
    out = ROOT / ".bench" / "e2e.json"
    out.parent.mkdir(exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**old, **figures}, indent=2) + "\n")


def test_buildkit_runs_each_step_once_like_its_peer(tmp_path, engine):
    if not engine.discovery.buildkit:
        pytest.skip(f"no BuildKit here: {engine.discovery.describe()}")
    our_s, our_installs = ours(tmp_path, engine, {})
    peer_s, peer_installs = peer(tmp_path, engine)
    print(
        f"\n[e2e share] {engine.discovery.describe()}\n[e2e share] ours: {our_s:.1f}s, pip install nexus-ai-fs ran "
        f"{our_installs}x; peer (4 concurrent docker build): {peer_s:.1f}s, ran {peer_installs}x; "
        f"ours/peer = {our_s / peer_s:.2f} (goal <= 1.1)"
    )
    record(
        {
            "docker_buildkit": {
                "ours_s": round(our_s, 1),
                "peer_s": round(peer_s, 1),
                "ratio": round(our_s / peer_s, 3),
                "ours_installs": our_installs,
                "peer_installs": peer_installs,
            }
        }
    )
    assert peer_installs == 2
    assert our_installs == 2


def test_with_only_the_legacy_builder_the_trie_schedules(tmp_path, engine):
    legacy = DockerCLI(discover(engine.discovery.binary, buildkit=False))
    our_s, our_installs = ours(
        tmp_path, legacy, {"E2B_MATRIX_DOCKER_CLI": engine.discovery.binary, "E2B_MATRIX_DOCKER_BUILDKIT": "0"}
    )
    print(f"\n[e2e share] legacy builder: ours {our_s:.1f}s, pip install nexus-ai-fs ran {our_installs}x")
    record({"docker_legacy": {"ours_s": round(our_s, 1), "ours_installs": our_installs}})
    assert our_installs == 2
