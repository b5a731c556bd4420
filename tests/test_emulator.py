"""Tests of the E2B template-build API emulator, driven through the real e2b SDK.

The SDK is pointed at the emulator with E2B_API_URL / E2B_API_KEY; every
assertion is about what the *real* SDK does against it: IDs returned, logs
paged, exceptions mapped from status codes, retries performed, tags moved,
references resolved by Sandbox.create, layers reused.  Two things the SDK's
high-level calls cannot do are done below its level: the log entries' ``step``
field is read with the SDK's generated client (Template drops it), and a build
is requested without being started with a plain HTTP request in the SDK's shape
(to see a build wait, and a waiting build superseded). A test that reads a build
midway runs the emulator on a clock it moves (``still``): nothing sleeps.
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
    Sandbox,
    SandboxException,
    ServiceBusyException,
    Template,
    TemplateBuildStatus,
    TemplateException,
)
from e2b.api.client.api.templates import get_templates_template_id_builds_build_id_status as build_status_api
from e2b.api.client_sync import get_api_client
from e2b.connection_config import ConnectionConfig

from conftest import wait_for
from e2b_matrix.emulator import E2BEmulator

API_KEY = "e2b_test_key"
PREFIX = "["  # emulator log lines look like "[name] line i/N"


@pytest.fixture
def emu(monkeypatch):
    """A running emulator the SDK talks to through the environment."""
    with E2BEmulator(api_key=API_KEY, default_step_cost=0.05, default_log_lines=3) as emulator:
        for key, value in emulator.env().items():
            monkeypatch.setenv(key, value)
        yield emulator


class StillClock:
    """The emulator's monotonic clock in a test that moves it: time stands still between two
    ``advance`` calls, so a test reads a build at exactly the instant of its course it chose."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock():
    return StillClock()


@pytest.fixture
def still(monkeypatch, clock):
    """The ``emu`` fixture's emulator on ``clock``: a build moves only when the test advances it.
    A test on it starts builds with build_in_background (Template.build would wait forever)."""
    with E2BEmulator(api_key=API_KEY, default_step_cost=0.05, default_log_lines=3, clock=clock) as emulator:
        for key, value in emulator.env().items():
            monkeypatch.setenv(key, value)
        yield emulator


def simple_template():
    return Template().from_image("python:3.11-slim").run_cmd("echo hello").run_cmd("echo world")


def emulator_lines(entries, name):
    """The messages of the emulator's own log lines for build ``name``."""
    return [e.message for e in entries if e.message.startswith(f"[{name}] ")]


def step_logs(info):
    """(step, level, message) of every log entry of a build so far, read with the SDK's generated
    client: Template.get_build_status and on_build_logs drop the ``step`` field."""
    entries, offset = [], 0
    while True:
        page = build_status_api.sync_detailed(
            info.template_id, info.build_id, client=get_api_client(ConnectionConfig()), logs_offset=offset
        ).parsed.log_entries
        if not page:
            return entries
        entries += [(e.step if isinstance(e.step, str) else None, e.level.value, e.message) for e in page]
        offset += len(page)


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


def test_logs_appear_progressively_while_building(still, clock):
    still.configure("slow", duration=1.0, log_lines=10)

    info = Template.build_in_background(simple_template(), "slow")
    first = Template.get_build_status(info, logs_offset=0)
    assert first.status == TemplateBuildStatus.BUILDING
    assert [e.message for e in first.log_entries] == ["[slow] line 1/10"]  # one line at once, one every 0.1 s
    clock.advance(0.55)
    middle = Template.get_build_status(info, logs_offset=0)
    assert middle.status == TemplateBuildStatus.BUILDING
    assert [e.message for e in middle.log_entries] == [f"[slow] line {i}/10" for i in range(1, 7)]

    clock.advance(0.45)
    done = Template.get_build_status(info, logs_offset=0)
    assert done.status == TemplateBuildStatus.READY
    assert len(done.log_entries) == 10


def test_status_is_waiting_until_triggered(still, clock):
    # requested in the SDK's shape, not started: it waits as long as the test likes (see request())
    requested = request(still, "held")
    info = info_of(requested, "held")
    clock.advance(60)
    assert Template.get_build_status(info).status == TemplateBuildStatus.WAITING
    assert start(still, requested)[0] == 202
    assert Template.get_build_status(info).status == TemplateBuildStatus.BUILDING
    clock.advance(1)
    assert Template.get_build_status(info).status == TemplateBuildStatus.READY


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
    first, _second = emu.builds
    assert first.steps[0]["type"] == "COPY" and first.steps[0]["filesHash"] == files_hash
    messages = [e.message for e in logs]
    assert "Uploaded 'app.txt'" in messages
    assert "Skipping upload of 'app.txt', already cached" in messages


def test_concurrent_builds_run_at_once(emu):
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
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert not errors
    assert sorted(b.name for b in emu.builds if b.status == "ready") == names
    # they ran at once: each was started before any other ended (4 clients, none waiting for another)
    assert max(b.triggered_at for b in emu.builds) < min(b.finished_at for b in emu.builds)


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


