"""BuildSpec -> what a backend consumes.

- ``instructions(steps)``: the exact step list E2B's build API receives, computed
  without importing e2b (tests prove it equals the SDK's own ``to_json``);
- ``to_template(spec)``: an e2b ``Template`` (imports e2b: only when building);
- ``to_json(spec)``: the SDK's ``Template.to_json`` of it;
- ``dockerfile(spec)``: the same layers as a Dockerfile for a local Docker build.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from e2b_matrix.model import BuildSpec, Step
from e2b_matrix.names import control_char

if TYPE_CHECKING:  # e2b costs about a second to import: only a build loads it (to_template)
    from e2b import TemplateClass
    from e2b.template.main import TemplateBuilder  # what from_template and each step return (e2b exports it not)

CA_DIR = "/usr/local/share/ca-certificates/e2b-matrix"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class Instruction(TypedDict):
    """One step as E2B's build API receives it: ``{"type": "RUN", "args": ["apt-get update && ...", "root"]}``."""

    type: str  # RUN, USER, WORKDIR, ENV, COPY
    args: list[str]


def _pad_octal(mode: int) -> str:
    return f"{mode:04o}"


def _words(value: str | Iterable[str]) -> list[str]:
    """A step's first argument, one word or several, as a list."""
    return [value] if isinstance(value, str) else list(value)


def _run(commands: str | Iterable[str], user: str | None = None) -> Instruction:
    args = [" && ".join(_words(commands))]
    if user:
        args.append(user)
    return {"type": "RUN", "args": args}


def _apt_install(packages: list[str], no_install_recommends: bool, fix_missing: bool) -> Instruction:
    flags = ("--no-install-recommends " if no_install_recommends else "") + ("--fix-missing " if fix_missing else "")
    return _run(
        [
            "apt-get update",
            f"DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y {flags}{' '.join(packages)}",
        ],
        user="root",
    )


def _pip_install(packages: list[str], g: bool) -> Instruction:
    cmd = ["pip", "install"] + ([] if g else ["--user"]) + (packages or ["."])
    return _run(" ".join(cmd), user="root" if g else None)


def _make_dir(paths: list[str], mode: int | None, user: str | None) -> Instruction:
    parts = ["mkdir", "-p"] + ([f"-m {_pad_octal(mode)}"] if mode is not None else [])
    return _run(" ".join(parts + [shlex.quote(str(p)) for p in paths]), user)


def _copy(src: str, dest: str, user: str | None, mode: int | None) -> Instruction:
    return {"type": "COPY", "args": [src, dest, user or "", _pad_octal(mode) if mode is not None else ""]}


def instruction(step: Step) -> Instruction:
    """One step as the E2B Template SDK serializes it (type and args)."""
    a: tuple[Any, ...] = step.args  # the SDK call's arguments, as the layer gave them
    kw = step.kw
    if step.call == "run_cmd":
        return _run(a[0], kw.get("user"))
    if step.call == "apt_install":
        return _apt_install(_words(a[0]), bool(kw.get("no_install_recommends")), bool(kw.get("fix_missing")))
    if step.call == "pip_install":
        return _pip_install(_words(a[0]), kw.get("g", True))
    if step.call == "set_user":
        return {"type": "USER", "args": [a[0]]}
    if step.call == "set_workdir":
        return {"type": "WORKDIR", "args": [str(a[0])]}
    if step.call == "set_envs":
        return {"type": "ENV", "args": [x for k, v in dict(a[0]).items() for x in (k, v)]}
    if step.call == "make_dir":
        return _make_dir(_words(a[0]), kw.get("mode"), kw.get("user"))
    if step.call == "copy":
        return _copy(str(a[0]), str(a[1]), kw.get("user"), kw.get("mode"))
    raise ValueError(f"unsupported builder call {step.call!r}")


def instructions(steps: Iterable[Step]) -> list[Instruction]:
    return [instruction(s) for s in steps]


# -- E2B -----------------------------------------------------------------------


@contextlib.contextmanager
def staged(spec: BuildSpec) -> Iterator[str]:
    """A temporary folder holding the files the spec's steps copy (its requirements files, as
    resolved), for the SDK's ``file_context_path``: it hashes and uploads them from there.

    Written with mode 0644 whatever the checkout's umask, since E2B's files hash covers the mode.
    """
    import tempfile  # with shutil, bz2 and lzma: ~3 ms at the start of `resolve`, which writes nothing

    with tempfile.TemporaryDirectory(prefix="e2b-matrix-context-") as tmp:
        for r in spec.requirements:
            if r.content is not None:
                path = Path(tmp, r.path)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(r.content)
                path.chmod(0o644)
        yield tmp


def template_source(spec: BuildSpec) -> str:
    """The template a spec extends: a parent this project built is pinned to its build
    (``alias:build_id``), since its builds carry no ``default`` tag; others as written."""
    return f"{spec.base.ref}:{spec.parent_build}" if spec.parent_build else spec.base.ref


