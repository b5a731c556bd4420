"""The Docker mode's step executor: each step of a build run as E2B's orchestrator runs it.

E2B builds a template in a sandbox: the base, E2B's default user, then each
step in order, each one a layer of its team's cache keyed by the hash chain
(e2b-dev/infra packages/orchestrator/pkg/template/build: builder.go, phases/
phase.go, phases/base, phases/user, phases/steps, phases/finalize). A step runs
as a command through envd with the build's *context*, the user, working
directory and environment the earlier steps set (step_commands.py says how each
command runs; docker_shell.py, how a command and its output are run and logged).

Here the sandbox is a container of the previous layer's image (``docker exec``
for each command, containers.py) and a layer is that container committed as the
image ``e2b-emulator/layer:<cache key>``, its context in a label: the team's
layer cache is the daemon's images, kept across emulator runs. A step whose
layer exists is not run again (``CACHED`` in the log); ``force`` runs it and
every later step again. The base: a ``fromTemplate`` build starts from its
parent's final image (a stand-in for a public template, standin.py), always
cached; a ``fromImage`` build from a local image (never pulled) with E2B's
default user made on it (phases/user: ``USER user true``), its key the base's.
Then, as E2B's finalize phase, the start command runs in the background and the
ready command every 2 s until it succeeds (phases/finalize: builder.go,
ready.go), in a fresh container; what they leave on disk is the template.

What a build asks that Docker cannot express is named in one warn-level line of
its log (a request field the emulator does not model, registry credentials,
processes a start command leaves running); nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from e2b_matrix.backends.docker_engine import DockerCLI, DockerError
from e2b_matrix.emulator.docker_shell import Command, Context, Output, Running, Shell, StepFailed, Stopped
from e2b_matrix.emulator.rules import go_seconds
from e2b_matrix.emulator.step_commands import StepCommands
from e2b_matrix.emulator.timing import LiveCourse, PlannedStep, layer_id

LAYERS = "e2b-emulator/layer"  # + ":<cache key>": the team's layer cache
BUILDS = "e2b-emulator/build"  # + ":<build ID>": a build whose finalize phase changed its last layer
CONTEXT_LABEL = "e2b-emulator.context"
OWNER_LABEL = "e2b-emulator.owner"  # on every container: which emulator made it (removed when it stops)
DEFAULT_USER = "user"  # orchestrator template/build/config: TemplateDefaultUser
READY_INTERVAL = 2.0  # phases/finalize/ready.go: readyCommandRetryInterval
READY_TIMEOUT = 600.0  # ... readyCommandTimeout
# The request fields a build's steps are made of; any other is named in the log (see the module doc).
BODY_FIELDS = {"fromImage", "fromTemplate", "steps", "force", "startCmd", "readyCmd"}
STEP_FIELDS = {"type", "args", "filesHash", "force"}


@dataclass(frozen=True)
class Start:
    """A template's start and ready commands and the context they run with (metadata: Start)."""

    start_cmd: str
    ready_cmd: str
    context: Context

    @property
    def ready(self) -> str:
        """The ready command, or E2B's default when none is given (phases/finalize/ready.go)."""
        return self.ready_cmd or ("sleep 20" if self.start_cmd else "sleep 0")


@dataclass(frozen=True)
class Image:
    """What a build gives the builds on it and its sandboxes: an image, its context, its start
    command, and whether it serves the code interpreter (it descends from code-interpreter-v1)."""

    image: str
    context: Context
    start: Start | None = None
    code_interpreter: bool = False


@dataclass
class Job:
    """One build to run: its plan (the base, then each step, with E2B's cache keys) and inputs."""

    course: LiveCourse
    plan: tuple[PlannedStep, ...]
    body: dict[str, Any]
    parent: Image | None  # fromTemplate: the parent's image (None: it has none here)
    upload: Callable[[str], bytes | None]  # files hash -> the uploaded archive
    cpus: int
    memory_mb: int
    done: Callable[[Image], None]
    containers: list[str] = field(default_factory=list)


