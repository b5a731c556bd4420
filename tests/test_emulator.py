"""Tests of the E2B template-build API emulator, driven through the real e2b SDK.

The SDK is pointed at the emulator with E2B_API_URL / E2B_API_KEY; every
assertion is about what the *real* SDK does against it: IDs returned, logs
paged, exceptions mapped from status codes, retries performed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import httpx
import pytest
from e2b import (
    AuthenticationException,
    BuildException,
    BuildInfo,
    RateLimitException,
    ServiceBusyException,
    Template,
    TemplateBuildStatus,
)

from e2b_emulator import E2BEmulator

API_KEY = "e2b_test_key"
PREFIX = "["  # emulator log lines look like "[name] line i/N"


@pytest.fixture
def emu(monkeypatch):
    """A running emulator the SDK talks to through the environment."""
    with E2BEmulator(api_key=API_KEY, default_duration=0.2, default_log_lines=3) as emulator:
        for key, value in emulator.env().items():
            monkeypatch.setenv(key, value)
        yield emulator


def simple_template():
    return Template().from_image("python:3.11-slim").run_cmd("echo hello").run_cmd("echo world")


def emulator_lines(entries, name):
    """The messages of the emulator's own log lines for build ``name``."""
    return [e.message for e in entries if e.message.startswith(f"[{name}] ")]


