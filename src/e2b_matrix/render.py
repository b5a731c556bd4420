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

from e2b_matrix.model import BuildSpec, Step
from e2b_matrix.names import control_char

CA_DIR = "/usr/local/share/ca-certificates/e2b-matrix"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _pad_octal(mode: int) -> str:
    return f"{mode:04o}"


def _run(commands, user=None) -> dict:
    commands = [commands] if isinstance(commands, str) else list(commands)
    args = [" && ".join(commands)]
    if user:
        args.append(user)
    return {"type": "RUN", "args": args}


def instruction(step: Step) -> dict:
    """One step as the E2B Template SDK serializes it (type and args)."""
    a, kw = step.args, step.kw
    if step.call == "run_cmd":
        return _run(a[0], kw.get("user"))
    if step.call == "apt_install":
        pkgs = [a[0]] if isinstance(a[0], str) else list(a[0])
        flags = ("--no-install-recommends " if kw.get("no_install_recommends") else "") + (
            "--fix-missing " if kw.get("fix_missing") else ""
        )
        return _run(
            [
                "apt-get update",
                f"DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y {flags}{' '.join(pkgs)}",
            ],
            user="root",
        )
    if step.call == "pip_install":
        pkgs = [a[0]] if isinstance(a[0], str) else list(a[0])
        g = kw.get("g", True)
        cmd = ["pip", "install"] + ([] if g else ["--user"]) + (pkgs or ["."])
        return _run(" ".join(cmd), user="root" if g else None)
    if step.call == "set_user":
        return {"type": "USER", "args": [a[0]]}
    if step.call == "set_workdir":
        return {"type": "WORKDIR", "args": [str(a[0])]}
    if step.call == "set_envs":
        envs = dict(a[0])
        return {"type": "ENV", "args": [x for k, v in envs.items() for x in (k, v)]}
    if step.call == "make_dir":
        paths = [a[0]] if isinstance(a[0], str) else list(a[0])
        mode = kw.get("mode")
        parts = ["mkdir", "-p"] + ([f"-m {_pad_octal(mode)}"] if mode is not None else [])
        return _run(" ".join(parts + [shlex.quote(str(p)) for p in paths]), kw.get("user"))
    if step.call == "copy":
        mode = kw.get("mode")
        return {
            "type": "COPY",
            "args": [str(a[0]), str(a[1]), kw.get("user") or "", _pad_octal(mode) if mode is not None else ""],
        }
    raise ValueError(f"unsupported builder call {step.call!r}")


def instructions(steps: Iterable[Step]) -> list[dict]:
    return [instruction(s) for s in steps]


# -- E2B -----------------------------------------------------------------------


@contextlib.contextmanager
def staged(spec: BuildSpec) -> Iterator[str]:
    """A temporary folder holding the files the spec's steps copy (its requirements files, as
    resolved), for the SDK's ``file_context_path``: it hashes and uploads them from there.

    Written with mode 0644 whatever the checkout's umask, since E2B's files hash covers the mode.
    """
    import tempfile

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


def to_template(spec: BuildSpec, context_dir: str | None = None):
    """The e2b Template for a spec; ``context_dir`` holds the files it copies (``staged``).
    Imports e2b (about a second): build paths only."""
    from e2b import Template

    t = Template(file_context_path=context_dir) if context_dir else Template()
    b = t.from_template(template_source(spec)) if spec.base.kind == "template" else t.from_image(spec.base.ref)
    for step in spec.steps:
        args, kw = step.call_args()
        b = getattr(b, step.call)(*args, **kw)
    if spec.start_cmd:
        b = b.set_start_cmd(spec.start_cmd, spec.ready_cmd or "sleep 20")
    elif spec.ready_cmd:
        b = b.set_ready_cmd(spec.ready_cmd)
    return b


def to_json(spec: BuildSpec) -> str:
    """Exactly the body E2B's build API receives for this spec (the SDK's to_json, files hashes included)."""
    from e2b import Template

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
    CA certificates in the spec's files (ca/*.crt in the build context) are
    installed first, for builds behind a TLS-intercepting proxy.
    """
    if spec.base.kind != "image":
        raise ValueError(f"{spec.name}: a Docker build needs an image base, not {spec.base.describe()}")
    lines = [
        f"# {spec.alias}: layers {', '.join(f'{k}@{v}' for k, v in spec.layer_versions().items())}",
        f"FROM {spec.base.ref}",
        "USER root",
    ]
    if any(name.startswith("ca/") for name, _ in spec.files):
        lines += [
            f"COPY ca/ {CA_DIR}/",
            "RUN update-ca-certificates",
            f"ENV PIP_CERT={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} SSL_CERT_FILE={CA_BUNDLE}",
        ]
    current = emitted = "root"  # the template's user; the last USER line written

    def as_user(user: str) -> None:
        nonlocal emitted
        if user != emitted:
            lines.append(f"USER {user}")
            emitted = user

    for step in spec.steps:
        ins = instruction(step)
        kind, args = ins["type"], ins["args"]
        if kind == "USER":
            current = args[0]
        elif kind == "WORKDIR":
            lines.append(f"WORKDIR {args[0]}")
        elif kind == "ENV":
            pairs = [f"{args[i]}={json.dumps(args[i + 1])}" for i in range(0, len(args), 2)]
            lines.append(f"ENV {' '.join(pairs)}")
        elif kind == "COPY":
            chown = f"--chown={args[2]} " if args[2] else ""
            chmod = f"--chmod={args[3]} " if args[3] else ""
            lines.append(f"COPY {chown}{chmod}{args[0]} {args[1]}")
        else:  # RUN, as its own user or the template's
            as_user(args[1] if len(args) > 1 else current)
            lines.append(_docker_run(args[0]))
    as_user(current)
    if spec.start_cmd:
        lines.append(f"CMD {_json_array(['/bin/sh', '-c', spec.start_cmd])}")
    return "\n".join(_one_line(line) for line in lines) + "\n"