class DockerSteps:
    """Runs builds' steps in Docker, each build on its own thread (see the module doc)."""

    def __init__(self, cli: DockerCLI, owner: str, devices: tuple[str, ...] = ()):
        self.cli, self.owner, self.devices = cli, owner, devices
        self.shell = Shell(cli)
        self._image_of: dict[str, str] = {}  # container -> the image its filesystem now is

    def start(self, job: Job) -> threading.Thread:
        thread = threading.Thread(
            target=self._run, args=(job,), name=f"e2b-emulator-build-{job.course.build.build_id[:8]}", daemon=True
        )
        thread.start()
        return thread

    # -- a build --------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        course, b = job.course, job.course.build
        assert b.triggered is not None
        try:
            self._name_what_is_not_modelled(job)
            image = self._base(job)
            steps = job.plan[1:]
            for index, planned in enumerate(steps, 1):
                image = self._step(job, index, len(steps), planned, image)
            image = self._finalize(job, image)
            course.log("info", f"Build finished, took {go_seconds(time.monotonic() - b.triggered)}", None)
            job.done(image)
            course.finish(True)
        except StepFailed as failed:
            course.log("error", failed.message, failed.step)
            course.log("error", f"Build failed: {failed.message}", None)
            course.finish(False, (failed.message, failed.step))
        except Stopped:
            course.finish(False)  # already cancelled: this changes nothing
        except Exception as exc:  # noqa: BLE001 - the emulator's own failure, shown as E2B shows an internal one
            message = f"emulator: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            course.log("error", f"Build failed: {message}", None)
            course.finish(False, (message, None))
        finally:
            for name in job.containers:
                with contextlib.suppress(DockerError):
                    self.cli.remove_container(name)

    def _name_what_is_not_modelled(self, job: Job) -> None:
        for key in sorted(set(job.body) - BODY_FIELDS):
            what = (
                "registry credentials: the Docker mode never pulls an image"
                if key == "fromImageRegistry"
                else "not modelled by the emulator's Docker mode"
            )
            job.course.log("warn", f"emulator: {key} ignored ({what})", "base")
        for number, step in enumerate(job.body.get("steps") or [], 1):
            for key in sorted(set(step) - STEP_FIELDS):
                job.course.log(
                    "warn",
                    f"emulator: step field {key} ignored (not modelled by the emulator's Docker mode)",
                    str(number),
                )

    def _base(self, job: Job) -> Image:
        """The base layer: a parent template's image (always cached), or a local image with E2B's
        default user (cached by its key)."""
        course, planned = job.course, job.plan[0]
        started = time.monotonic()
        if planned.inherited:
            course.log("info", f"CACHED [base] {planned.spec.text} [{planned.key}]", "base")
            if job.parent is None:  # phases/base/builder.go
                raise StepFailed(
                    "error getting base template, you may need to rebuild it first (the emulator "
                    "has no image of it: built in timing mode, or a public template without a "
                    "stand-in)",
                    "base",
                )
            course.record(0, "base", planned.spec.text, planned.key, "inherited", started)
            return job.parent
        cached = None if planned.force else self._layer(planned.key)
        if cached is not None:
            course.log("info", f"CACHED [base] {planned.spec.text} [{planned.key}]", "base")
            course.record(0, "base", planned.spec.text, planned.key, "cached", started)
            return Image(cached.image, cached.context)
        course.log("info", f"[base] {planned.spec.text} [{planned.key}]", "base")
        ref = str(job.body["fromImage"])
        if not self.cli.image_exists(ref):
            raise StepFailed(
                f"failed to pull image {ref}: not in the local Docker daemon (the emulator's Docker mode never pulls)",
                "base",
            )
        envs = [tuple(e.split("=", 1)) for e in self.cli.image_config(ref).get("Env") or [] if "=" in e]
        context = Context("root", None, tuple((k, v) for k, v in envs))  # phases/base: defaultUser root, image ENV
        container = self._container(job, ref)
        commands = StepCommands(self.shell, course, job.upload)
        context = commands.user(container, context, [DEFAULT_USER, "true"], "base", "base")
        return self._commit(job, container, 0, planned, context, started, None)

    def _step(self, job: Job, index: int, total: int, planned: PlannedStep, image: Image) -> Image:
        course, name = job.course, planned.spec.step
        if course.stopped.is_set():
            raise Stopped()
        started = time.monotonic()
        prefix = f"builder {index}/{total}"
        cached = None if planned.force else self._layer(planned.key)
        if cached is not None:
            course.log("info", f"CACHED [{prefix}] {planned.spec.text} [{planned.key}]", name)
            course.record(index, name, planned.spec.text, planned.key, "cached", started)
            return replace(image, image=cached.image, context=cached.context)
        course.log("info", f"[{prefix}] {planned.spec.text} [{planned.key}]", name)
        container = self._container(job, image.image)
        step = (job.body.get("steps") or [])[index - 1]
        context = StepCommands(self.shell, course, job.upload).apply(container, step, image.context, prefix, name)
        return self._commit(job, container, index, planned, context, started, image)

    def _container(self, job: Job, image: str, fresh: bool = False) -> str:
        """A running container of ``image`` for the next step: the previous step's when it holds
        just that (not ``fresh``), else a new one."""
        if not fresh and job.containers and self._image_of.get(job.containers[-1]) == image:
            return job.containers[-1]
        name = f"e2b-emulator-build-{job.course.build.build_id[:8]}-{uuid.uuid4().hex[:6]}"
        self.cli.start_container(
            image, name, labels={OWNER_LABEL: self.owner}, devices=self.devices, cpus=job.cpus, memory_mb=job.memory_mb
        )
        job.containers.append(name)
        self._image_of[name] = image
        return name

    def _commit(
        self,
        job: Job,
        container: str,
        index: int,
        planned: PlannedStep,
        context: Context,
        started: float,
        image: Image | None,
    ) -> Image:
        """The step's layer: the container committed under its cache key, its context in a label."""
        if job.course.stopped.is_set():
            raise Stopped()
        built = self.cli.commit_container(container, f"{LAYERS}:{planned.key}", labels={CONTEXT_LABEL: context.label()})
        self._image_of[container] = built
        layer = layer_id(job.course.build.build_id, index)
        step = planned.spec.step
        for message in (f"Adding layer to cache: {layer}", f"Uploading layer: {layer}", f"Saved: {layer}"):
            job.course.log("debug", message, step)  # layer/layer_executor.go (uploaded at once here)
        job.course.record(index, step, planned.spec.text, planned.key, "built", started, layer)
        return Image(built, context) if image is None else replace(image, image=built, context=context)

    def _layer(self, key: str) -> Image | None:
        """The cached layer of ``key``, or None."""
        try:
            config = self.cli.image_config(f"{LAYERS}:{key}")
        except DockerError:
            return None
        label = (config.get("Labels") or {}).get(CONTEXT_LABEL)
        if not label:
            return None
        return Image(self.cli.image_id(f"{LAYERS}:{key}"), Context.from_label(label))

    # -- finalize: the start and ready commands --------------------------------------------

    def _finalize(self, job: Job, image: Image) -> Image:
        """E2B's finalize phase, in a fresh container; the template is what the start and ready
        commands leave on disk (committed when they ran)."""
        body = job.body
        start = image.start
        if body.get("startCmd") or body.get("readyCmd"):  # phases/finalize: these replace the parent's
            start = Start(str(body.get("startCmd") or ""), str(body.get("readyCmd") or ""), image.context)
        image = replace(image, start=start)
        if start is None:
            return image
        if job.course.stopped.is_set():
            raise Stopped()
        container = self._container(job, image.image, fresh=True)  # E2B restarts the sandbox for the final layer
        FinalizePhase(self.shell, job.course).run(container, start)
        built = self.cli.commit_container(
            container, f"{BUILDS}:{job.course.build.build_id}", labels={CONTEXT_LABEL: image.context.label()}
        )
        return replace(image, image=built)