def raw(emu, method, path, body=None, key=API_KEY):
    """A plain urllib request: (status, headers, parsed JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(emu.url + path, data=data, method=method)
    req.add_header("X-API-KEY", key)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            payload = resp.read()
            return resp.status, resp.headers, json.loads(payload) if payload else None
    except urllib.error.HTTPError as err:
        payload = err.read()
        return err.code, err.headers, json.loads(payload) if payload else None


# --------------------------------------------------------------------------- happy path


def test_successful_build_returns_emulator_ids_and_logs(emu):
    emu.configure("hello", duration=0.3, log_lines=6)
    logs = []

    info = Template.build(simple_template(), "hello", cpu_count=4, memory_mb=2048, on_build_logs=logs.append)

    (build,) = emu.builds
    assert info.template_id == build.template_id == emu.template_id("hello")
    assert info.build_id == build.build_id
    assert info.tags == ["default"]
    assert build.status == "ready" and not build.cancelled
    assert (build.cpu_count, build.memory_mb) == (4, 2048)
    assert build.request_body == {"name": "hello", "cpuCount": 4, "memoryMB": 2048}
    assert build.start_body["fromImage"] == "python:3.11-slim"
    assert build.start_body["force"] is False
    assert [s["args"] for s in build.steps] == [["echo hello"], ["echo world"]]
    assert emulator_lines(logs, "hello") == [f"[hello] line {i}/6" for i in range(1, 7)]
    # plain HTTP/1.1 with keep-alive: one connection serves the whole build
    assert emu.http_versions == {"HTTP/1.1"}
    assert emu.connection_count < emu.request_count
    assert all(status < 300 for _, _, status in emu.requests)


def test_same_name_keeps_template_id_new_build_id(emu):
    first = Template.build(simple_template(), "stable")
    second = Template.build(simple_template(), "stable:v2", tags=["latest"])
    other = Template.build(simple_template(), "other")

    assert first.template_id == second.template_id != other.template_id
    assert first.build_id != second.build_id
    assert second.tags == ["v2", "latest"]
    assert uuid.UUID(second.build_id)


def test_250_log_lines_are_paged_fully_in_order(emu):
    emu.configure("chatty", duration=0.3, log_lines=250)
    logs = []

    info = Template.build(simple_template(), "chatty", on_build_logs=logs.append)

    assert emulator_lines(logs, "chatty") == [f"[chatty] line {i}/250" for i in range(1, 251)]
    # the API serves at most 100 entries per call
    assert len(Template.get_build_status(info, logs_offset=0).log_entries) == 100
    tail = Template.get_build_status(info, logs_offset=200)
    assert tail.status == TemplateBuildStatus.READY and len(tail.log_entries) == 50
    assert Template.get_build_status(info, logs_offset=250).log_entries == []


def test_logs_appear_progressively_while_building(emu):
    emu.configure("slow", duration=1.0, log_lines=10)

    info = Template.build_in_background(simple_template(), "slow")
    early = Template.get_build_status(info, logs_offset=0)
    assert early.status == TemplateBuildStatus.BUILDING
    assert 1 <= len(early.log_entries) < 10

    time.sleep(1.05)
    done = Template.get_build_status(info, logs_offset=0)
    assert done.status == TemplateBuildStatus.READY
    assert len(done.log_entries) == 10


def test_status_is_waiting_until_triggered(emu):
    emu.inject("trigger", delay=0.6)  # hold the trigger so the build stays "waiting"
    worker = threading.Thread(target=Template.build_in_background, args=(simple_template(), "held"))
    worker.start()
    try:
        deadline = time.monotonic() + 3
        while not emu.builds and time.monotonic() < deadline:
            time.sleep(0.01)
        build = emu.builds[0]
        info = BuildInfo(template_id=build.template_id, build_id=build.build_id, name="held", alias="held")
        assert Template.get_build_status(info).status == TemplateBuildStatus.WAITING
    finally:
        worker.join(5)
    assert emu.build(build.build_id).status == "building"


def test_copy_step_uploads_once_then_reports_present(emu, tmp_path):
    (tmp_path / "app.txt").write_text("payload")
    template = Template(file_context_path=tmp_path).from_image("python:3.11").copy("app.txt", "/app/")
    logs = []

    Template.build(template, "copier", on_build_logs=logs.append)
    Template.build(template, "copier", on_build_logs=logs.append)

    (files_hash,) = emu.uploads
    assert emu.upload_count(files_hash) == 1
    assert len(emu.uploads[files_hash]) > 0  # the tar archive the SDK sent
    assert emu.count("files") == 2 and emu.count("upload") == 1
    first, second = emu.builds
    assert first.steps[0]["type"] == "COPY" and first.steps[0]["filesHash"] == files_hash
    messages = [e.message for e in logs]
    assert "Uploaded 'app.txt'" in messages
    assert "Skipping upload of 'app.txt', already cached" in messages


def test_concurrent_builds_take_about_one_duration(emu):
    names = [f"conc-{i}" for i in range(4)]
    for name in names:
        emu.configure(name, duration=1.0, log_lines=5)
    errors = []

    def build(name):
        try:
            Template.build(simple_template(), name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(n,)) for n in names]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - start

    assert not errors
    assert elapsed < 2.5, f"4 concurrent 1 s builds took {elapsed:.2f} s"
    assert sorted(b.name for b in emu.builds if b.status == "ready") == names


# --------------------------------------------------------------------------- failures


def test_failing_step_raises_build_exception(emu):
    emu.configure("broken", duration=0.2, log_lines=4, fail_at_step=1, fail_message="step 2 failed: exit code 1")
    logs = []

    with pytest.raises(BuildException, match="step 2 failed: exit code 1"):
        Template.build(simple_template(), "broken", on_build_logs=logs.append)

    (build,) = emu.builds
    assert build.status == "error" and not build.cancelled
    errors = [e for e in logs if e.level == "error" and e.message == "step 2 failed: exit code 1"]
    assert len(errors) == 1
    status = Template.get_build_status(
        BuildInfo(template_id=build.template_id, build_id=build.build_id, name="broken", alias="broken")
    )
    assert status.reason.step == "2"
    assert status.reason.log_entries[-1].message == "step 2 failed: exit code 1"


def test_newer_build_cancels_older_build_of_same_name(emu):
    emu.configure("dup", duration=5.0)
    outcome = {}

    def older():
        try:
            Template.build(simple_template(), "dup")
        except BuildException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=older)
    worker.start()
    deadline = time.monotonic() + 3
    while not any(b.status == "building" for b in emu.builds) and time.monotonic() < deadline:
        time.sleep(0.02)
    emu.configure("dup", duration=0.2)
    newer = Template.build(simple_template(), "dup")
    worker.join(3)

    assert not worker.is_alive()
    assert "cancelled by a newer build" in str(outcome["error"])
    old, new = emu.builds
    assert old.cancelled and old.status == "error" and new.build_id in old.cancel_message
    assert new.build_id == newer.build_id and new.status == "ready"


def test_other_tag_of_same_name_is_not_cancelled(emu):
    emu.configure("tagged", duration=0.5)
    first = Template.build_in_background(simple_template(), "tagged:v1")
    Template.build(simple_template(), "tagged:v2")
    time.sleep(0.1)
    assert Template.get_build_status(first).status == TemplateBuildStatus.READY
    assert not any(b.cancelled for b in emu.builds)


def test_unknown_build_status_is_404(emu):
    info = Template.build(simple_template(), "known")
    unknown_build = BuildInfo(template_id=info.template_id, build_id=str(uuid.uuid4()), name="known", alias="known")
    unknown_template = BuildInfo(template_id="nope", build_id=info.build_id, name="nope", alias="nope")

    with pytest.raises(BuildException, match="^404: "):
        Template.get_build_status(unknown_build)
    with pytest.raises(BuildException, match="^404: "):
        Template.get_build_status(unknown_template)
    # the API also accepts the template's name in place of its ID
    by_name = BuildInfo(template_id="known", build_id=info.build_id, name="known", alias="known")
    assert Template.get_build_status(by_name).status == TemplateBuildStatus.READY


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("Upper", {}, "Invalid template name"),
        ("ok:Bad!", {}, "Invalid tag"),
        ("ok", {"tags": ["no space"]}, "Invalid tag"),
        ("ok", {"cpu_count": 3}, "cpuCount"),
        ("ok", {"cpu_count": 34}, "cpuCount"),
        ("ok", {"memory_mb": 64}, "memoryMB"),
        ("ok", {"memory_mb": 513}, "memoryMB"),
    ],
)
def test_invalid_build_requests_are_400(emu, name, kwargs, message):
    with pytest.raises(BuildException, match=f"^400: .*{message}"):
        Template.build(simple_template(), name, **kwargs)
    assert emu.builds == []


# --------------------------------------------------------------------------- auth


def test_wrong_api_key_raises_authentication_exception(emu):
    with pytest.raises(AuthenticationException, match="401"):
        Template.build(simple_template(), "secret", api_key="e2b_wrong_key")
    assert emu.requests == [("POST", "/v3/templates", 401)]


def test_forbidden_api_key_is_403(emu):
    emu.forbid("e2b_other_team")
    with pytest.raises(BuildException, match="^403: "):
        Template.build(simple_template(), "secret", api_key="e2b_other_team")


def test_api_url_and_key_can_be_passed_explicitly(emu, monkeypatch):
    monkeypatch.delenv("E2B_API_URL")
    monkeypatch.delenv("E2B_API_KEY")
    info = Template.build(simple_template(), "explicit", api_url=emu.url, api_key=emu.api_key)
    assert info.build_id == emu.builds[0].build_id


# --------------------------------------------------------------------------- SDK retries


def test_sdk_absorbs_two_429_with_retry_after(emu):
    emu.inject("request_build", status=429, count=2, retry_after=1)

    start = time.monotonic()
    Template.build(simple_template(), "patient")
    elapsed = time.monotonic() - start

    assert emu.count("request_build") == 3  # 2 refused + 1 accepted
    assert emu.count("request_build", status=429) == 2
    assert elapsed >= 2.0  # the SDK waited Retry-After (1 s) before each retry


def test_429_beyond_sdk_retries_raises_rate_limit(emu):
    emu.inject("request_build", status=429, count=10, retry_after=0)

    with pytest.raises(RateLimitException, match="429"):
        Template.build(simple_template(), "impatient")

    # DEFAULT_RETRIES = 3: one attempt plus three retries
    assert emu.count("request_build") == 4
    assert emu.pending_faults == 6


def test_retries_option_bounds_sdk_retries(emu):
    emu.inject("request_build", status=429, count=10, retry_after=0)
    with pytest.raises(RateLimitException):
        Template.build(simple_template(), "bounded", retries=1)
    assert emu.count("request_build") == 2


def test_5xx_on_status_is_retried_and_503_exhausted_is_service_busy(emu):
    emu.inject("status", status=503, count=2)  # no Retry-After: short backoff
    Template.build(simple_template(), "flaky")
    assert emu.count("status", status=503) == 2

    emu.inject("request_build", status=503, count=4)
    with pytest.raises(ServiceBusyException, match="503"):
        Template.build(simple_template(), "flaky")


def test_500_is_not_retried(emu):
    emu.inject("trigger", status=500)
    with pytest.raises(BuildException, match="^500: "):
        Template.build(simple_template(), "fragile")
    assert emu.count("trigger") == 1


def test_connection_reset_is_not_retried(emu):
    emu.inject("request_build", reset=True)
    with pytest.raises(httpx.TransportError):
        Template.build(simple_template(), "reset")
    assert emu.requests == [("POST", "/v3/templates", 0)]
    Template.build(simple_template(), "reset")  # the next request is served normally


# --------------------------------------------------------------------------- the emulator itself


def test_faults_are_consumed_in_order_with_e2b_error_bodies(emu):
    emu.inject("*", status=429, retry_after=7)
    emu.inject("*", status=502, body={"code": 502, "message": "bad gateway"})

    status, headers, body = raw(emu, "GET", "/templates/x/files/abc")
    assert (status, headers["Retry-After"], body["code"]) == (429, "7", 429)
    status, _, body = raw(emu, "POST", "/v3/templates", {"name": "x"})
    assert (status, body) == (502, {"code": 502, "message": "bad gateway"})
    status, _, body = raw(emu, "GET", "/templates/x/files/abc", key="wrong")
    assert (status, body["code"]) == (401, 401) and isinstance(body["message"], str)
    assert emu.request_count == 3
    emu.reset_counters()
    assert emu.request_count == 0 and emu.requests == []


def test_request_build_response_shape(emu):
    status, _, body = raw(emu, "POST", "/v3/templates", {"name": "shape:v1", "tags": ["x.y"]})
    assert status == 202
    assert set(body) == {"templateID", "buildID", "public", "names", "tags", "aliases"}
    assert body["tags"] == ["v1", "x.y"] and body["names"] == ["shape"]

    status, _, body = raw(emu, "POST", f"/v2/templates/{body['templateID']}/builds/{uuid.uuid4()}", {"fromImage": "x"})
    assert status == 404 and body["code"] == 404


def test_env_binding_and_clean_stop():
    emulator = E2BEmulator(api_key="k").start()
    try:
        assert emulator.url.startswith("http://127.0.0.1:")
        assert emulator.env() == {"E2B_API_URL": emulator.url, "E2B_API_KEY": "k"}
        host, port = emulator._server.server_address
        assert host == "127.0.0.1"
        idle = socket.create_connection((host, port))  # an idle keep-alive client
        emulator.inject("status", delay=30)  # a slow answer must not block stop()
        dropped = []

        def slow_request():
            try:
                raw(emulator, "GET", "/templates/a/builds/b/status")
            except Exception as exc:  # stop() drops the delayed request
                dropped.append(exc)

        slow = threading.Thread(target=slow_request)
        slow.start()
        time.sleep(0.1)
    finally:
        start = time.monotonic()
        emulator.stop()
    slow.join(2)
    idle.close()
    assert time.monotonic() - start < 2
    assert len(dropped) == 1 and not slow.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("e2b-emulator")]