def test_starting_a_newer_build_cancels_the_running_one(emu):
    # E2B: handlers/template_start_build_v2.go -> CheckAndCancelConcurrentBuilds, at the newer build's start
    emu.configure("dup", duration=5.0)
    outcome = {}

    def older():
        try:
            Template.build(simple_template(), "dup")
        except BuildException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=older)
    worker.start()
    wait_for(lambda: any(b.status == "building" for b in emu.builds), what="the older build to start")
    emu.configure("dup", duration=0.2)
    newer = Template.build(simple_template(), "dup")
    worker.join(3)

    assert not worker.is_alive()
    assert str(outcome["error"]) == "build was cancelled"
    old, new = emu.builds
    assert old.cancelled and old.status == "error" and old.cancel_message == "build was cancelled"
    assert old.finished_at == pytest.approx(new.triggered_at)  # cancelled when the newer one started
    assert new.build_id == newer.build_id and new.status == "ready" and not new.cancelled


def test_other_tag_of_same_name_is_not_cancelled(still, clock):
    still.configure("tagged", duration=0.5)
    first = Template.build_in_background(simple_template(), "tagged:v1")
    clock.advance(0.1)
    second = Template.build_in_background(simple_template(), "tagged:v2")  # started while the first runs
    clock.advance(0.5)
    assert [Template.get_build_status(b).status for b in (first, second)] == [TemplateBuildStatus.READY] * 2
    assert not any(b.cancelled for b in still.builds)


def test_unknown_build_status_is_400(emu):
    # E2B: handlers/template_build_status.go answers 400 "Build '<id>' not found"; the lookup
    # (GetTemplateBuildWithTemplate) needs the template's ID, so its name finds nothing either
    info = Template.build(simple_template(), "known")
    unknown_build = BuildInfo(template_id=info.template_id, build_id=str(uuid.uuid4()), name="known", alias="known")
    unknown_template = BuildInfo(template_id="nope", build_id=info.build_id, name="nope", alias="nope")
    by_name = BuildInfo(template_id="known", build_id=info.build_id, name="known", alias="known")

    for build in (unknown_build, unknown_template, by_name):
        with pytest.raises(BuildException, match=f"^400: Build '{build.build_id}' not found"):
            Template.get_build_status(build)
    bad_id = BuildInfo(template_id=info.template_id, build_id="not-a-uuid", name="known", alias="known")
    with pytest.raises(BuildException, match=r"^400: Invalid build id"):
        Template.get_build_status(bad_id)
    assert Template.get_build_status(info).status == TemplateBuildStatus.READY


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
    with pytest.raises(BuildException, match=r"^403: "):
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
    with pytest.raises(BuildException, match=r"^500: "):
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
        assert emulator.sandbox_url.startswith("http://127.0.0.1:") and emulator.sandbox_url != emulator.url
        assert emulator.env() == {
            "E2B_API_URL": emulator.url,
            "E2B_SANDBOX_URL": emulator.sandbox_url,
            "E2B_API_KEY": "k",
        }
        host, port = emulator._api.server.server_address
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
        wait_for(lambda: emulator.pending_faults == 0, what="the slow request to reach the emulator")
    finally:
        start = time.monotonic()
        emulator.stop()
    slow.join(2)
    idle.close()
    assert time.monotonic() - start < 2
    assert len(dropped) == 1 and not slow.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("e2b-emulator")]


# --------------------------------------------------------------------------- tags
# E2B: packages/api/internal/template/register_build.go, handlers/template_tags.go,
# db/queries/templates/get_template_with_build_by_tag.sql, list_template_tags.sql


def tags_of(name):
    return {t.tag: t.build_id for t in Template.get_tags(name)}


def test_a_build_gets_its_requested_tags_or_default(emu):
    plain = Template.build(simple_template(), "tg")
    tagged = Template.build(simple_template(), "tg:v1", tags=["stable", "v1"])

    assert plain.tags == ["default"] and tagged.tags == ["v1", "stable"]
    listed = Template.get_tags("tg")
    assert [t.tag for t in listed] == ["default", "stable", "v1"]  # sorted by tag
    assert tags_of("tg") == {"default": plain.build_id, "stable": tagged.build_id, "v1": tagged.build_id}
    assert tags_of(plain.template_id) == tags_of("tg")  # by ID or by name
    assert all(t.created_at.tzinfo is not None for t in listed)
    with pytest.raises(TemplateException, match=r"^404: template 'nope' not found"):
        Template.get_tags("nope")


