"""base: where every variant starts.

On E2B it extends ``code-interpreter-v1`` (E2B's code interpreter: Jupyter
on port 49999 gives stateful Python). That template is built
``from_image("python:3.13")`` since 2026-03 (e2b-dev/code-interpreter,
template/template.py, commit fb13ab0 "Update Python 3.13 support"), so the
base declares Python 3.13: it decides which nexus-ai-fs "latest" means, and
verify checks it (``python3 --version``). E2B's Docker image
``e2bdev/code-interpreter:latest`` is the same template rendered as a
Dockerfile (e2b-dev/code-interpreter, .github/workflows/release.yml runs
template/build_docker.py), hence the same Python.
Where a backend starts from an image instead (Docker: E2B's published
code-interpreter image, or a Debian base made with debootstrap), the
``user`` account the other layers expect is made if the image lacks it.
Which parameter a backend starts from is the backend's rule (backends/);
an image of another Python says so with ``image_python`` (Debian bookworm: 3.11).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from e2b_matrix import inventory, names
from e2b_matrix.model import Base, Check, Context, Layer, Param, Step, run

USER = "user"
HOME = "/home/user"
# What a base already has from pip (data files beside this module): a pip step on it is resolved
# with these as constraints (pins.py). E2B's image of the code interpreter is the same template;
# another image (the Docker backend's Debian base) has none known.
INSTALLED = {
    ("template", "code-interpreter-v1"): "code-interpreter-v1.txt",
    ("image", "e2bdev/code-interpreter:latest"): "code-interpreter-v1.txt",
}


def installed(base: Base) -> tuple[str, ...]:
    """The pip packages (``name==version``) the base is known to have; () when unknown."""
    data = INSTALLED.get((base.kind, base.ref))
    return _read(data) if data else ()


@functools.cache
def _read(data: str) -> tuple[str, ...]:
    from importlib.resources import files  # here: it costs ~19 ms, and list and plan import the layers

    text = files(__package__).joinpath(data).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _steps(params: Mapping[str, Any], ctx: Context) -> tuple[Step, ...]:
    steps = []
    if ctx.base.kind == "image":  # E2B's templates have the account; a plain image may not
        steps.append(run(f"id -u {USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {USER}", user="root"))
    steps += [Step("set_user", (USER,)), Step("set_workdir", (HOME,))]
    return tuple(steps)


def _checks(params: Mapping[str, Any], ctx: Context) -> tuple[Check, ...]:
    return (
        Check("stateful python", cells=("x = 42", "x + 8"), expect="50"),
        # fails naming both when the template's Python is not the declared one; verify reports it as "python"
        Check("python3 --version", command="python3 --version", version=ctx.python, fact="python"),
        # what the build holds, recorded beside the lock by verify (inventory.py)
        Check("pip packages", command=inventory.PIP_LIST, fact="pip", capture=True),
        Check("apt packages", command=inventory.APT_LIST, fact="apt", capture=True),
        Check("disk used", command=inventory.DISK_USED, fact="disk", capture=True, user="root"),
    )


LAYER = Layer(
    name="base",
    version="1",
    description="E2B code interpreter (stateful Python), user 'user' in /home/user",
    params=(
        Param("template", "code-interpreter-v1", "E2B template to extend (E2B backend)", names.check_template_ref),
        Param("python", "3.13", "Python of that template", names.check_python),
        Param("image", "e2bdev/code-interpreter:latest", "image to start from (Docker backend)", names.check_image),
        Param("image_python", "3.13", "Python of that image", names.check_python),
        Param("start_cmd", "", "command the sandbox starts (needed when the base is an image)", names.check_text),
        Param("ready_cmd", "", "command that says the sandbox is ready", names.check_text),
    ),
    steps=_steps,
    checks=_checks,
)
