"""The images that stand for E2B's public templates in the emulator's Docker mode.

E2B's ``code-interpreter-v1`` is built ``from_image("python:3.13")`` with the
packages of its requirements.txt, a ``user`` account (workdir /home/user) and a
Jupyter server behind the code-interpreter API on port 49999 (e2b-dev/
code-interpreter template/template.py). Docker Hub is out of reach here, so the
stand-in starts from Debian trixie made with debootstrap (``make docker-up``:
``e2b-matrix/debian-base:trixie``; trixie's python3 is 3.13) and holds what the
steps built on it depend on:

- Python 3.13 with pip in /usr/local (Debian's python3-pip and the Python packages
  it brings removed: nothing in the image is a Python package pip cannot replace),
  and the 37 packages the compiled requirements files
  assume are installed (``layers/code-interpreter-v1.txt``), installed from the
  package registry with their dependencies (ipykernel and jupyter-client among
  them: the sandbox proxy runs Python cells in a real IPython kernel);
- the ``user`` account with passwordless sudo: E2B's default-user phase runs
  ``USER user true`` on every v2 build (orchestrator template/build/builder.go,
  phases/user; commands/user.go adds the sudoers line);
- the template's environment for commands (PIP_DEFAULT_TIMEOUT,
  PIP_DISABLE_PIP_VERSION_CHECK, PIP_NO_CACHE_DIR), user ``user``, workdir
  /home/user: the context its steps and sandboxes run with;
- the host's extra CA certificates (a TLS-intercepting proxy sits in front of
  the registries here; pip trusts the system store).

Not held (docs/emulator.md): Node.js, R, Java and their kernels, build-essential,
git, curl, jq, fonts. The image is tagged by a digest of all it is made of, and
made once; ``docker image rm`` of it makes the next start make it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from e2b_matrix.backends.docker_engine import (
    DockerCLI,
    DockerError,
    host_ca_certificates,
)

DEBIAN_BASE = "e2b-matrix/debian-base:trixie"  # scripts/docker-up.sh (E2B_MATRIX_EMULATOR_BASE)
REPOSITORY = "e2b-emulator/code-interpreter-v1"
CODE_INTERPRETER = "code-interpreter-v1"
LABEL = "e2b-emulator.standin"
# What its steps and sandboxes run with (template.py: set_envs, set_user("user"), set_workdir("/home/user")).
USER = "user"
WORKDIR = "/home/user"
# pip from the package registry in /usr/local, as python:3.13 has it, in place of Debian's python3-pip
# (and the python3-packaging and python3-wheel it brings, which pip could not upgrade: Debian keeps no
# RECORD of their files). The release trixie ships.
PIP = "25.1.1"
ENVS = (("PIP_DEFAULT_TIMEOUT", "100"), ("PIP_DISABLE_PIP_VERSION_CHECK", "1"), ("PIP_NO_CACHE_DIR", "1"))

_DOCKERFILE = """\
FROM {base}
USER root
{ca}RUN python3 -m pip install --no-cache-dir --disable-pip-version-check --ignore-installed pip=={pip} \\
 && dpkg --purge python3-pip python3-wheel python3-packaging && rm -f /usr/bin/pip
COPY requirements.txt /tmp/e2b-emulator/requirements.txt
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check -r /tmp/e2b-emulator/requirements.txt \\
 && rm -rf /tmp/e2b-emulator
RUN id -u {user} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {user}; \\
    rule='{user} ALL=(ALL:ALL) NOPASSWD: ALL'; \\
    grep -qxF "$rule" /etc/sudoers || echo "$rule" >>/etc/sudoers
"""
_CA = """COPY ca/ /usr/local/share/ca-certificates/e2b-emulator/
RUN update-ca-certificates
"""


class StandinError(Exception):
    """The stand-in cannot be made here (no Debian base, the build failed); says what to do."""


@dataclass(frozen=True)
class Standin:
    """A public template's stand-in: its image and the context its steps and sandboxes run with."""

    template: str
    image: str  # the image's ID
    user: str
    workdir: str
    envs: tuple[tuple[str, str], ...]
    code_interpreter: bool  # serves the code interpreter (port 49999)


def requirements() -> bytes:
    """code-interpreter-v1's pins, as e2b-matrix ships them (layers/code-interpreter-v1.txt)."""
    from importlib.resources import files

    return files("e2b_matrix.layers").joinpath("code-interpreter-v1.txt").read_bytes()


def code_interpreter(cli: DockerCLI, on_log: Callable[[str], None] | None = None, base: str = DEBIAN_BASE) -> Standin:
    """The stand-in of code-interpreter-v1, made now (a few minutes: pip installs its packages)
    unless an image of exactly these inputs exists."""
    if not cli.image_exists(base):
        raise StandinError(f"no Debian trixie base image {base}: run `make docker-up` (scripts/docker-up.sh)")
    certificates = {f"ca/{p.name}": p.read_bytes() for p in host_ca_certificates()}
    dockerfile = _DOCKERFILE.format(base=base, ca=_CA if certificates else "", user=USER, pip=PIP)
    digest = hashlib.sha256(cli.image_id(base).encode())
    for name, data in sorted(
        {"Dockerfile": dockerfile.encode(), "requirements.txt": requirements(), **certificates}.items()
    ):
        digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    tag = f"{REPOSITORY}:{digest.hexdigest()[:12]}"
    if not cli.image_exists(tag):
        if on_log is not None:
            on_log(f"making {tag}, the stand-in of E2B's {CODE_INTERPRETER} (once; a few minutes)")
        try:
            cli.build_image(
                dockerfile,
                tag,
                context_files={"requirements.txt": requirements(), **certificates},
                on_log=on_log,
                labels={LABEL: CODE_INTERPRETER},
            )
        except DockerError as exc:
            raise StandinError(f"could not make {tag}: {exc}") from None
    return Standin(CODE_INTERPRETER, cli.image_id(tag), USER, WORKDIR, ENVS, code_interpreter=True)