def test_assign_and_remove_tags(emu):
    first = Template.build(simple_template(), "tg")
    second = Template.build(simple_template(), "tg:v1")

    moved = Template.assign_tags("tg:v1", ["prod", "prod", "canary"])
    assert (moved.build_id, moved.tags) == (second.build_id, ["prod", "canary"])
    assert tags_of("tg")["prod"] == second.build_id
    # the newest assignment of a tag wins; a target may be name:build_id
    assert Template.assign_tags("tg", "prod").build_id == first.build_id
    assert Template.assign_tags(f"tg:{first.build_id}", "pinned").build_id == first.build_id
    assert tags_of("tg") == {
        "default": first.build_id,
        "v1": second.build_id,
        "canary": second.build_id,
        "prod": first.build_id,
        "pinned": first.build_id,
    }

    Template.remove_tags("tg", ["prod", "canary"])
    assert set(tags_of("tg")) == {"default", "v1", "pinned"}
    Template.remove_tags("tg", "never-assigned")  # deleting nothing is fine: 204
    assert emu.count("remove_tags", status=204) == 2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Template.remove_tags("tg", "default"), "^400: Cannot delete the 'default' tag"),
        (lambda: Template.remove_tags("tg:v1", "x"), "^400: Template name should not contain a tag"),
        (lambda: Template.remove_tags("tg", []), "^400: At least one tag is required"),
        (lambda: Template.remove_tags("nope", "x"), "^404: template 'nope' not found"),
        (lambda: Template.assign_tags("tg", []), "^400: At least one tag is required"),
        (lambda: Template.assign_tags("nope:v1", "x"), "^404: template 'nope' not found"),
        (lambda: Template.assign_tags("tg:v9", "x"), "^404: Template 'tg:v9' with tag 'v9' not found"),
        (lambda: Template.assign_tags("tg", "UPPER"), "^400: Invalid tag"),
        (lambda: Template.assign_tags("tg", "v2\n"), "^400: Invalid tag"),
        (lambda: Template.assign_tags("tg", str(uuid.uuid4())), "^400: Invalid tag: .*cannot be a UUID"),
        (lambda: Template.assign_tags("tg", uuid.uuid4().hex), "^400: Invalid tag: .*cannot be a UUID"),
    ],
)
def test_bad_tag_requests_are_refused_as_e2b_does(emu, call, message):
    Template.build(simple_template(), "tg")
    with pytest.raises(TemplateException, match=message):
        call()
    assert set(tags_of("tg")) == {"default"}


def test_tags_in_build_requests_are_validated_whole(emu):
    for name, tags in [("tg:v1\n", None), ("tg", ["ok", "v2\n"]), ("tg", [str(uuid.uuid4())]), ("tg\n", None)]:
        with pytest.raises(BuildException, match=r"^400: Invalid"):
            Template.build(simple_template(), name, tags=tags)
    assert emu.builds == []


def test_exists_checks_the_name(emu):
    assert not Template.exists("ex")
    emu.configure("ex", fail_at_step=0)
    with pytest.raises(BuildException):
        Template.build(simple_template(), "ex:v1")
    # the name is claimed when the build is requested, whatever became of the build
    assert Template.exists("ex") and Template.alias_exists("ex")
    template_id = emu.template_id("ex")
    assert Template.exists(template_id)
    assert raw(emu, "GET", "/templates/aliases/ex")[2] == {"templateID": template_id, "public": False}
    # with a tag, the tag must resolve to a ready build
    status, _, body = raw(emu, "GET", "/templates/aliases/ex%3Av1")
    assert (status, body["message"]) == (404, "tag 'v1' does not exist for template 'ex'")
    assert raw(emu, "GET", "/templates/aliases/Bad%21")[0] == 400


# --------------------------------------------------------------------------- supersede and cancel
# E2B: register_build.go (InvalidateUnstartedTemplateBuilds), template_start_build_v2.go
# (CheckAndCancelConcurrentBuilds, then "build is not in waiting state")


def request(emu, name, tags=None):
    status, _, body = raw(emu, "POST", "/v3/templates", {"name": name, **({"tags": tags} if tags else {})})
    assert status == 202, body
    return body


def start(emu, requested, body=None):
    path = f"/v2/templates/{requested['templateID']}/builds/{requested['buildID']}"
    return raw(emu, "POST", path, body or {"fromImage": "python:3.11", "steps": [{"type": "RUN", "args": ["echo a"]}]})


def info_of(requested, name="x"):
    return BuildInfo(template_id=requested["templateID"], build_id=requested["buildID"], name=name, alias=name)


def test_a_newer_request_supersedes_only_waiting_builds_sharing_a_tag(emu):
    waiting = request(emu, "sup")
    other_tag = request(emu, "sup:v2")
    running = request(emu, "sup:v3")
    emu.set_step_cost("echo a", 5.0)
    assert start(emu, running)[0] == 202

    newer = request(emu, "sup", tags=["default", "v3"])  # shares a tag with waiting and with running

    superseded = Template.get_build_status(info_of(waiting))
    assert superseded.status == TemplateBuildStatus.ERROR
    assert superseded.reason.message == "The build was canceled because it was superseded by a newer one."
    assert superseded.reason.step is None and superseded.log_entries == []
    assert emu.build(waiting["buildID"]).cancelled
    assert Template.get_build_status(info_of(other_tag)).status == TemplateBuildStatus.WAITING
    assert emu.build(running["buildID"]).status == "building"  # a request never cancels a running build
    # a superseded build can no longer start
    status, _, body = start(emu, waiting)
    assert (status, body["message"]) == (400, "build is not in waiting state")
    assert emu.build(newer["buildID"]).status == "waiting"


