"""base: where every variant starts.

On E2B it extends ``code-interpreter-v1`` (E2B's code interpreter, built on
the ``python:3.12`` image: Jupyter on port 49999 gives stateful Python). On
Docker it starts from an image (default: E2B's published code-interpreter
image; a Debian base made with debootstrap works too) and makes sure the
``user`` account the other layers expect exists.
"""

from e2b_matrix.layers import checks as c
from e2b_matrix.model import Base, Check, Layer, Param, Step, run

USER = "user"
HOME = "/home/user"


def _base(params, backend: str) -> Base:
    if backend == "docker":
        return Base("image", params["image"], params["image_python"])
    return Base("template", params["template"], params["python"])


def _steps(params, ctx):
    steps = []
    if ctx.backend == "docker":
        # E2B's images have the account; a plain image may not.
        steps.append(run(f"id -u {USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {USER}", user="root"))
    steps += [Step("set_user", (USER,)), Step("set_workdir", (HOME,))]
    return tuple(steps)


def _checks(params, ctx):
    return (
        Check("stateful python", cells=("x = 42", "x + 8"), expect="50", backends=("e2b",)),
        Check("python3 --version", command="python3 --version", expect=f"Python {ctx.python}"),
    )


LAYER = Layer(
    name="base",
    version="1",
    description="E2B code interpreter (stateful Python), user 'user' in /home/user",
    params=(
        Param("template", "code-interpreter-v1", "E2B template to extend (E2B backend)", c.template_ref),
        Param("python", "3.12", "Python of that template", c.python_version),
        Param("image", "e2bdev/code-interpreter:latest", "image to start from (Docker backend)", c.nonempty_text),
        Param("image_python", "3.12", "Python of that image", c.python_version),
        Param("start_cmd", "", "command the sandbox starts (needed when the base is an image)", c.text),
        Param("ready_cmd", "", "command that says the sandbox is ready", c.text),
    ),
    steps=_steps,
    checks=_checks,
    base=_base,
)
