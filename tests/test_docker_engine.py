"""docker_engine against a real Docker daemon (make e2e; scripts/docker-up.sh starts one).

Run: python -m pytest -q -m docker tests/test_docker_engine.py
(E2B_MATRIX_DOCKER_BUILDKIT=0 runs the same tests with the legacy builder.)

Without a daemon these tests skip, except in CI (CI=true), where the CI script
starts dockerd and a missing daemon is a failure. The discovery's logic without
a daemon: tests/test_docker_discovery.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import DOCKER_BASE as BASE
from conftest import docker_required, image_size, remove_images
from e2b_matrix.backends import docker_engine as engine
from e2b_matrix.backends.docker_discovery import discover
from e2b_matrix.backends.docker_engine import DockerCLI
from e2b_matrix.settings import Settings

pytestmark = pytest.mark.docker

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def docker() -> DockerCLI:
    """One DockerCLI for the module, as the settings select it (auto: BuildKit where offered)."""
    return docker_required()


@pytest.fixture
def tags(docker):
    """Fresh image tags for one test; every one is removed afterwards."""
    made: list[str] = []

    def new(name: str = "t") -> str:
        tag = f"e2b-matrix-test/{name}:{uuid.uuid4().hex[:10]}"
        made.append(tag)
        return tag

    yield new
    remove_images(docker, *made)


def concurrently(fn, args) -> None:
    """``fn(*a)`` for each ``a`` in threads started together; returns when all have ended."""
    threads = [threading.Thread(target=fn, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_build_streams_log_and_returns_the_image_id(docker, tags):
    tag = tags("tiny")
    nonce = uuid.uuid4().hex[:8]
    dockerfile = (
        f"FROM {BASE}\n"
        "COPY files/hello.txt /opt/hello.txt\n"
        f"RUN cat /opt/hello.txt && echo run-marker-{nonce} && echo to-stderr-{nonce} >&2\n"
    )
    lines: list[str] = []
    image = docker.build_image(
        dockerfile,
        tag,
        context_files={"files/hello.txt": f"hello {nonce}\n".encode()},
        on_log=lines.append,
        labels={"e2b-matrix.test": nonce},
    )

    assert image.startswith("sha256:")
    assert image == docker.image_id(tag)
    assert docker.image_exists(tag)
    assert image_size(docker, tag) >= image_size(docker, BASE) > 0
    assert any(f"run-marker-{nonce}" in line for line in lines)
    assert any(line.strip() == f"hello {nonce}" for line in lines)  # the context file's text
    assert not any("DEPRECATED" in line for line in lines)  # the legacy builder's banner is dropped
    assert not any("\x1b" in line for line in lines)  # nor terminal colour codes
    assert any(line.strip() == f"to-stderr-{nonce}" for line in lines)  # stderr too
    labels = subprocess.run(
        [docker.discovery.binary, "image", "inspect", "--format", '{{index .Config.Labels "e2b-matrix.test"}}', tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert labels == nonce

    assert docker.run_in_container(tag, "cat /opt/hello.txt") == (0, f"hello {nonce}\n")

    docker.remove_image(tag)
    assert not docker.image_exists(tag)
    docker.remove_image(tag)  # already gone: no error
    with pytest.raises(engine.DockerError):
        docker.image_id(tag)


def test_failing_run_raises_with_its_output(docker, tags):
    tag = tags("fails")
    nonce = uuid.uuid4().hex[:8]
    dockerfile = f"FROM {BASE}\nRUN echo about-to-fail-{nonce} && exit 3\n"
    lines: list[str] = []
    with pytest.raises(engine.DockerError) as info:
        docker.build_image(dockerfile, tag, on_log=lines.append, no_cache=True)

    assert f"about-to-fail-{nonce}" in str(info.value)
    assert f"about-to-fail-{nonce}" in info.value.output
    assert info.value.returncode not in (None, 0)
    assert any(f"about-to-fail-{nonce}" in line for line in lines)
    assert not docker.image_exists(tag)


def test_concurrent_builds_do_not_interfere(docker, tags):
    jobs = {tags(f"par{i}"): uuid.uuid4().hex[:8] for i in range(2)}
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def build(tag: str, nonce: str):
        try:
            results[tag] = docker.build_image(
                f"FROM {BASE}\nCOPY n.txt /n.txt\nRUN cat /n.txt\n", tag, context_files={"n.txt": nonce.encode()}
            )
        except BaseException as exc:
            errors.append(exc)

    concurrently(build, jobs.items())

    assert not errors
    assert len(set(results.values())) == 2
    for tag, nonce in jobs.items():
        assert results[tag] == docker.image_id(tag)
        assert docker.run_in_container(tag, "cat /n.txt") == (0, nonce)


def test_cancel_stops_a_running_build(docker, tags):
    tag = tags("cancel")
    cancel = threading.Event()

    def on_log(line: str):
        if "sleeping-now" in line:
            cancel.set()

    start = time.monotonic()
    with pytest.raises(engine.DockerCancelled):
        docker.build_image(
            f"FROM {BASE}\nRUN echo sleeping-now && sleep 120\n", tag, on_log=on_log, no_cache=True, cancel=cancel
        )
    assert time.monotonic() - start < 60
    assert not docker.image_exists(tag)


def test_context_file_names_stay_inside_the_context(docker, tags):
    for bad in ("../escape", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            docker.build_image(f"FROM {BASE}\n", tags("bad"), context_files={bad: b"x"})


def test_run_in_container_returns_exit_code_and_combined_output(docker):
    code, output = docker.run_in_container(BASE, "echo to-stdout; echo to-stderr >&2; exit 7")
    assert code == 7
    assert "to-stdout" in output and "to-stderr" in output

    assert docker.run_in_container(BASE, "true") == (0, "")
    assert docker.run_in_container(BASE, "id -un", user="nobody") == (0, "nobody\n")


def test_run_in_container_uses_the_host_network(docker):
    def interfaces(text: str) -> set[str]:
        return {line.split(":")[0].strip() for line in text.splitlines()[2:] if ":" in line}

    code, output = docker.run_in_container(BASE, "cat /proc/net/dev")
    assert code == 0
    assert interfaces(output) == interfaces(Path("/proc/net/dev").read_text())


@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse on this host")
def test_run_in_container_passes_devices(docker):
    assert docker.run_in_container(BASE, "test -c /dev/fuse")[0] != 0
    code, output = docker.run_in_container(
        BASE, "test -c /dev/fuse && grep CapEff /proc/self/status", devices=["/dev/fuse"]
    )
    assert code == 0, output
    assert int(output.split()[-1], 16) & (1 << 21)  # CAP_SYS_ADMIN, to mount a FUSE file system


def test_run_in_container_timeout_removes_the_container(docker):
    with pytest.raises(engine.DockerError, match="ran past"):
        docker.run_in_container(BASE, "echo started; sleep 60", timeout=3)
    leftover = subprocess.run(
        [docker.discovery.binary, "ps", "-aq", "--filter", "name=e2b-matrix-run-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert leftover == []


def test_missing_image_fails_fast_without_pulling(docker):
    start = time.monotonic()
    code, output = docker.run_in_container("e2b-matrix-test/absent:nope", "true")
    assert code == 125 and "absent" in output
    assert time.monotonic() - start < 30


def test_base_image_has_python_and_pip(docker):
    code, output = docker.run_in_container(BASE, "python3 --version")
    assert code == 0 and output.startswith("Python 3."), output
    code, output = docker.run_in_container(BASE, "pip --version")
    assert code == 0 and "python 3." in output, output
    code, output = docker.run_in_container(BASE, "ls /usr/lib/python3*/EXTERNALLY-MANAGED")
    assert code != 0, "plain pip install must work as on E2B's images"
    code, output = docker.run_in_container(
        BASE, "sudo -n true && ps -p 1 -o comm= && update-ca-certificates --help >/dev/null"
    )
    assert code == 0, output


def test_pip_install_in_a_build_with_the_host_ca_certificates(docker, tags):
    """The approach the Docker backend uses behind a TLS-intercepting proxy."""
    certs = engine.host_ca_certificates()
    assert all(p.suffix == ".crt" and p.is_file() for p in certs)
    context = {f"ca/{p.name}": p.read_bytes() for p in certs}
    lines = [f"FROM {BASE}"]
    if certs:
        lines += ["COPY ca/ /usr/local/share/ca-certificates/", "RUN update-ca-certificates"]
    lines += [
        f"ENV PIP_CERT={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} SSL_CERT_FILE={CA_BUNDLE}",
        "RUN pip install --no-cache-dir --no-deps six && python3 -c 'import six; print(\"six\", six.__version__)'",
    ]
    tag = tags("pip")
    log: list[str] = []
    image = docker.build_image("\n".join(lines) + "\n", tag, context_files=context, on_log=log.append, no_cache=True)

    assert image == docker.image_id(tag)
    assert any(line.startswith("Successfully installed six") for line in log), log[-20:]
    code, output = docker.run_in_container(tag, "python3 -c 'import six; print(six.__name__)'")
    assert (code, output) == (0, "six\n")


def test_no_docker_cli_is_an_error_not_a_crash():
    missing = DockerCLI(discover("/nonexistent/docker"))
    assert missing.daemon_available() is False
    with pytest.raises(engine.DockerError, match="no docker CLI"):  # it cannot say: not "no such image"
        missing.image_exists(BASE)
    with pytest.raises(engine.DockerError, match="no docker CLI"):
        missing.build_image(f"FROM {BASE}\n", "e2b-matrix-test/nocli:never")
    with pytest.raises(engine.DockerError, match="no docker CLI"):
        missing.run_in_container(BASE, "true")


def test_describe_names_the_binary_and_the_builder(docker):
    found = docker.discovery
    line = found.describe()
    assert "\n" not in line
    assert found.binary in line
    assert ("BuildKit:" in line) == found.buildkit
    assert os.path.isabs(found.binary) or found.binary == "docker"


def test_tag_image(docker, tags):
    tag = tags("tagged")
    docker.tag_image(BASE, tag)
    assert docker.image_id(tag) == docker.image_id(BASE)
    docker.remove_image(tag)
    assert docker.image_exists(BASE)  # removing a tag keeps the image
    with pytest.raises(engine.DockerError):
        docker.tag_image("e2b-matrix-test/absent:nope", tags("never"))


# ------------------------------------------------------------------ shared steps


def builder(buildkit: bool | None) -> DockerCLI:
    """A DockerCLI with the set CLI and the builder given (None: auto)."""
    return DockerCLI(discover(Settings.from_env().docker_cli, buildkit))


def two_builds_sharing_a_step(docker: DockerCLI, tags) -> tuple[set[str], set[tuple[int, str]], dict]:
    """Build two Dockerfiles at once that share one slow step with a fresh text.

    The step prints and stores a random UUID: (the UUIDs any log shows, the two
    images' /x, the logs). One execution of the step gives one UUID.
    """
    nonce = uuid.uuid4().hex[:10]
    shared = f"RUN sleep 3 && echo shared-{nonce}-$(cat /proc/sys/kernel/random/uuid) | tee /x\n"
    jobs = {tags("shared-a"): "a", tags("shared-b"): "b"}
    logs: dict[str, list[str]] = {tag: [] for tag in jobs}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def build(tag: str, tail: str):
        try:
            start.wait()
            docker.build_image(f"FROM {BASE}\n{shared}RUN echo {tail} > /y\n", tag, on_log=logs[tag].append)
        except BaseException as exc:
            errors.append(exc)

    concurrently(build, jobs.items())
    assert not errors, errors
    marker = re.compile(rf"shared-{nonce}-[0-9a-f-]{{36}}")
    runs = {line.strip() for lines in logs.values() for line in lines if marker.fullmatch(line.strip())}
    contents = {docker.run_in_container(tag, "cat /x") for tag in jobs}
    for tag, tail in jobs.items():
        assert docker.run_in_container(tag, "cat /y") == (0, f"{tail}\n")
    return runs, contents, logs


def test_buildkit_runs_a_step_shared_by_concurrent_builds_once(tags):
    docker = builder(None)
    if not docker.discovery.buildkit:
        message = f"no BuildKit here: {docker.discovery.describe()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    runs, contents, logs = two_builds_sharing_a_step(docker, tags)
    # One execution: both builds waited on the same step (its output may reach one log or both).
    assert len(runs) == 1, logs
    assert len(contents) == 1 and next(iter(contents))[1].strip() in runs  # the same /x in both images


def test_legacy_builder_runs_a_shared_step_twice(tags):
    runs, contents, logs = two_builds_sharing_a_step(builder(False), tags)
    assert len(runs) == 2, logs
    assert len(contents) == 2