def test_a_superseded_build_started_late_still_cancels_the_running_one(emu):
    emu.set_step_cost("echo a", 5.0)
    older = request(emu, "race")
    newer = request(emu, "race")  # supersedes older
    assert start(emu, newer)[0] == 202
    assert emu.build(newer["buildID"]).status == "building"

    # E2B cancels running rivals before it checks that the build being started is waiting
    assert start(emu, older)[0] == 400
    cancelled = Template.get_build_status(info_of(newer))
    assert cancelled.status == TemplateBuildStatus.ERROR and cancelled.reason.message == "build was cancelled"
    assert cancelled.log_entries[-1].message == "Build failed: build was cancelled"


def test_a_cancelled_build_keeps_the_layers_it_finished(still, clock):
    still.set_step_cost("echo one", 0.1)
    still.set_step_cost("echo slow", 5.0)
    one = Template().from_image("python:3.11").run_cmd("echo one")
    older = Template.build_in_background(one.run_cmd("echo slow"), "cx")
    clock.advance(0.3)  # inside the slow step
    assert outcomes(still, older.build_id) == ["built", "built", "built"]  # the last one running
    newer = Template.build_in_background(
        Template().from_image("python:3.11").run_cmd("echo one").run_cmd("echo fast"), "cx"
    )
    clock.advance(0.1)
    assert Template.get_build_status(newer).status == TemplateBuildStatus.READY

    assert outcomes(still, older.build_id) == ["built", "built", "cancelled"]
    assert outcomes(still, newer.build_id) == ["cached", "cached", "built"]
    assert Template.get_build_status(older).reason.message == "build was cancelled"
    assert step_logs(older)[-1] == (None, "error", "Build failed: build was cancelled")


# --------------------------------------------------------------------------- references and sandboxes
# E2B: handlers/sandbox_create.go (id.ParseName, templateCache.ResolveAlias, templateCache.Get)


def test_references_resolve_to_the_newest_ready_build(emu):
    emu.set_step_cost("echo slow", 0.6)
    first = Template.build(simple_template(), "ref:v1")
    slow = Template.build_in_background(simple_template().run_cmd("echo slow"), "ref:v1")
    template_id = first.template_id

    # the newer build of v1 is not ready yet: v1 still means the first
    assert emu.build(slow.build_id).status == "building"
    assert Sandbox.create("ref:v1").sandbox_id == emu.sandboxes[-1].sandbox_id
    assert emu.sandboxes[-1].build_id == first.build_id
    wait_ready(slow)
    for reference, build_id in [
        ("ref:v1", slow.build_id),
        (f"{template_id}:v1", slow.build_id),
        (f"{template_id}:{first.build_id}", first.build_id),
        (f"ref:{first.build_id}", first.build_id),
    ]:
        sandbox = Sandbox.create(reference)
        record = emu.sandboxes[-1]
        assert (record.reference, record.build_id, record.template_id) == (reference, build_id, template_id)
        assert record.sandbox_id == sandbox.sandbox_id and sandbox.sandbox_id.startswith("i")

    # no build has "default", and a failed newer build changes nothing
    for reference in ("ref", template_id):
        with pytest.raises(SandboxException, match=f"^404: tag 'default' does not exist for template '{reference}'"):
            Sandbox.create(reference)
    emu.configure("ref", fail_at_step=0)
    with pytest.raises(BuildException):
        Template.build(simple_template(), "ref:v1")
    Sandbox.create("ref:v1")
    assert emu.sandboxes[-1].build_id == slow.build_id
    with pytest.raises(SandboxException, match=r"^404: template 'nope' not found"):
        Sandbox.create("nope")
    with pytest.raises(SandboxException, match=r"^400: Invalid template reference"):
        Sandbox.create("ref:Bad!")


def test_public_templates_are_usable_not_ownable(emu):
    # E2B resolves a bare name in the team's namespace, then among public (promoted) templates
    child = Template.build(Template().from_template("code-interpreter-v1").run_cmd("echo child"), "on-public")
    public_build = emu.build(child.build_id).parent_build_id
    assert public_build is not None
    Sandbox.create("code-interpreter-v1")
    assert emu.sandboxes[-1].build_id == public_build
    assert emu.sandboxes[-1].template_id not in {b.template_id for b in emu.builds}
    assert Template.exists("base")  # 403 on the alias: it exists, owned by another team
    with pytest.raises(TemplateException, match=r"^403: "):
        Template.get_tags("base")
    with pytest.raises(TemplateException, match=r"^403: "):
        Template.assign_tags("base", "mine")
    # a template of the team's own with that name takes precedence
    own = Template.build(simple_template(), "base")
    Sandbox.create("base")
    assert emu.sandboxes[-1].build_id == own.build_id
    assert [t.tag for t in Template.get_tags("base")] == ["default"]


def test_removing_a_tag_unresolves_it(emu):
    built = Template.build(simple_template(), "rm:v1")
    Template.remove_tags("rm", "v1")
    with pytest.raises(SandboxException, match=r"^404: tag 'v1' does not exist"):
        Sandbox.create("rm:v1")
    # its build has no assignment left: E2B's status lookup (a join on them) finds nothing
    with pytest.raises(BuildException, match=r"^400: Build .* not found"):
        Template.get_build_status(built)


