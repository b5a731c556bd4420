"""fuse: FUSE for mounting the Nexus filesystem inside the sandbox (from the seed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from e2b_matrix.model import Check, Context, Layer, Step, apt, pip, run

MOUNTS = ("/home/user/nexus", "/mnt/nexus")


def _steps(params: Mapping[str, Any], ctx: Context) -> tuple[Step, ...]:
    return (
        apt(("fuse", "libfuse2", "libfuse-dev")),
        pip(("fusepy",)),
        run(
            "touch /etc/fuse.conf && (grep -q '^user_allow_other' /etc/fuse.conf"
            " || echo user_allow_other >> /etc/fuse.conf)",
            user="root",
        ),
        run("echo 'user ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/user && chmod 0440 /etc/sudoers.d/user", user="root"),
        run(f"mkdir -p {' '.join(MOUNTS)} && chown user:user {' '.join(MOUNTS)}", user="root"),
    )


def _checks(params: Mapping[str, Any], ctx: Context) -> tuple[Check, ...]:
    fuse = ("/dev/fuse",)
    return (
        Check("import fuse", command='python3 -c "import fuse"', devices=fuse),
        Check("user_allow_other", command="grep -q '^user_allow_other' /etc/fuse.conf"),
        Check("passwordless sudo", command="sudo -n true"),
        Check("mount points", command=" && ".join(f"test -d {m}" for m in MOUNTS)),
    )


LAYER = Layer(
    name="fuse",
    version="1",
    description="FUSE (fuse, libfuse2, libfuse-dev, fusepy), user_allow_other, passwordless sudo, mount points",
    requires=("base",),
    steps=_steps,
    checks=_checks,
)