def to_template(spec: BuildSpec, context_dir: str | None = None) -> TemplateClass:
    """The e2b Template for a spec; ``context_dir`` holds the files it copies (``staged``).
    Imports e2b (about a second): build paths only."""
    from e2b import Template  # the one place rendering loads the SDK (see TYPE_CHECKING above)

    t = Template(file_context_path=context_dir) if context_dir else Template()
    b: TemplateBuilder = (
        t.from_template(template_source(spec)) if spec.base.kind == "template" else t.from_image(spec.base.ref)
    )
    for step in spec.steps:
        args, kw = step.call_args()
        b = getattr(b, step.call)(*args, **kw)  # a builder method by its name (Step.call): it returns the builder
    if spec.start_cmd:
        return b.set_start_cmd(spec.start_cmd, spec.ready_cmd or "sleep 20")
    if spec.ready_cmd:
        return b.set_ready_cmd(spec.ready_cmd)
    return b


def to_json(spec: BuildSpec) -> str:
    """Exactly the body E2B's build API receives for this spec (the SDK's to_json, files hashes included)."""
    from e2b import Template  # build paths and tests only: about a second

    with staged(spec) as context:
        return Template.to_json(to_template(spec, context))


# -- Docker --------------------------------------------------------------------


def _json_array(words: list[str]) -> str:
    return json.dumps(words)


def _one_line(instruction: str) -> str:
    """An instruction that stays one line: no value may start another instruction."""
    bad = control_char(instruction)
    if bad:
        raise ValueError(f"a Dockerfile line would contain a control character ({bad}): {instruction[:60]!r}")
    return instruction


def _docker_run(command: str) -> str:
    """RUN in shell form when the command is one line, else in exec form (the same /bin/sh -c, escaped)."""
    if control_char(command):
        return "RUN " + _json_array(["/bin/sh", "-c", command])
    return f"RUN {command}"


def dockerfile(spec: BuildSpec) -> str:
    """The spec's layers as a Dockerfile.

    E2B runs a RUN step as the user given with it (else the current USER);
    Docker has no per-RUN user, so USER lines are written where the user
    changes, ending on the template's user. A multi-line command is written
    in exec form (``["/bin/sh", "-c", "..."]``, newlines escaped): the same
    shell, and no line of it can become an instruction of its own.
    """
    if spec.base.kind != "image":
        raise ValueError(f"{spec.name}: a Docker build needs an image base, not {spec.base.describe()}")
    lines = [
        f"# {spec.alias}: layers {', '.join(f'{k}@{v}' for k, v in spec.layer_versions().items())}",
        f"FROM {spec.base.ref}",
        "USER root",
        *_ca_lines(spec),
        *_step_lines(spec.steps),
    ]
    if spec.start_cmd:
        lines.append(f"CMD {_json_array(['/bin/sh', '-c', spec.start_cmd])}")
    return "\n".join(_one_line(line) for line in lines) + "\n"


def _ca_lines(spec: BuildSpec) -> list[str]:
    """CA certificates in the spec's files (ca/*.crt in the build context), installed before any
    step, for builds behind a TLS-intercepting proxy."""
    if not any(name.startswith("ca/") for name, _ in spec.files):
        return []
    return [
        f"COPY ca/ {CA_DIR}/",
        "RUN update-ca-certificates",
        f"ENV PIP_CERT={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} SSL_CERT_FILE={CA_BUNDLE}",
    ]


def _step_lines(steps: Iterable[Step]) -> list[str]:
    """The steps' Dockerfile lines, from USER root: each RUN under a USER line for its own user (or
    the template's), written only where the user changes; the last line leaves the template's user."""
    lines: list[str] = []
    current = emitted = "root"  # the template's user; the last USER line written
    for step in steps:
        ins = instruction(step)
        kind, args = ins["type"], ins["args"]
        if kind == "USER":
            current = args[0]
            continue
        if kind == "RUN":
            user = args[1] if len(args) > 1 else current
            if user != emitted:
                lines.append(f"USER {user}")
                emitted = user
        lines.append(_docker_line(kind, args))
    if current != emitted:
        lines.append(f"USER {current}")
    return lines


def _docker_line(kind: str, args: list[str]) -> str:
    """The Dockerfile line of one instruction other than USER."""
    if kind == "WORKDIR":
        return f"WORKDIR {args[0]}"
    if kind == "ENV":
        return "ENV " + " ".join(f"{args[i]}={json.dumps(args[i + 1])}" for i in range(0, len(args), 2))
    if kind == "COPY":
        chown = f"--chown={args[2]} " if args[2] else ""
        chmod = f"--chmod={args[3]} " if args[3] else ""
        return f"COPY {chown}{chmod}{args[0]} {args[1]}"
    return _docker_run(args[0])  # RUN