def test_sandbox_create_answer_and_kill(emu):
    Template.build(simple_template(), "sbx")

    status, _, body = raw(emu, "POST", "/v2/sandboxes", {"templateID": "sbx", "timeout": 300})
    assert status == 201
    assert set(body) >= {"templateID", "sandboxID", "clientID", "envdVersion"}
    assert body["templateID"] == emu.template_id("sbx") and body["alias"] == "sbx"
    assert tuple(map(int, body["envdVersion"].split("."))) >= (0, 1, 0)

    sandbox = Sandbox.create("sbx")  # the SDK needs no envd to create one
    assert sandbox.kill() is True
    assert sandbox.kill() is False  # 404: already gone
    killed = {s.sandbox_id: s.killed_at for s in emu.sandboxes}
    assert killed[sandbox.sandbox_id] is not None and killed[body["sandboxID"]] is None
    assert emu.count("create_sandbox") == 2 and emu.count("kill_sandbox", status=404) == 1
    assert raw(emu, "DELETE", "/sandboxes/Bad!")[0] == 400


def test_new_routes_take_injected_faults(emu):
    Template.build(simple_template(), "flt")
    emu.inject("get_tags", status=500)
    emu.inject("create_sandbox", status=503, count=10)
    with pytest.raises(TemplateException, match=r"^500: "):
        Template.get_tags("flt")
    with pytest.raises(ServiceBusyException):
        Sandbox.create("flt")
    assert emu.count("get_tags") == 1 and emu.count("create_sandbox", status=503) >= 2
    assert emu.sandboxes == []


# --------------------------------------------------------------------------- layer cache
# E2B: orchestrator pkg/template/build: builder.go (forceSteps, upload wait), phases/phase.go
# ("CACHED [...]"), phases/steps (Hash, Layer), phases/base (Hash, Layer), layer/layer_executor.go


def three_steps(image="python:3.11-slim"):
    return Template().from_image(image).run_cmd("echo one").run_cmd("echo two").run_cmd("echo three")


def wait_ready(info):
    """Wait (on the real clock) until E2B says the build is ready."""
    wait_for(
        lambda: Template.get_build_status(info).status == TemplateBuildStatus.READY,
        what=f"build {info.build_id} to be ready",
    )


def outcomes(emu, build_id):
    return [r.outcome for r in emu.step_records if r.build_id == build_id]


def test_an_identical_template_hits_the_cache_at_every_step(emu):
    first = Template.build(three_steps(), "c-one")
    assert outcomes(emu, first.build_id) == ["built"] * 4  # the base (FROM) and three steps
    assert (emu.steps_executed, emu.cache_hits) == (4, 0)

    second = Template.build(three_steps(), "c-two", cpu_count=8, memory_mb=4096)
    assert emu.build(second.build_id).finished_at == emu.build(second.build_id).triggered_at  # nothing ran
    # the cache is the team's, across templates; CPU and memory are not in the keys
    assert outcomes(emu, second.build_id) == ["cached"] * 4
    assert (emu.steps_executed, emu.cache_hits) == (4, 4)
    first_keys = [r.key for r in emu.step_records if r.build_id == first.build_id]
    assert [r.key for r in emu.step_records if r.build_id == second.build_id] == first_keys

    logs = step_logs(second)
    assert [entry for entry in logs if "CACHED" in entry[2]] == [
        ("base", "info", f"CACHED [base] FROM python:3.11-slim [{first_keys[0]}]"),
        ("1", "info", f"CACHED [builder 1/3] RUN echo one [{first_keys[1]}]"),
        ("2", "info", f"CACHED [builder 2/3] RUN echo two [{first_keys[2]}]"),
        ("3", "info", f"CACHED [builder 3/3] RUN echo three [{first_keys[3]}]"),
    ]
    assert not [m for _, _, m in logs if m.startswith("Saved: ")]  # hits publish nothing
    assert logs[-1] == (None, "info", "Build finished, took 0s")
    built = step_logs(first)
    assert ("1", "info", f"[builder 1/3] RUN echo one [{first_keys[1]}]") in built


def test_keys_chain_from_the_parent_step(emu):
    base = Template.build(three_steps(), "k-base")
    changed = Template.build(
        Template().from_image("python:3.11-slim").run_cmd("echo one").run_cmd("echo TWO").run_cmd("echo three"), "k-mid"
    )
    other_image = Template.build(three_steps("python:3.12-slim"), "k-image")

    assert outcomes(emu, base.build_id) == ["built"] * 4
    # a changed step misses, and so does every step after it, even an unchanged one
    assert outcomes(emu, changed.build_id) == ["cached", "cached", "built", "built"]
    assert outcomes(emu, other_image.build_id) == ["built"] * 4
    records = {(r.build_id, r.index): r for r in emu.step_records}
    assert records[(changed.build_id, 3)].key != records[(base.build_id, 3)].key
    assert records[(base.build_id, 0)].text == "FROM python:3.11-slim"
    assert records[(base.build_id, 2)].text == "RUN echo two"