class FinalizePhase:
    """E2B's finalize phase (phases/finalize: builder.go, ready.go): the start command in the
    background, then the ready command every 2 s until it succeeds."""

    def __init__(self, shell: Shell, course: LiveCourse):
        self.shell, self.course = shell, course

    def run(self, container: str, start: Start) -> None:
        """Start, then wait until ready (StepFailed when the start command fails or readiness times out)."""
        context, env = start.context, start.context.command_env()
        process = None
        if start.start_cmd:
            self.course.log("info", f"Running start command: {start.start_cmd}", "finalize")
            self.course.log(
                "warn",
                "emulator: the processes the start command leaves running are not kept in the template "
                "(an image holds no process): each sandbox runs the start command again",
                "finalize",
            )
            command = Command(("/bin/bash", "-l", "-c", start.start_cmd), context.user, context.workdir, env)
            process = self.shell.start(self.course, container, command, Output("start", "finalize", "info"))
        ready = start.ready
        self.course.log("info", f"Waiting for template to be ready: {ready}", "finalize")
        self._wait_ready(
            container, Command(("/bin/bash", "-l", "-c", ready), context.user, context.workdir, env), process
        )
        self.course.log("info", "Template is ready", "finalize")
        if process is not None:
            process.kill()

    def _wait_ready(self, container: str, ready: Command, process: Running | None) -> None:
        """Run ``ready`` every READY_INTERVAL until it succeeds."""
        course, deadline = self.course, time.monotonic() + READY_TIMEOUT
        while True:
            if course.stopped.is_set():
                raise Stopped()
            code = self.shell.logged(course, container, ready, Output("ready", "finalize", "debug"))
            if code == 0:
                return
            course.log("debug", f"Template is not ready: exit status {code}", "finalize")
            if process is not None and process.poll() not in (None, 0):
                raise StepFailed(
                    f"start command failed: error running start command: exit status {process.poll()}", "finalize"
                )
            if time.monotonic() + READY_INTERVAL > deadline:
                raise StepFailed(
                    f"ready command failed: ready command timed out after {go_seconds(READY_TIMEOUT)}", "finalize"
                )
            course.stopped.wait(READY_INTERVAL)
