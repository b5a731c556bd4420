"""The Docker mode's step executor: each step of a build run as E2B's orchestrator runs it.

E2B builds a template in a sandbox: the base, E2B's default user, then each
step in order, each one a layer of its team's cache keyed by the hash chain
(e2b-dev/infra packages/orchestrator/pkg/template/build: builder.go, phases/
phase.go, phases/base, phases/user, phases/steps, phases/finalize). A step runs
as a command through envd with the build's *context*, the user, working
directory and environment the earlier steps set (template/metadata: Context):

- RUN ``cmd [user]``: ``/bin/bash -l -c cmd`` as the user given, else the
  context's, in its workdir, with its environment (commands/run.go;
  sandboxtools/command.go); a non-zero exit fails the step with
  ``failed to run command '<cmd>': exit status N``;
- COPY ``src dest [owner [mode]]`` (and ADD): the tar the SDK uploaded for the
  step's filesHash is put in /tmp, unpacked, and its entry moved to ``dest``
  (relative to the workdir), owned by ``owner`` (default the context's user),
  with ``mode`` when given; a directory is merged into ``dest`` (commands/copy.go,
  copy_script.sh: the semantics, not the script, are reproduced here);
- ENV ``k v ...`` (and ARG): each value is expanded with ``printf`` in the
  sandbox, as root, and set in the context (commands/env.go);
- WORKDIR ``path``: made (owned by the context's user from the first new
  directory) and set, relative to the current one (commands/workdir.go);
- USER ``name [true]``: made with ``useradd`` when missing (``true``: sudo group,
  no password, a NOPASSWD sudoers line) and set (commands/user.go).

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

import base64
import contextlib
import json
import posixpath
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from e2b_matrix import files
from e2b_matrix.backends.docker_engine import DockerCLI, DockerError
from e2b_matrix.emulator import containers
from e2b_matrix.emulator.rules import go_seconds
from e2b_matrix.emulator.timing import LiveCourse, PlannedStep, layer_id

LAYERS = "e2b-emulator/layer"  # + ":<cache key>": the team's layer cache
BUILDS = "e2b-emulator/build"  # + ":<build ID>": a build whose finalize phase changed its last layer
CONTEXT_LABEL = "e2b-emulator.context"
OWNER_LABEL = "e2b-emulator.owner"  # on every container: which emulator made it (removed when it stops)
DEFAULT_USER = "user"  # orchestrator template/build/config: TemplateDefaultUser
READY_INTERVAL = 2.0  # phases/finalize/ready.go: readyCommandRetryInterval
READY_TIMEOUT = 600.0  # ... readyCommandTimeout
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The request fields a build's steps are made of; any other is named in the log (see the module doc).
BODY_FIELDS = {"fromImage", "fromTemplate", "steps", "force", "startCmd", "readyCmd"}
STEP_FIELDS = {"type", "args", "filesHash", "force"}


@dataclass(frozen=True)
class Context:
    """E2B's metadata context: the user, workdir and environment commands run with."""

    user: str
    workdir: str | None = None
    envs: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str]:
        return dict(self.envs)

    def with_envs(self, envs: Mapping[str, str]) -> Context:
        return replace(self, envs=tuple(envs.items()))

    def label(self) -> str:
        data = {"user": self.user, "workdir": self.workdir, "envs": [list(kv) for kv in self.envs]}
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()

    @classmethod
    def from_label(cls, text: str) -> Context:
        data = files.parse_json(base64.urlsafe_b64decode(text.encode()))
        return cls(str(data["user"]), data["workdir"], tuple((str(k), str(v)) for k, v in data["envs"]))


@dataclass(frozen=True)
class Start:
    """A template's start and ready commands and the context they run with (metadata: Start)."""

    start_cmd: str
    ready_cmd: str
    context: Context


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


class StepFailed(Exception):
    """A step failed: E2B's reason message, and the step's name ("base", "1", ..., "finalize")."""

    def __init__(self, message: str, step: str):
        super().__init__(message)
        self.message, self.step = message, step


class _Stopped(Exception):
    """The build was cancelled while it ran."""