def test_copy_steps_are_keyed_by_their_files(emu, tmp_path):
    (tmp_path / "app.txt").write_text("one")

    def template():
        return Template(file_context_path=tmp_path).from_image("python:3.11").copy("app.txt", "/app/")

    first = Template.build(template(), "cp")
    again = Template.build(template(), "cp")
    (tmp_path / "app.txt").write_text("two")
    changed = Template.build(template(), "cp")
    assert outcomes(emu, first.build_id) == ["built", "built"]
    assert outcomes(emu, again.build_id) == ["cached", "cached"]
    assert outcomes(emu, changed.build_id) == ["cached", "built"]


def test_status_and_logs_progress_step_by_step(still, clock):
    emu = still
    emu.configure("prog", log_lines=4)
    emu.set_step_cost("echo one", 0.5)
    emu.set_step_cost(lambda step: step.text == "RUN echo two", 0.5)
    info = Template.build_in_background(three_steps(), "prog")

    clock.advance(0.2)  # inside step 1
    assert Template.get_build_status(info).status == TemplateBuildStatus.BUILDING
    early = step_logs(info)
    assert {step for step, _, _ in early} == {None, "base", "1"}
    assert any(step == "1" and m.startswith("[builder 1/3] RUN echo one [") for step, _, m in early)
    clock.advance(0.5)  # inside step 2
    assert Template.get_build_status(info).status == TemplateBuildStatus.BUILDING
    middle = step_logs(info)
    assert "2" in {step for step, _, _ in middle} and "3" not in {step for step, _, _ in middle}
    assert middle[: len(early)] == early  # history never changes
    clock.advance(0.34)  # the end is at 1.05 s: 0.01 s before it
    assert Template.get_build_status(info).status == TemplateBuildStatus.BUILDING
    clock.advance(0.01)
    assert Template.get_build_status(info).status == TemplateBuildStatus.READY
    entries = step_logs(info)
    assert entries[0] == (None, "info", f"Building template {info.template_id}/{info.build_id}")
    lines = [(step, m) for step, _, m in entries if m.startswith("[prog] ")]
    assert lines == [(step, f"[prog] line {i}/4") for i, step in enumerate(["base", "1", "2", "3"], 1)]
    layer = next(r for r in emu.step_records if r.build_id == info.build_id and r.step == "1").layer_id
    assert [(step, level) for step, level, m in entries if m == f"Saved: {layer}"] == [("1", "debug")]
    assert entries[-1] == (None, "info", "Build finished, took 1s")  # Go's duration, truncated
    records = [r for r in emu.step_records if r.build_id == info.build_id]
    assert [round(r.finished_at - r.started_at, 2) for r in records] == [0.0, 0.5, 0.5, 0.05]


def test_identical_steps_running_at_once_are_not_deduplicated(emu):
    emu.set_step_cost(lambda step: True, 0.3)  # the base too
    infos = [Template.build_in_background(three_steps(), f"twin-{i}") for i in range(2)]
    for info in infos:
        wait_ready(info)
    # both ran everything: a layer is only visible once published
    assert [outcomes(emu, i.build_id) for i in infos] == [["built"] * 4] * 2
    assert emu.steps_executed == 8 and len({r.key for r in emu.step_records}) == 4
    first, second = (emu.build(i.build_id) for i in infos)
    assert second.triggered_at < first.finished_at  # they overlapped


def test_a_layer_hits_once_uploaded_while_its_build_goes_on(monkeypatch, clock):
    # E2B: layer_executor.go publishes a layer's hash -> build mapping after its upload ("Saved: <id>")
    with E2BEmulator(api_key=API_KEY, default_step_cost=0.0, upload_delay=0.4, clock=clock) as emu:
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        emu.set_step_cost("echo one", 0.2)
        emu.set_step_cost("echo two", 1.0)
        origin = Template.build_in_background(three_steps(), "up-a")
        # base published at t0+0.4; step 1 done at t0+0.2, published at t0+0.6; step 2 runs to t0+1.2

        clock.advance(0.42)
        early = Template.build_in_background(three_steps(), "up-b")
        clock.advance(0.33)  # t0+0.75
        late = Template.build_in_background(three_steps(), "up-c")

        assert outcomes(emu, early.build_id)[:2] == ["cached", "built"]  # step 1 finished, not yet uploaded
        assert outcomes(emu, late.build_id)[:3] == ["cached", "cached", "built"]  # step 2 still running
        assert emu.build(origin.build_id).status == "building"
        clock.advance(0.85)  # t0+1.6: step 3 (no cost) ended at 1.2, its layer published at 1.6
        assert Template.get_build_status(origin).status == TemplateBuildStatus.READY
        first = {r.step: r for r in emu.step_records if r.build_id == origin.build_id}
        assert round(first["1"].published_at - first["1"].finished_at, 2) == 0.4
        # the build ends once its last layer is published
        assert emu.build(origin.build_id).finished_at == pytest.approx(first["3"].published_at)


def test_force_skips_lookups(emu):
    Template.build(three_steps(), "f")
    forced = Template.build(three_steps(), "f", skip_cache=True)
    partly_forced = Template().from_image("python:3.11-slim").run_cmd("echo one").skip_cache()
    partly = Template.build(partly_forced.run_cmd("echo two").run_cmd("echo three"), "f")
    assert emu.build(forced.build_id).start_body["force"] is True
    assert outcomes(emu, forced.build_id) == ["built"] * 4
    # a forced step forces every step after it (orchestrator builder.go forceSteps)
    assert outcomes(emu, partly.build_id) == ["cached", "cached", "built", "built"]


