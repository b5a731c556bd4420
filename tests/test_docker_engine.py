"""docker_engine against a real Docker daemon (make e2e; scripts/docker-up.sh starts one).

Run: python -m pytest -q -m docker tests/test_docker_engine.py

Without a daemon these tests skip, except in CI (CI=true), where the CI script
starts dockerd and a missing daemon is a failure.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import DOCKER_BASE as BASE, docker_required
from e2b_matrix.backends import docker_engine as engine

pytestmark = pytest.mark.docker

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module", autouse=True)
def docker_ready():
    docker_required()


@pytest.fixture
def tags():
    """Fresh image tags for one test; every one is removed afterwards."""
    made: list[str] = []

    def new(name: str = "t") -> str:
        tag = f"e2b-matrix-test/{name}:{uuid.uuid4().hex[:10]}"
        made.append(tag)
        return tag

    yield new
    for tag in made:
        engine.remove_image(tag, force=True)


def test_build_streams_log_and_returns_the_image_id(tags):
    tag = tags("tiny")
    nonce = uuid.uuid4().hex[:8]
    dockerfile = (
        f"FROM {BASE}\n"
        "COPY files/hello.txt /opt/hello.txt\n"
        f"RUN cat /opt/hello.txt && echo run-marker-{nonce} && echo to-stderr-{nonce} >&2\n"
    )
    lines: list[str] = []
    image = engine.build_image(
        dockerfile, tag, context_files={"files/hello.txt": f"hello {nonce}\n".encode()},
        on_log=lines.append, labels={"e2b-matrix.test": nonce},
    )

    assert image.startswith("sha256:")
    assert image == engine.image_id(tag)
    assert engine.image_exists(tag)
    assert engine.image_size(tag) >= engine.image_size(BASE) > 0
    assert any(f"run-marker-{nonce}" in line for line in lines)
    assert any(line.strip() == f"hello {nonce}" for line in lines)  # the context file's text
    assert not any("DEPRECATED" in line for line in lines)  # the legacy builder's banner is dropped
    assert not any("\x1b" in line for line in lines)  # nor terminal colour codes
    assert any(line.strip() == f"to-stderr-{nonce}" for line in lines)  # stderr too
    labels = subprocess.run(["docker", "image", "inspect", "--format", "{{index .Config.Labels \"e2b-matrix.test\"}}", tag],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert labels == nonce

    assert engine.run_in_container(tag, "cat /opt/hello.txt") == (0, f"hello {nonce}\n")

    engine.remove_image(tag)
    assert not engine.image_exists(tag)
    engine.remove_image(tag)  # already gone: no error
    with pytest.raises(engine.DockerError):
        engine.image_id(tag)


def test_failing_run_raises_with_its_output(tags):
    tag = tags("fails")
    nonce = uuid.uuid4().hex[:8]
    dockerfile = f"FROM {BASE}\nRUN echo about-to-fail-{nonce} && exit 3\n"
    lines: list[str] = []
    with pytest.raises(engine.DockerError) as info:
        engine.build_image(dockerfile, tag, on_log=lines.append, no_cache=True)

    assert f"about-to-fail-{nonce}" in str(info.value)
    assert f"about-to-fail-{nonce}" in info.value.output
    assert info.value.returncode not in (None, 0)
    assert any(f"about-to-fail-{nonce}" in line for line in lines)
    assert not engine.image_exists(tag)


def test_concurrent_builds_do_not_interfere(tags):
    jobs = {tags(f"par{i}"): uuid.uuid4().hex[:8] for i in range(2)}
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def build(tag: str, nonce: str):
        try:
            results[tag] = engine.build_image(
                f"FROM {BASE}\nCOPY n.txt /n.txt\nRUN cat /n.txt\n", tag,
                context_files={"n.txt": nonce.encode()})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    assert len(set(results.values())) == 2
    for tag, nonce in jobs.items():
        assert results[tag] == engine.image_id(tag)
        assert engine.run_in_container(tag, "cat /n.txt") == (0, nonce)


def test_cancel_stops_a_running_build(tags):
    tag = tags("cancel")
    cancel = threading.Event()

    def on_log(line: str):
        if "sleeping-now" in line:
            cancel.set()

    start = time.monotonic()
    with pytest.raises(engine.DockerCancelled):
        engine.build_image(f"FROM {BASE}\nRUN echo sleeping-now && sleep 120\n", tag,
                           on_log=on_log, no_cache=True, cancel=cancel)
    assert time.monotonic() - start < 60
    assert not engine.image_exists(tag)


def test_context_file_names_stay_inside_the_context(tags):
    for bad in ("../escape", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            engine.build_image(f"FROM {BASE}\n", tags("bad"), context_files={bad: b"x"})


def test_run_in_container_returns_exit_code_and_combined_output():
    code, output = engine.run_in_container(BASE, "echo to-stdout; echo to-stderr >&2; exit 7")
    assert code == 7
    assert "to-stdout" in output and "to-stderr" in output

    assert engine.run_in_container(BASE, "true") == (0, "")
    assert engine.run_in_container(BASE, "id -un", user="nobody") == (0, "nobody\n")


def test_run_in_container_uses_the_host_network():
    def interfaces(text: str) -> set[str]:
        return {line.split(":")[0].strip() for line in text.splitlines()[2:] if ":" in line}

    code, output = engine.run_in_container(BASE, "cat /proc/net/dev")
    assert code == 0
    assert interfaces(output) == interfaces(Path("/proc/net/dev").read_text())


@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse on this host")
def test_run_in_container_passes_devices():
    assert engine.run_in_container(BASE, "test -c /dev/fuse")[0] != 0
    code, output = engine.run_in_container(BASE, "test -c /dev/fuse && grep CapEff /proc/self/status",
                                           devices=["/dev/fuse"])
    assert code == 0, output
    assert int(output.split()[-1], 16) & (1 << 21)  # CAP_SYS_ADMIN, to mount a FUSE file system


def test_run_in_container_timeout_removes_the_container():
    with pytest.raises(engine.DockerError, match="ran past"):
        engine.run_in_container(BASE, "echo started; sleep 60", timeout=3)
    leftover = subprocess.run(["docker", "ps", "-aq", "--filter", "name=e2b-matrix-run-"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert leftover == []


def test_missing_image_fails_fast_without_pulling():
    start = time.monotonic()
    code, output = engine.run_in_container("e2b-matrix-test/absent:nope", "true")
    assert code == 125 and "absent" in output
    assert time.monotonic() - start < 30


def test_base_image_has_python_and_pip():
    code, output = engine.run_in_container(BASE, "python3 --version")
    assert code == 0 and output.startswith("Python 3."), output
    code, output = engine.run_in_container(BASE, "pip --version")
    assert code == 0 and "python 3." in output, output
    code, output = engine.run_in_container(BASE, "ls /usr/lib/python3*/EXTERNALLY-MANAGED")
    assert code != 0, "plain pip install must work as on E2B's images"
    code, output = engine.run_in_container(BASE, "sudo -n true && ps -p 1 -o comm= && update-ca-certificates --help >/dev/null")
    assert code == 0, output


def test_pip_install_in_a_build_with_the_host_ca_certificates(tags):
    """The approach the Docker backend uses behind a TLS-intercepting proxy."""
    certs = engine.host_ca_certificates()
    assert all(p.suffix == ".crt" and p.is_file() for p in certs)
    context = {f"ca/{p.name}": p.read_bytes() for p in certs}
    lines = [f"FROM {BASE}"]
    if certs:
        lines += ["COPY ca/ /usr/local/share/ca-certificates/", "RUN update-ca-certificates"]
    lines += [f"ENV PIP_CERT={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} SSL_CERT_FILE={CA_BUNDLE}",
              "RUN pip install --no-cache-dir --no-deps six && python3 -c 'import six; print(\"six\", six.__version__)'"]
    tag = tags("pip")
    log: list[str] = []
    image = engine.build_image("\n".join(lines) + "\n", tag, context_files=context, on_log=log.append,
                               no_cache=True)

    assert image == engine.image_id(tag)
    assert any(line.startswith("Successfully installed six") for line in log), log[-20:]
    code, output = engine.run_in_container(tag, "python3 -c 'import six; print(six.__name__)'")
    assert (code, output) == (0, "six\n")


def test_no_docker_cli_is_an_error_not_a_crash(monkeypatch):
    monkeypatch.setenv("E2B_MATRIX_DOCKER_CLI", "/nonexistent/docker")
    assert engine.daemon_available() is False
    assert engine.image_exists(BASE) is False
    with pytest.raises(engine.DockerError, match="no docker CLI"):
        engine.build_image(f"FROM {BASE}\n", "e2b-matrix-test/nocli:never")
    with pytest.raises(engine.DockerError, match="no docker CLI"):
        engine.run_in_container(BASE, "true")
