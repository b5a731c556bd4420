"""DockerCLI's choice of CLI and builder, without a Docker daemon (runs in `make test`).

Each candidate is a small fake ``docker`` (a script in a temporary folder) that
behaves like one kind of real CLI: Debian's docker.io 20.10 (drives the daemon's
BuildKit with DOCKER_BUILDKIT=1), a 28.x CLI without the buildx plugin (refuses
BuildKit, legacy builder only), a CLI with buildx, one with no daemon behind it,
one that ignores DOCKER_BUILDKIT. The fakes record every call, so the tests see
what was probed and how builds are invoked. The real daemon's side:
tests/test_docker_engine.py (marker docker).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from e2b_matrix.backends import docker_engine as engine
from e2b_matrix.backends.docker_engine import DockerCLI, DockerError

FAKE = r"""
import json, os, signal, sys
from pathlib import Path

here = Path(__file__).resolve().parent
conf = json.loads((here / "conf.json").read_text())
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as f:
    f.write(json.dumps({"args": args, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT")}) + "\n")
tags = here / "tags.json"

def out(*lines, err=False):
    for line in lines:
        print(line, file=sys.stderr if err else sys.stdout, flush=True)

def opt(name):
    return args[args.index(name) + 1] if name in args else None

if args[:1] == ["version"]:
    if not conf.get("daemon", True):
        out(conf["client"] + "|")
        out("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", err=True)
        sys.exit(1)
    out(conf["client"] + "|" + conf.get("server", "20.10.24"))
elif args[:1] == ["info"]:
    if not conf.get("daemon", True):
        out("Cannot connect to the Docker daemon", err=True); sys.exit(1)
    out(conf.get("server", "20.10.24"))
elif args[:2] == ["buildx", "version"]:
    if not conf.get("buildx"):
        out("docker: 'buildx' is not a docker command.", err=True); sys.exit(1)
    out("github.com/docker/buildx v0.14.0 fake")
elif args[:1] == ["build"] or args[:2] == ["buildx", "build"]:
    buildx = args[0] == "buildx"
    buildkit = buildx or os.environ.get("DOCKER_BUILDKIT") == "1"
    if buildx and not conf.get("buildx"):
        out("docker: 'buildx' is not a docker command.", err=True); sys.exit(1)
    if buildkit and not buildx and conf.get("kit") == "refuse":
        out("ERROR: BuildKit is enabled but the buildx component is missing or broken.",
            "       Install the buildx component to build images with BuildKit:", err=True)
        sys.exit(1)
    if buildkit and conf.get("kit") in ("yes", "refuse") or buildx:
        out(*conf.get("buildkit_output", ["#1 [internal] load build definition from Dockerfile", "#1 DONE 0.0s"]), err=True)
    else:
        out(*conf.get("legacy_output", ["Sending build context to Docker daemon  2.048kB", "Step 1/2 : FROM scratch",
                                        "Successfully built 0123456789ab"]))
    if conf.get("build_exit") and not opt("-t").startswith("e2b-matrix-probe/"):
        sys.exit(conf["build_exit"])
    if conf.get("build_hang") and not opt("-t").startswith("e2b-matrix-probe/"):
        # a build that hangs until it is stopped (SIGTERM); after build_hang s SIGALRM ends it, a failure
        signal.alarm(conf["build_hang"])
        signal.pause()
    image = "sha256:" + "ab" * 32
    Path(opt("--iidfile")).write_text(image)
    if not conf.get("lose_image"):
        known = json.loads(tags.read_text()) if tags.exists() else {}
        known[opt("-t")] = image
        tags.write_text(json.dumps(known))
elif args[:2] == ["image", "inspect"]:
    known = json.loads(tags.read_text()) if tags.exists() else {}
    if args[-1] not in known:
        out(f"Error: No such image: {args[-1]}", err=True); sys.exit(1)
    out(known[args[-1]])
elif args[:2] == ["image", "rm"]:
    known = json.loads(tags.read_text()) if tags.exists() else {}
    known.pop(args[-1], None)
    tags.write_text(json.dumps(known))
else:
    out(f"fake docker: unexpected {args}", err=True); sys.exit(2)
"""

# The kinds of CLI met in the wild (see the module doc).
DOCKER_IO = {"client": "20.10.24+dfsg1", "kit": "yes"}  # Debian's docker.io
NO_BUILDX = {"client": "28.2.2", "kit": "refuse"}  # newer CLI, no buildx plugin
WITH_BUILDX = {"client": "28.2.2", "kit": "refuse", "buildx": True}
NO_DAEMON = {"client": "28.2.2", "kit": "refuse", "daemon": False}
IGNORES_KIT = {"client": "4.9.3", "kit": "ignore"}  # e.g. a podman shim: its own builder


class Fake:
    def __init__(self, root: Path, conf: dict):
        self.dir = root
        self.dir.mkdir(parents=True)
        self.path = self.dir / "docker"
        self.path.write_text(f"#!{sys.executable}\n{FAKE}")
        self.path.chmod(0o755)
        (self.dir / "conf.json").write_text(json.dumps(conf))

    def calls(self) -> list[dict]:
        log = self.dir / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def builds(self) -> list[dict]:
        return [c for c in self.calls() if "build" in c["args"][:2]]


@pytest.fixture
def fake(tmp_path):
    made = iter(range(100))
    return lambda conf: Fake(tmp_path / f"cli{next(made)}", conf)


@pytest.fixture
def machine(fake, monkeypatch, tmp_path):
    """Install fakes as `docker` on PATH and as the system CLI; returns (on_path, system)."""

    def install(on_path: dict | None, system: dict | None):
        a = fake(on_path) if on_path is not None else None
        b = fake(system) if system is not None else None
        path_dirs = [str(a.dir)] if a else []
        monkeypatch.setenv("PATH", os.pathsep.join([*path_dirs, str(tmp_path / "empty")]))
        monkeypatch.setattr(engine, "SYSTEM_DOCKER", str(b.path) if b else str(tmp_path / "absent" / "docker"))
        return a, b

    return install


# ------------------------------------------------------------------ choice


def test_a_cli_that_drives_buildkit_is_preferred_to_the_first_on_path(machine):
    on_path, system = machine(NO_BUILDX, DOCKER_IO)
    docker = DockerCLI()
    assert docker.binary == str(system.path)
    assert docker.uses_buildkit()
    line = docker.describe()
    assert "\n" not in line and str(system.path) in line and "BuildKit" in line
    assert str(on_path.path) in line and "no buildx plugin" in line  # says why the first was passed over
    assert "buildx component is missing" in line


def test_the_first_candidate_wins_when_it_offers_buildkit(machine):
    on_path, system = machine(DOCKER_IO, DOCKER_IO)
    assert DockerCLI().binary == str(on_path.path)
    assert system.calls() == []  # not probed: the first one was enough


def test_the_buildx_plugin_counts_and_builds_go_through_it(machine):
    on_path, _ = machine(WITH_BUILDX, None)
    docker = DockerCLI()
    assert docker.binary == str(on_path.path) and docker.uses_buildkit()
    assert "buildx plugin" in docker.describe()
    docker.build_image("FROM scratch\n", "t:1")
    build = on_path.builds()[-1]["args"]
    assert build[:3] == ["buildx", "build", "--load"]
    assert build[build.index("--progress") + 1] == "plain"


def test_legacy_builder_when_no_candidate_offers_buildkit(machine):
    on_path, _system = machine(NO_BUILDX, NO_BUILDX)
    docker = DockerCLI()
    assert docker.binary == str(on_path.path)  # the first that answers
    assert docker.uses_buildkit() is False
    assert "legacy" in docker.describe()


def test_the_first_candidate_whose_daemon_answers(machine):
    _, system = machine(NO_DAEMON, NO_BUILDX)
    docker = DockerCLI()
    assert docker.binary == str(system.path) and not docker.uses_buildkit()


def test_a_builder_that_ignores_docker_buildkit_is_not_buildkit(machine):
    machine(IGNORES_KIT, None)
    docker = DockerCLI()
    assert not docker.uses_buildkit()
    assert "progress output" in docker.describe()


def test_a_build_whose_image_does_not_reach_the_daemon_is_not_proof(machine):
    machine({**DOCKER_IO, "lose_image": True}, None)
    docker = DockerCLI()
    assert not docker.uses_buildkit()
    assert "did not land in the daemon" in docker.describe()


def test_the_probe_leaves_no_image_behind(machine):
    on_path, _ = machine(DOCKER_IO, None)
    assert DockerCLI().uses_buildkit()
    probe_tags = [c["args"][c["args"].index("-t") + 1] for c in on_path.builds()]
    assert probe_tags and all(t.startswith("e2b-matrix-probe/") for t in probe_tags)
    assert json.loads((on_path.dir / "tags.json").read_text()) == {}


def test_the_same_file_twice_is_one_candidate(machine, tmp_path, monkeypatch):
    _, system = machine(None, NO_BUILDX)
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "docker").symlink_to(system.path)
    monkeypatch.setenv("PATH", str(link_dir))
    assert not DockerCLI().uses_buildkit()
    assert sum(c["args"][:1] == ["version"] for c in system.calls()) == 1


# ------------------------------------------------------------------ settings


def test_a_named_binary_is_the_only_candidate(machine, fake):
    machine(DOCKER_IO, DOCKER_IO)
    named = fake(NO_BUILDX)
    docker = DockerCLI(str(named.path))
    assert docker.binary == str(named.path)
    assert not docker.uses_buildkit()


def test_a_named_binary_is_looked_up_on_path(machine):
    on_path, _ = machine(DOCKER_IO, None)
    assert DockerCLI("docker").binary == str(on_path.path)


def test_buildkit_forced_on_without_any_is_a_docker_error(machine):
    machine(NO_BUILDX, NO_BUILDX)
    docker = DockerCLI(buildkit=True)
    with pytest.raises(DockerError, match="BuildKit is required"):
        docker.uses_buildkit()
    with pytest.raises(DockerError, match="BuildKit is required"):
        docker.build_image("FROM scratch\n", "t:1")
    assert docker.daemon_available()  # the daemon itself is fine
    assert "BuildKit is required" in docker.describe()


def test_buildkit_forced_on_takes_a_cli_that_offers_it(machine):
    _, system = machine(NO_BUILDX, DOCKER_IO)
    docker = DockerCLI(buildkit=True)
    assert docker.uses_buildkit() and docker.binary == str(system.path)


def test_buildkit_forced_off_probes_no_build(machine):
    on_path, system = machine(DOCKER_IO, DOCKER_IO)
    docker = DockerCLI(buildkit=False)
    assert docker.binary == str(on_path.path)
    assert not docker.uses_buildkit()
    assert on_path.builds() == [] and system.calls() == []
    docker.build_image("FROM scratch\n", "t:1")
    assert on_path.builds()[-1]["DOCKER_BUILDKIT"] == "0"


def test_our_environment_variables_are_not_read(machine, monkeypatch):
    on_path, _ = machine(DOCKER_IO, None)
    monkeypatch.setenv("E2B_MATRIX_DOCKER_CLI", "/nonexistent/docker")
    monkeypatch.setenv("E2B_MATRIX_DOCKER_BUILDKIT", "0")
    docker = DockerCLI()
    assert docker.binary == str(on_path.path) and docker.uses_buildkit()


# ------------------------------------------------------------------ failures


def test_a_missing_binary_is_a_docker_error_not_a_crash(tmp_path):
    missing = str(tmp_path / "nowhere" / "docker")
    docker = DockerCLI(missing)
    assert docker.binary == missing
    assert docker.daemon_available() is False
    with pytest.raises(DockerError, match="no docker CLI"):  # it cannot say: not "no such image"
        docker.image_exists("anything")
    assert docker.uses_buildkit() is False
    assert missing in docker.describe()
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.build_image("FROM scratch\n", "t:1")
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.run_in_container("img", "true")
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.image_id("img")
    with pytest.raises(DockerError):
        DockerCLI(missing, buildkit=True).uses_buildkit()


def test_no_docker_anywhere(machine):
    machine(None, None)
    docker = DockerCLI()
    assert docker.binary == "docker"
    assert docker.daemon_available() is False
    assert "no docker CLI runs" in docker.describe()


def test_a_file_that_is_not_executable_is_an_error(tmp_path):
    path = tmp_path / "docker"
    path.write_text("not a program")
    docker = DockerCLI(str(path))
    assert docker.daemon_available() is False
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.build_image("FROM scratch\n", "t:1")


# ------------------------------------------------------------------ caching


def test_the_discovery_runs_once_per_process(machine):
    on_path, system = machine(NO_BUILDX, DOCKER_IO)
    DockerCLI().uses_buildkit()
    before = len(on_path.calls()) + len(system.calls())
    for _ in range(3):
        assert DockerCLI().binary == str(system.path)
    assert len(on_path.calls()) + len(system.calls()) == before


def test_concurrent_first_calls_probe_once(machine):
    _on_path, system = machine(NO_BUILDX, DOCKER_IO)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(DockerCLI().uses_buildkit())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
    assert sum(c["args"][:1] == ["version"] for c in system.calls()) == 1


def test_an_answer_found_without_a_daemon_is_not_kept(machine):
    on_path, _ = machine(NO_DAEMON, None)
    docker = DockerCLI()
    assert not docker.uses_buildkit()
    conf = on_path.dir / "conf.json"
    conf.write_text(json.dumps(DOCKER_IO))  # the daemon is up now, with a BuildKit-capable CLI
    assert docker.uses_buildkit()


# ------------------------------------------------------------------ builds

BUILDKIT_OUTPUT = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 sha256:" + "c8" * 32,
    "#1 DONE 0.0s",
    "#5 [2/2] RUN echo hello",
    "#5 0.081 hello",
    "#5 0.082 ",
    "#5 0.083   indented",
    "#5 DONE 0.1s",
]


def test_a_buildkit_build_passes_each_step_line_as_printed(machine):
    on_path, _ = machine({**DOCKER_IO, "buildkit_output": BUILDKIT_OUTPUT}, None)
    docker = DockerCLI()
    lines: list[str] = []
    image = docker.build_image("FROM scratch\n", "t:1", on_log=lines.append, labels={"k": "v"})
    assert image == "sha256:" + "ab" * 32
    assert lines == [
        "#1 [internal] load build definition from Dockerfile",
        "#1 DONE 0.0s",
        "#5 [2/2] RUN echo hello",
        "hello",
        "  indented",
        "#5 DONE 0.1s",
    ]
    call = on_path.builds()[-1]
    args = call["args"]
    assert call["DOCKER_BUILDKIT"] == "1" and args[0] == "build"
    assert args[args.index("--progress") + 1] == "plain"
    assert args[args.index("--network") + 1] == "host"
    assert "--force-rm" not in args and "--iidfile" in args
    assert args[args.index("--label") + 1] == "k=v"


def test_a_legacy_build_skips_the_banner_and_removes_failed_containers(machine):
    banner = [
        "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.",
        "            BuildKit is currently disabled; enable it by removing the DOCKER_BUILDKIT=0",
        "            environment-variable.",
    ]
    on_path, _ = machine({**NO_BUILDX, "legacy_output": [*banner, "Step 1/1 : FROM scratch", "#5 0.1 kept"]}, None)
    docker = DockerCLI()
    lines: list[str] = []
    docker.build_image("FROM scratch\n", "t:1", on_log=lines.append)
    assert lines == ["Step 1/1 : FROM scratch", "#5 0.1 kept"]  # BuildKit's prefixes are not touched here
    call = on_path.builds()[-1]
    assert call["DOCKER_BUILDKIT"] == "0" and "--force-rm" in call["args"] and "--progress" not in call["args"]


def test_a_failed_build_carries_its_last_lines(machine):
    machine({**DOCKER_IO, "buildkit_output": [*BUILDKIT_OUTPUT, "#6 ERROR: exit code: 3"], "build_exit": 1}, None)
    with pytest.raises(DockerError) as info:
        DockerCLI().build_image("FROM scratch\n", "t:1")
    assert info.value.returncode == 1
    assert "hello" in info.value.output and "#6 ERROR: exit code: 3" in info.value.output