class DockerSteps:
    """Runs builds' steps in Docker, each build on its own thread (see the module doc)."""

    def __init__(self, cli: DockerCLI, owner: str, devices: tuple[str, ...] = ()):
        self.cli, self.owner, self.devices = cli, owner, devices
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
        except _Stopped:
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
        context = self._user(job, container, context, [DEFAULT_USER, "true"], "base", "base")
        return self._commit(job, container, 0, planned, context, started, None)

    def _step(self, job: Job, index: int, total: int, planned: PlannedStep, image: Image) -> Image:
        course, name = job.course, planned.spec.step
        if course.stopped.is_set():
            raise _Stopped()
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
        context = self._apply(job, container, step, image.context, prefix, name)
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
            raise _Stopped()
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

    # -- the steps ----------------------------------------------------------------------

    def _apply(
        self, job: Job, container: str, step: dict[str, Any], context: Context, prefix: str, name: str
    ) -> Context:
        kind = str(step.get("type", "")).upper()
        args = [str(a) for a in step.get("args") or []]
        if kind == "RUN":
            if not args:
                raise StepFailed("RUN requires command argument", name)
            user = args[1] if len(args) >= 2 else context.user
            code = self._logged(
                job,
                container,
                ["/bin/bash", "-l", "-c", args[0]],
                user,
                context.workdir,
                self._env(context),
                prefix,
                name,
                "info",
            )
            if code != 0:
                raise StepFailed(f"failed to run command '{args[0]}': exit status {code}", name)
            return context
        if kind in ("COPY", "ADD"):
            return self._copy(job, container, step, args, context, name)
        if kind in ("ENV", "ARG"):
            return self._envs(container, kind, args, context, name)
        if kind == "WORKDIR":
            return self._workdir(job, container, args, context, prefix, name)
        if kind == "USER":
            return self._user(job, container, context, args, prefix, name)
        raise StepFailed(
            f"failed to get command for step {step.get('type')}: command type {kind} is not implemented", name
        )

    def _copy(
        self, job: Job, container: str, step: dict[str, Any], args: list[str], context: Context, name: str
    ) -> Context:
        kind = str(step.get("type")).upper()
        if len(args) < 2:
            raise StepFailed("COPY requires a local path and a container path argument", name)
        files_hash = step.get("filesHash")
        if not files_hash:
            raise StepFailed(f"{kind} requires files hash to be set", name)
        archive = job.upload(str(files_hash))
        if archive is None:
            raise StepFailed("failed to open files object from storage: object does not exist", name)
        owner = args[2] if len(args) >= 3 and args[2] else f"{context.user}:{context.user}"
        if ":" not in owner:
            owner = f"{owner}:{owner}"
        tar, unpack = f"/tmp/{files_hash}.tar", f"/tmp/{files_hash}/unpack"
        code, _, err = containers.run(
            self.cli, container, ["/bin/sh", "-c", f"cat > {tar}"], user="root", stdin=archive
        )
        if code != 0:
            raise StepFailed(f"failed to copy layer tar data to sandbox: {err.strip() or code}", name)
        code = self._logged(
            job,
            container,
            ["/bin/bash", "-l", "-c", f'mkdir -p "{unpack}" && tar -xf "{tar}" -C "{unpack}"'],
            "root",
            context.workdir,
            self._env(context),
            "unpack",
            name,
            "debug",
        )
        if code != 0:
            raise StepFailed(f"failed to extract files: exit status {code}", name)
        source = posixpath.join(unpack, _without_globs(args[0]))
        code = self._logged(
            job,
            container,
            [
                "/bin/bash",
                "-c",
                _MOVE,
                "copy",
                args[1],
                source,
                owner,
                args[3] if len(args) >= 4 else "",
                context.workdir or "",
                context.user,
            ],
            "root",
            context.workdir,
            self._env(context),
            "unpack",
            name,
            "debug",
        )
        if code != 0:
            raise StepFailed(f"failed to move files in sandbox: exit status {code}", name)
        return context

    def _envs(self, container: str, kind: str, args: list[str], context: Context, name: str) -> Context:
        if not args:
            raise StepFailed(f"{kind} does not support passing no arguments", name)
        if len(args) % 2:
            raise StepFailed(f"{kind} requires both a key and value arguments", name)
        envs = context.env()
        for key, value in zip(args[::2], args[1::2], strict=True):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$(", "\\$(")
            code, out, _ = containers.run(
                self.cli, container, ["/bin/bash", "-l", "-c", f'printf "%s" "{escaped}"'], user="root"
            )
            if code != 0:
                raise StepFailed(f"failed to evaluate environment variable {key}: exit status {code}", name)
            envs[key] = out
        return context.with_envs(envs)

    def _workdir(self, job: Job, container: str, args: list[str], context: Context, prefix: str, name: str) -> Context:
        if not args:
            raise StepFailed("WORKDIR requires a path argument", name)
        path = (
            args[0] if posixpath.isabs(args[0]) else posixpath.normpath(posixpath.join(context.workdir or "/", args[0]))
        )
        code = self._logged(
            job,
            container,
            ["/bin/bash", "-l", "-c", _MKDIR, "workdir", path, context.user],
            "root",
            "/",
            self._env(context),
            prefix,
            name,
            "info",
        )
        if code != 0:
            raise StepFailed(f"failed to create workdir: exit status {code}", name)
        code, out, err = containers.run(
            self.cli, container, ["/bin/sh", "-c", 'cd "$1" && pwd', "sh", path], user="root", cwd="/"
        )
        if code != 0 or err.strip():
            raise StepFailed(f"failed to save workdir {path}: {err.strip() or f'exit status {code}'}", name)
        return replace(context, workdir=out.strip())

    def _user(self, job: Job, container: str, context: Context, args: list[str], prefix: str, name: str) -> Context:
        if not args:
            raise StepFailed("USER requires a username argument", name)
        user, env = args[0], self._env(context)
        if containers.run(self.cli, container, ["id", "-u", user], user="root")[0] != 0:
            code = self._logged(
                job,
                container,
                ["/bin/bash", "-l", "-c", f"useradd --create-home --shell /bin/bash {shlex.quote(user)}"],
                "root",
                None,
                env,
                prefix,
                name,
                "info",
            )
            if code != 0:
                raise StepFailed(f"failed to create user: exit status {code}", name)
        if len(args) > 1 and args[1] == "true":
            code = self._logged(
                job,
                container,
                ["/bin/bash", "-l", "-c", _SUDOER, "sudoer", user],
                "root",
                None,
                env,
                prefix,
                name,
                "debug",
            )
            if code != 0:
                raise StepFailed(f"failed to configure sudoers: exit status {code}", name)
        return replace(context, user=user)

    # -- finalize: the start and ready commands --------------------------------------------

    def _finalize(self, job: Job, image: Image) -> Image:
        """E2B's finalize phase: the start command in the background, the ready command until it
        succeeds; the template is what they leave on disk (committed when they ran)."""
        body, course = job.body, job.course
        start = image.start
        if body.get("startCmd") or body.get("readyCmd"):  # phases/finalize: these replace the parent's
            start = Start(str(body.get("startCmd") or ""), str(body.get("readyCmd") or ""), image.context)
        image = replace(image, start=start)
        if start is None:
            return image
        if course.stopped.is_set():
            raise _Stopped()
        container = self._container(job, image.image, fresh=True)  # E2B restarts the sandbox for the final layer
        env = self._env(start.context)
        process = None
        if start.start_cmd:
            course.log("info", f"Running start command: {start.start_cmd}", "finalize")
            course.log(
                "warn",
                "emulator: the processes the start command leaves running are not kept in the template "
                "(an image holds no process): each sandbox runs the start command again",
                "finalize",
            )
            process = self._process(
                job,
                container,
                ["/bin/bash", "-l", "-c", start.start_cmd],
                start.context.user,
                start.context.workdir,
                env,
                "start",
                "finalize",
                "info",
            )
        ready = start.ready_cmd or ("sleep 20" if start.start_cmd else "sleep 0")  # ready.go: defaults
        course.log("info", f"Waiting for template to be ready: {ready}", "finalize")
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if course.stopped.is_set():
                raise _Stopped()
            code = self._logged(
                job,
                container,
                ["/bin/bash", "-l", "-c", ready],
                start.context.user,
                start.context.workdir,
                env,
                "ready",
                "finalize",
                "debug",
            )
            if code == 0:
                break
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
        course.log("info", "Template is ready", "finalize")
        if process is not None:
            process.kill()
        built = self.cli.commit_container(
            container, f"{BUILDS}:{course.build.build_id}", labels={CONTEXT_LABEL: image.context.label()}
        )
        return replace(image, image=built)

    # -- commands ---------------------------------------------------------------------------

    @staticmethod
    def _env(context: Context) -> dict[str, str]:
        """The environment of a build command: the context's, PATH completed (sandboxtools/command.go)."""
        envs = context.env()
        if "PATH" in envs:
            envs["PATH"] += ":" + STANDARD_PATH
        return envs

    def _process(
        self,
        job: Job,
        container: str,
        argv: list[str],
        user: str,
        cwd: str | None,
        env: dict[str, str],
        prefix: str,
        step: str,
        level: str,
    ) -> _Running:
        out, err = _Lines(job.course, level, prefix, "stdout", step), _Lines(job.course, level, prefix, "stderr", step)
        env = {**env, "USER": user, "LOGNAME": user}
        process = containers.Process(
            self.cli, container, argv, user=user, cwd=cwd, env=env, on_stdout=out.feed, on_stderr=err.feed
        )
        return _Running(process, (out, err))

    def _logged(
        self,
        job: Job,
        container: str,
        argv: list[str],
        user: str,
        cwd: str | None,
        env: dict[str, str],
        prefix: str,
        step: str,
        level: str,
    ) -> int:
        """Run a command to its end, its output in the build's log as E2B logs it; its exit code.
        Stops it (and the build) when the build is cancelled."""
        running = self._process(job, container, argv, user, cwd, env, prefix, step, level)
        try:
            running.process.pid()
        except containers.NotStarted as exc:
            job.course.log(level, f"[{prefix}] [stderr]: {exc}", step)
            return 126
        while True:
            if job.course.stopped.is_set():
                running.process.kill()
                running.process.wait()
                raise _Stopped()
            try:
                code = running.process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        running.flush()
        return code


@dataclass
class _Running:
    process: containers.Process
    lines: tuple[_Lines, _Lines]

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        self.process.kill()
        self.flush()

    def flush(self) -> None:
        for lines in self.lines:
            lines.flush()


class _Lines:
    """A command's output as log entries, one per line: ``[prefix] [stdout]: line``
    (sandboxtools/command.go: logStream; blank lines dropped, each line trimmed)."""

    def __init__(self, course: LiveCourse, level: str, prefix: str, stream: str, step: str):
        self.course, self.level, self.head, self.step = course, level, f"[{prefix}] [{stream}]: ", step
        self.rest = b""
        self.lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self.lock:
            *lines, self.rest = (self.rest + chunk).split(b"\n")
        for line in lines:
            self._emit(line)

    def flush(self) -> None:
        with self.lock:
            rest, self.rest = self.rest, b""
        self._emit(rest)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").strip()
        if line:
            self.course.log(self.level, self.head + line, self.step)


def _without_globs(source: str) -> str:
    """The source path up to its first glob (the SDK expanded the globs when it made the archive)."""
    path = source.rstrip("/") or "."
    cut = min((i for i, c in enumerate(path) if c in "*?[{\\"), default=None)
    if cut is None:
        return path
    return path[:cut].rsplit("/", 1)[0] if "/" in path[:cut] else "."


# COPY's move ($1 target, $2 source, $3 owner, $4 mode, $5 workdir, $6 user): a relative target is taken
# from the workdir (the user's home when unset); a file or link is moved there (into it when the target
# ends in /), a directory merged into it as Docker's COPY does.
_MOVE = r"""set -o pipefail
target=$1 source=$2 owner=$3 mode=$4 workdir=$5 user=$6
[ -n "$workdir" ] || workdir=$(getent passwd "$user" | cut -d: -f6)
cd "$workdir" || exit 1
case $target in /*) ;; *) target="$(pwd)/$target" ;; esac
if [ ! -e "$source" ] && [ ! -L "$source" ]; then echo "source path does not exist: $source" >&2; exit 1; fi
if [ -d "$source" ] && [ ! -L "$source" ]; then
    chown -R "$owner" "$source" && { [ -z "$mode" ] || chmod -R "$mode" "$source"; } || exit 1
    mkdir -p "$target" || exit 1
    (cd "$source" && tar -cf - .) | tar -xf - -C "$target" --keep-directory-symlink --no-overwrite-dir || exit 1
else
    chown -h "$owner" "$source" || exit 1
    if [ -n "$mode" ] && [ ! -L "$source" ]; then chmod "$mode" "$source" || exit 1; fi
    case $target in */) mkdir -p "$target" ;; *) mkdir -p "$(dirname "$target")" ;; esac || exit 1
    mv "$source" "$target"
fi
"""
# WORKDIR ($1 path, $2 user): make it, owned by the user from the first directory that did not exist.
_MKDIR = r"""target=$1 user=$2
[ -d "$target" ] && exit 0
first=$target
while [ ! -d "$(dirname "$first")" ]; do first=$(dirname "$first"); done
mkdir -p "$target" && chown -R "$user:$user" "$first"
"""
# USER name true ($1): the sudo (or wheel) group, no password, a NOPASSWD line in /etc/sudoers.
_SUDOER = r"""user=$1
if getent group sudo >/dev/null; then usermod -aG sudo "$user"
elif getent group wheel >/dev/null; then usermod -aG wheel "$user"
else echo "neither the sudo nor the wheel group exists on this image" >&2; exit 1; fi
passwd -d "$user" >/dev/null || exit 1
rule="$user ALL=(ALL:ALL) NOPASSWD: ALL"
grep -qxF "$rule" /etc/sudoers 2>/dev/null || echo "$rule" >>/etc/sudoers
"""