def test_from_template_resolves_the_parent_build_at_start(emu):
    parent = Template.build(three_steps(), "par")

    def child_template():
        return Template().from_template("par").run_cmd("echo child")

    child = Template.build(child_template(), "kid")

    snapshot = emu.build(child.build_id)
    assert snapshot.start_body["fromTemplate"] == "par" and snapshot.parent_build_id == parent.build_id
    base = next(r for r in emu.step_records if r.build_id == child.build_id and r.step == "base")
    assert (base.outcome, base.text, base.cost) == ("inherited", "FROM TEMPLATE par", 0.0)
    assert outcomes(emu, Template.build(child_template(), "kid").build_id) == ["inherited", "cached"]

    # a new parent build changes the child's base key: its steps run again
    rebuilt = Template.build(three_steps(), "par", skip_cache=True)
    again = Template.build(child_template(), "kid")
    assert emu.build(again.build_id).parent_build_id == rebuilt.build_id
    assert outcomes(emu, again.build_id) == ["inherited", "built"]
    keys = {r.build_id: r.key for r in emu.step_records if r.step == "base"}
    assert keys[again.build_id] != keys[child.build_id]


def test_from_template_costs_and_missing_parents(emu):
    emu.set_step_cost("FROM TEMPLATE", 0.2)
    Template.build(three_steps(), "par")
    start_time = time.monotonic()
    child = Template.build(Template().from_template("par").run_cmd("echo child"), "kid")
    assert time.monotonic() - start_time >= 0.2
    assert outcomes(emu, child.build_id) == ["inherited", "built"]

    logs = []
    with pytest.raises(BuildException, match="tag 'v9' does not exist for template 'par'"):
        Template.build(Template().from_template("par:v9").run_cmd("echo child"), "kid", on_build_logs=logs.append)
    failed = emu.builds[-1]
    assert failed.status == "error" and failed.parent_build_id is None
    assert Template.get_build_status(BuildInfo(failed.template_id, failed.build_id, "kid", "kid")).reason.step == "base"
    with pytest.raises(BuildException, match="template 'nope' not found"):
        Template.build(Template().from_template("nope").run_cmd("echo child"), "kid")


def test_a_failing_step_keeps_the_layers_before_it(emu):
    emu.configure("bad", fail_at_step=1, fail_message="exit code 2")
    with pytest.raises(BuildException, match="exit code 2"):
        Template.build(three_steps(), "bad")
    failed = emu.builds[-1]
    info = BuildInfo(failed.template_id, failed.build_id, "bad", "bad")
    assert outcomes(emu, failed.build_id) == ["built", "built", "failed"]  # step 3 never reached
    logs = step_logs(info)
    assert [(step, level) for step, level, m in logs if m == "exit code 2"] == [("2", "error")]
    assert logs[-1] == (None, "error", "Build failed: exit code 2")
    status = Template.get_build_status(info)
    assert status.reason.step == "2" and status.reason.log_entries[-1].message == "exit code 2"

    good = Template.build(three_steps(), "good")
    assert outcomes(emu, good.build_id) == ["cached", "cached", "built", "built"]


def test_a_configured_duration_keeps_whole_build_timing(emu):
    emu.configure("whole", duration=0.3, log_lines=2)
    start_time = time.monotonic()
    info = Template.build(three_steps(), "whole")
    assert time.monotonic() - start_time >= 0.3
    assert emu.step_records == []  # no layer cache involved
    entries = Template.get_build_status(info).log_entries
    assert [e.message for e in entries] == ["[whole] line 1/2", "[whole] line 2/2"]


def test_counters_give_executed_per_distinct_step_and_critical_path(emu):
    emu.set_step_cost("RUN", 0.1)
    variants = [three_steps().run_cmd(f"echo variant-{i}") for i in range(3)]
    start_time = time.time()
    for i, template in enumerate(variants):
        Template.build(template, f"matrix-{i}")
    wall = time.time() - start_time

    records = emu.step_records
    distinct = {r.key: r.cost for r in records}
    # the first build runs the base and 4 steps; the others reuse 4 layers and run 1 step
    assert (emu.steps_executed, len(distinct), emu.cache_hits) == (5 + 1 + 1, 7, 4 + 4)
    assert all(r.started_at <= r.finished_at for r in records)
    critical_path = sum(r.cost for r in records if r.build_id == records[0].build_id)  # one chain
    assert critical_path == pytest.approx(0.4) and sum(distinct.values()) == pytest.approx(0.6)
    assert wall >= 0.6  # built one after the other: every distinct step ran once


# --------------------------------------------------------------------------- the team's build limit
# E2B: packages/api/internal/template/register_build.go (RegisterBuild), db/queries/builds/
# get_inprogress_builds.sql (GetInProgressTemplateBuildsByTeam), active_template_builds.sql,
# finish_template_build.sql, templates/create_template.sql (InvalidateUnstartedTemplateBuilds)

