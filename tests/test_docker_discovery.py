"""The choice of docker CLI and builder (docker_discovery), and DockerCLI's builds with it, without a
Docker daemon (runs in `make test`).

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

from e2b_matrix.backends import docker_discovery
from e2b_matrix.backends.docker import DockerBackend
from e2b_matrix.backends.docker_discovery import discover
from e2b_matrix.backends.docker_engine import DockerCLI, DockerError
from e2b_matrix.errors import ConfigError
from e2b_matrix.lock import TemplateLock
from e2b_matrix.settings import Settings

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
        monkeypatch.setattr(
            docker_discovery, "SYSTEM_DOCKER", str(b.path) if b else str(tmp_path / "absent" / "docker")
        )
        return a, b

    return install


# ------------------------------------------------------------------ choice


def test_a_cli_that_drives_buildkit_is_preferred_to_the_first_on_path(machine):
    on_path, system = machine(NO_BUILDX, DOCKER_IO)
    found = discover()
    assert found.binary == str(system.path)
    assert found.buildkit and found.error is None
    line = found.describe()
    assert "\n" not in line and str(system.path) in line and "BuildKit" in line
    assert str(on_path.path) in line and "no buildx plugin" in line  # says why the first was passed over
    assert "buildx component is missing" in line


def test_the_first_candidate_wins_when_it_offers_buildkit(machine):
    on_path, system = machine(DOCKER_IO, DOCKER_IO)
    assert discover().binary == str(on_path.path)
    assert system.calls() == []  # not probed: the first one was enough


def test_the_buildx_plugin_counts_and_builds_go_through_it(machine):
    on_path, _ = machine(WITH_BUILDX, None)
    found = discover()
    assert found.binary == str(on_path.path) and found.buildkit
    assert "buildx plugin" in found.describe()
    DockerCLI(found).build_image("FROM scratch\n", "t:1")
    build = on_path.builds()[-1]["args"]
    assert build[:3] == ["buildx", "build", "--load"]
    assert build[build.index("--progress") + 1] == "plain"


def test_legacy_builder_when_no_candidate_offers_buildkit(machine):
    on_path, _system = machine(NO_BUILDX, NO_BUILDX)
    found = discover()
    assert found.binary == str(on_path.path)  # the first that answers
    assert found.buildkit is False and found.error is None
    assert "legacy" in found.describe()


def test_the_first_candidate_whose_daemon_answers(machine):
    _, system = machine(NO_DAEMON, NO_BUILDX)
    found = discover()
    assert found.binary == str(system.path) and not found.buildkit and found.daemon_answered


def test_a_builder_that_ignores_docker_buildkit_is_not_buildkit(machine):
    machine(IGNORES_KIT, None)
    found = discover()
    assert not found.buildkit
    assert "progress output" in found.describe()


def test_a_build_whose_image_does_not_reach_the_daemon_is_not_proof(machine):
    machine({**DOCKER_IO, "lose_image": True}, None)
    found = discover()
    assert not found.buildkit
    assert "did not land in the daemon" in found.describe()


def test_the_probe_leaves_no_image_behind(machine):
    on_path, _ = machine(DOCKER_IO, None)
    assert discover().buildkit
    probe_tags = [c["args"][c["args"].index("-t") + 1] for c in on_path.builds()]
    assert probe_tags and all(t.startswith("e2b-matrix-probe/") for t in probe_tags)
    assert json.loads((on_path.dir / "tags.json").read_text()) == {}


def test_the_same_file_twice_is_one_candidate(machine, tmp_path, monkeypatch):
    _, system = machine(None, NO_BUILDX)
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "docker").symlink_to(system.path)
    monkeypatch.setenv("PATH", str(link_dir))
    assert not discover().buildkit
    assert sum(c["args"][:1] == ["version"] for c in system.calls()) == 1


# ------------------------------------------------------------------ settings


def test_a_named_binary_is_the_only_candidate(machine, fake):
    machine(DOCKER_IO, DOCKER_IO)
    named = fake(NO_BUILDX)
    found = discover(str(named.path))
    assert found.binary == str(named.path)
    assert not found.buildkit


def test_a_named_binary_is_looked_up_on_path(machine):
    on_path, _ = machine(DOCKER_IO, None)
    assert discover("docker").binary == str(on_path.path)


def test_buildkit_forced_on_without_any_is_an_error_of_the_answer(machine):
    machine(NO_BUILDX, NO_BUILDX)
    found = discover(buildkit=True)
    assert found.error is not None and "BuildKit is required" in found.error
    assert "BuildKit is required" in found.describe()
    docker = DockerCLI(found)
    with pytest.raises(DockerError, match="BuildKit is required"):
        docker.build_image("FROM scratch\n", "t:1")
    assert docker.daemon_available()  # the daemon itself is fine


def test_buildkit_forced_on_takes_a_cli_that_offers_it(machine):
    _, system = machine(NO_BUILDX, DOCKER_IO)
    found = discover(buildkit=True)
    assert found.buildkit and found.error is None and found.binary == str(system.path)


def test_buildkit_forced_off_probes_no_build(machine):
    on_path, system = machine(DOCKER_IO, DOCKER_IO)
    found = discover(buildkit=False)
    assert found.binary == str(on_path.path)
    assert not found.buildkit
    assert on_path.builds() == [] and system.calls() == []
    DockerCLI(found).build_image("FROM scratch\n", "t:1")
    assert on_path.builds()[-1]["DOCKER_BUILDKIT"] == "0"


def test_our_environment_variables_are_not_read(machine, monkeypatch):
    on_path, _ = machine(DOCKER_IO, None)
    monkeypatch.setenv("E2B_MATRIX_DOCKER_CLI", "/nonexistent/docker")
    monkeypatch.setenv("E2B_MATRIX_DOCKER_BUILDKIT", "0")
    found = discover()
    assert found.binary == str(on_path.path) and found.buildkit


# ------------------------------------------------------------------ failures


def test_a_missing_binary_is_a_docker_error_not_a_crash(tmp_path):
    missing = str(tmp_path / "nowhere" / "docker")
    found = discover(missing)
    assert found.binary == missing and not found.daemon_answered
    assert found.buildkit is False and found.error is None
    assert missing in found.describe()
    docker = DockerCLI(found)
    assert docker.daemon_available() is False
    with pytest.raises(DockerError, match="no docker CLI"):  # it cannot say: not "no such image"
        docker.image_exists("anything")
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.build_image("FROM scratch\n", "t:1")
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.run_in_container("img", "true")
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.image_id("img")
    assert discover(missing, buildkit=True).error is not None


def test_no_docker_anywhere(machine):
    machine(None, None)
    found = discover()
    assert found.binary == "docker" and not found.daemon_answered
    assert DockerCLI(found).daemon_available() is False
    assert "no docker CLI runs" in found.describe()


def test_a_file_that_is_not_executable_is_an_error(tmp_path):
    path = tmp_path / "docker"
    path.write_text("not a program")
    docker = DockerCLI(discover(str(path)))
    assert docker.daemon_available() is False
    with pytest.raises(DockerError, match="no docker CLI"):
        docker.build_image("FROM scratch\n", "t:1")


# ------------------------------------------------------------------ who keeps the answer


def versions_asked(*fakes: Fake) -> int:
    return sum(c["args"][:1] == ["version"] for f in fakes for c in f.calls())


def test_a_docker_cli_builds_with_the_answer_it_was_given(machine):
    """Nothing is kept in the process: a second discovery probes again; a DockerCLI never does."""
    on_path, system = machine(NO_BUILDX, DOCKER_IO)
    found = discover()
    assert versions_asked(on_path, system) == 2
    docker = DockerCLI(found)
    for n in range(3):
        docker.build_image("FROM scratch\n", f"t:{n}")
    assert versions_asked(on_path, system) == 2
    assert [b["args"][b["args"].index("-t") + 1] for b in system.builds()][-3:] == ["t:0", "t:1", "t:2"]
    assert discover() == found and versions_asked(on_path, system) == 4


def docker_backend(monkeypatch, fake: Fake, buildkit: str = "") -> DockerBackend:
    monkeypatch.setenv("E2B_MATRIX_DOCKER_CLI", str(fake.path))
    monkeypatch.setenv("E2B_MATRIX_DOCKER_BUILDKIT", buildkit)
    return DockerBackend(Settings.from_env())


def test_the_docker_backend_probes_once_for_concurrent_first_calls(fake, monkeypatch):
    cli = fake(DOCKER_IO)
    backend = docker_backend(monkeypatch, cli)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(backend.shares_in_flight())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
    assert versions_asked(cli) == 1
    assert backend.engine is backend.engine and versions_asked(cli) == 1  # kept


def test_the_docker_backend_asks_again_after_an_answer_without_a_daemon(fake, monkeypatch):
    cli = fake(NO_DAEMON)
    backend = docker_backend(monkeypatch, cli)
    with pytest.raises(ConfigError, match="no Docker daemon answers"):
        backend.check()
    assert not backend.shares_in_flight()
    (cli.dir / "conf.json").write_text(json.dumps(DOCKER_IO))  # the daemon is up now, with a BuildKit-capable CLI
    backend.check()
    assert backend.shares_in_flight()
    asked = versions_asked(cli)
    assert backend.shares_in_flight() and versions_asked(cli) == asked  # this answer is kept


def test_the_docker_backend_asks_the_daemon_once_for_its_check(fake, monkeypatch):
    """The discovery's ``docker version`` is the daemon's answer: no ``docker info`` after it."""
    cli = fake(DOCKER_IO)
    backend = docker_backend(monkeypatch, cli)
    backend.check()
    assert versions_asked(cli) == 1
    assert not [c for c in cli.calls() if c["args"][:1] == ["info"]]


def test_the_docker_backend_looks_at_no_image_without_a_daemon(fake, monkeypatch, tmp_path):
    cli = fake(NO_DAEMON)
    backend = docker_backend(monkeypatch, cli)
    with pytest.raises(ConfigError, match="no Docker daemon answers: its images were not looked at"):
        backend.leftovers(TemplateLock.load(tmp_path / "templates.docker.lock"), set())
    assert not [c for c in cli.calls() if c["args"][:2] == ["image", "ls"]]


def test_buildkit_required_and_unavailable_stops_the_docker_backend_at_its_check(fake, monkeypatch):
    backend = docker_backend(monkeypatch, fake(NO_BUILDX), buildkit="1")
    with pytest.raises(ConfigError) as info:
        backend.check()
    assert str(info.value).startswith("E2B_MATRIX_DOCKER_BUILDKIT: BuildKit is required but no docker CLI")
    assert "\n" not in str(info.value)


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
    docker = DockerCLI(discover())
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
    docker = DockerCLI(discover())
    lines: list[str] = []
    docker.build_image("FROM scratch\n", "t:1", on_log=lines.append)
    assert lines == ["Step 1/1 : FROM scratch", "#5 0.1 kept"]  # BuildKit's prefixes are not touched here
    call = on_path.builds()[-1]
    assert call["DOCKER_BUILDKIT"] == "0" and "--force-rm" in call["args"] and "--progress" not in call["args"]


def test_a_failed_build_carries_its_last_lines(machine):
    machine({**DOCKER_IO, "buildkit_output": [*BUILDKIT_OUTPUT, "#6 ERROR: exit code: 3"], "build_exit": 1}, None)
    with pytest.raises(DockerError) as info:
        DockerCLI(discover()).build_image("FROM scratch\n", "t:1")
    assert info.value.returncode == 1
    assert "hello" in info.value.output and "#6 ERROR: exit code: 3" in info.value.output


def test_buildkit_required_and_unavailable_is_refused_before_anything_is_written(project, emu, tmp_path_factory):
    """One line naming the variable, exit 2, nothing on disk changed (it was a traceback)."""
    from test_reliability import assert_refused

    cli = Fake(tmp_path_factory.mktemp("elsewhere") / "cli", NO_BUILDX)  # outside the project
    env = {"E2B_MATRIX_DOCKER_CLI": str(cli.path), "E2B_MATRIX_DOCKER_BUILDKIT": "1"}
    line = assert_refused(project, emu, ["build", "minimal", "--backend", "docker"], "E2B_MATRIX_DOCKER_BUILDKIT", env)
    assert "BuildKit is required" in line and not cli.builds()[1:]  # the probe's builds only
