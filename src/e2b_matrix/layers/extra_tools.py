"""extra-tools: everyday command-line tools, each checked with ``--version``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from e2b_matrix import names
from e2b_matrix.model import Check, Context, Layer, Param, Step, apt, pip

# Debian package -> the command it installs, where the names differ.
COMMANDS = {"ripgrep": "rg", "fd-find": "fdfind", "neovim": "nvim", "python3-pip": "pip3"}


def _steps(params: Mapping[str, Any], ctx: Context) -> tuple[Step, ...]:
    steps = []
    if params["packages"]:
        steps.append(apt(params["packages"]))
    if params["pip_packages"]:
        steps.append(pip(params["pip_packages"]))
    return tuple(steps)


def _checks(params: Mapping[str, Any], ctx: Context) -> tuple[Check, ...]:
    commands = [COMMANDS.get(p, p) for p in params["packages"]]
    commands += [p.split("==")[0] for p in params["pip_packages"]]
    return tuple(Check(f"{n} --version", command=f"{n} --version") for n in commands)


LAYER = Layer(
    name="extra-tools",
    version="1",
    description="apt/pip tools (default: git, jq, ripgrep, curl)",
    requires=("base",),
    params=(
        Param("packages", ("git", "jq", "ripgrep", "curl"), "Debian packages", names.check_packages),
        Param("pip_packages", (), "pip packages whose command has the package's name", names.check_packages),
    ),
    steps=_steps,
    checks=_checks,
)