LIMIT_MESSAGE = (
    "you have reached the maximum number of concurrent template builds (20). Please wait for existing "
    "builds to complete or contact support if you need more concurrent builds."
)


def test_the_21st_build_is_429_while_20_wait_or_build(emu):
    emu.set_step_cost("echo a", 60.0)
    requested = [request(emu, f"lim-{i}") for i in range(20)]
    for r in requested[:10]:
        assert start(emu, r)[0] == 202
    assert sorted(b.status for b in emu.builds) == ["building"] * 10 + ["waiting"] * 10
    assert (emu.active_builds, emu.peak_builds, emu.limit_refusals) == (20, 20, 0)

    status, headers, body = raw(emu, "POST", "/v3/templates", {"name": "lim-20"})
    assert (status, body) == (429, {"code": 429, "message": LIMIT_MESSAGE})
    assert "Retry-After" not in headers  # E2B sends none for the build limit
    assert len(emu.builds) == 20 and emu.template_id("lim-20") is None  # nothing was registered
    assert (emu.active_builds, emu.peak_builds, emu.limit_refusals) == (20, 20, 1)
    # a new build of a template sharing a tag with its active build is not refused (E2B leaves those out of
    # the count): it supersedes the waiting one, which frees its slot
    again = request(emu, "lim-19")
    assert emu.build(requested[19]["buildID"]).cancelled and emu.build(again["buildID"]).status == "waiting"
    assert emu.active_builds == 20
    # the limit is checked after the name and tags (400), before CPU and memory (429 first)
    assert raw(emu, "POST", "/v3/templates", {"name": "lim-20", "tags": ["Bad"]})[0] == 400
    assert raw(emu, "POST", "/v3/templates", {"name": "lim-20", "cpuCount": 3})[0] == 429
    assert emu.limit_refusals == 2 and emu.count("request_build", status=429) == 2


def test_slots_free_when_builds_end_however_they_end(emu):
    emu.set_build_limit(1)
    first = Template.build(simple_template(), "one")  # ready: its slot is free
    emu.configure("two", fail_at_step=0)
    with pytest.raises(BuildException):
        Template.build(simple_template(), "two")  # error: free too
    waiting = request(emu, "three")
    assert raw(emu, "POST", "/v3/templates", {"name": "four"})[0] == 429
    request(emu, "three")  # supersedes the waiting build: its slot goes to the newer one
    assert emu.build(waiting["buildID"]).cancelled and emu.active_builds == 1
    assert [b.status for b in emu.builds] == ["ready", "error", "error", "waiting"]
    assert emu.build(first.build_id).status == "ready" and emu.peak_builds == 1


def test_a_build_counts_from_its_request_and_is_checked_only_then(emu):
    emu.set_step_cost("echo a", 60.0)
    emu.set_build_limit(2)
    a, b = request(emu, "early-a"), request(emu, "early-b")  # requested, not started: they count
    assert emu.active_builds == 2 and raw(emu, "POST", "/v3/templates", {"name": "early-c"})[0] == 429
    emu.set_build_limit(1)
    assert start(emu, a)[0] == 202 and start(emu, b)[0] == 202  # starting is never refused for the limit
    assert emu.active_builds == 2 and emu.limit_refusals == 1


def test_slots_another_process_holds_count(emu):
    emu.set_build_limit(10)
    emu.hold_slots(8)
    assert (emu.held_slots, emu.active_builds) == (8, 8)
    request(emu, "held-a")
    request(emu, "held-b")
    status, _, body = raw(emu, "POST", "/v3/templates", {"name": "held-c"})
    assert status == 429 and "(10)" in body["message"]
    emu.release_slots(1)  # one of the other process's builds ended
    request(emu, "held-c")
    assert (emu.active_builds, emu.peak_builds, emu.limit_refusals) == (10, 10, 1)
    emu.release_slots()
    assert (emu.held_slots, emu.active_builds) == (0, 3)
    with pytest.raises(ValueError):
        emu.release_slots(1)
    emu.reset_counters()  # the peak looks back to now: the three builds still waiting
    assert (emu.peak_builds, emu.limit_refusals) == (3, 0)


def test_the_sdk_raises_rate_limit_past_the_default_limit_of_20(emu):
    emu.set_step_cost("echo hello", 60.0)
    emu.hold_slots(19)  # another process of the team: 19 of the 20
    info = Template.build_in_background(simple_template(), "last-slot")
    assert emu.build(info.build_id).status == "building"
    with pytest.raises(RateLimitException, match="maximum number of concurrent template builds \\(20\\)"):
        Template.build_in_background(simple_template(), "no-slot")
    # the SDK retried the 429 itself (no Retry-After: its own backoff), 3 times, before raising
    assert emu.count("request_build", status=429) == emu.limit_refusals == 4
    assert emu.peak_builds == 20 and emu.template_id("no-slot") is None


def test_the_limit_is_a_positive_integer():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            E2BEmulator(build_limit=bad)
    emulator = E2BEmulator(build_limit=3)
    with pytest.raises(ValueError):
        emulator.set_build_limit(0)
    with pytest.raises(ValueError):
        emulator.hold_slots(0)
