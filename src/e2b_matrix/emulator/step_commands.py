"""The commands of a build's steps, as E2B's orchestrator runs them (the Docker mode).

Each step runs through envd with the build's *context*, the user, working directory
and environment the earlier steps set (e2b-dev/infra packages/orchestrator/pkg/
template/build/commands; template/metadata: Context):

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
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from e2b_matrix.emulator import containers
from e2b_matrix.emulator.docker_shell import Command, Context, Output, Shell, StepFailed
from e2b_matrix.emulator.timing import LiveCourse


class StepCommands:
    """The steps of one build, each applied in a container: the context after it, or StepFailed.

    ``upload`` gives the archive the SDK uploaded for a files hash (None: none was).
    """

    def __init__(self, shell: Shell, course: LiveCourse, upload: Callable[[str], bytes | None]):
        self.shell, self.course, self.upload = shell, course, upload

    def apply(self, container: str, step: dict[str, Any], context: Context, prefix: str, name: str) -> Context:
        kind = str(step.get("type", "")).upper()
        args = [str(a) for a in step.get("args") or []]
        if kind == "RUN":
            return self.run(container, args, context, prefix, name)
        if kind in ("COPY", "ADD"):
            return self.copy(container, step, args, context, name)
        if kind in ("ENV", "ARG"):
            return self.envs(container, kind, args, context, name)
        if kind == "WORKDIR":
            return self.workdir(container, args, context, prefix, name)
        if kind == "USER":
            return self.user(container, context, args, prefix, name)
        raise StepFailed(
            f"failed to get command for step {step.get('type')}: command type {kind} is not implemented", name
        )

    def _logged(self, container: str, command: Command, output: Output) -> int:
        return self.shell.logged(self.course, container, command, output)

    def run(self, container: str, args: list[str], context: Context, prefix: str, name: str) -> Context:
        if not args:
            raise StepFailed("RUN requires command argument", name)
        user = args[1] if len(args) >= 2 else context.user
        command = Command(("/bin/bash", "-l", "-c", args[0]), user, context.workdir, context.command_env())
        code = self._logged(container, command, Output(prefix, name, "info"))
        if code != 0:
            raise StepFailed(f"failed to run command '{args[0]}': exit status {code}", name)
        return context

    def copy(self, container: str, step: dict[str, Any], args: list[str], context: Context, name: str) -> Context:
        kind = str(step.get("type")).upper()
        if len(args) < 2:
            raise StepFailed("COPY requires a local path and a container path argument", name)
        files_hash = step.get("filesHash")
        if not files_hash:
            raise StepFailed(f"{kind} requires files hash to be set", name)
        archive = self.upload(str(files_hash))
        if archive is None:
            raise StepFailed("failed to open files object from storage: object does not exist", name)
        owner = args[2] if len(args) >= 3 and args[2] else f"{context.user}:{context.user}"
        if ":" not in owner:
            owner = f"{owner}:{owner}"
        unpack = self._unpack(container, str(files_hash), archive, context, name)
        source = posixpath.join(unpack, _without_globs(args[0]))
        mode = args[3] if len(args) >= 4 else ""
        argv = ("/bin/bash", "-c", _MOVE, "copy", args[1], source, owner, mode, context.workdir or "", context.user)
        code = self._logged(
            container, Command(argv, "root", context.workdir, context.command_env()), Output("unpack", name, "debug")
        )
        if code != 0:
            raise StepFailed(f"failed to move files in sandbox: exit status {code}", name)
        return context

    def _unpack(self, container: str, files_hash: str, archive: bytes, context: Context, name: str) -> str:
        """The archive put in the container's /tmp and unpacked: the directory it is in."""
        tar, unpack = f"/tmp/{files_hash}.tar", f"/tmp/{files_hash}/unpack"
        code, _, err = containers.run(
            self.shell.cli, container, ["/bin/sh", "-c", f"cat > {tar}"], user="root", stdin=archive
        )
        if code != 0:
            raise StepFailed(f"failed to copy layer tar data to sandbox: {err.strip() or code}", name)
        argv = ("/bin/bash", "-l", "-c", f'mkdir -p "{unpack}" && tar -xf "{tar}" -C "{unpack}"')
        code = self._logged(
            container, Command(argv, "root", context.workdir, context.command_env()), Output("unpack", name, "debug")
        )
        if code != 0:
            raise StepFailed(f"failed to extract files: exit status {code}", name)
        return unpack

    def envs(self, container: str, kind: str, args: list[str], context: Context, name: str) -> Context:
        if not args:
            raise StepFailed(f"{kind} does not support passing no arguments", name)
        if len(args) % 2:
            raise StepFailed(f"{kind} requires both a key and value arguments", name)
        envs = context.env()
        for key, value in zip(args[::2], args[1::2], strict=True):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$(", "\\$(")
            code, out, _ = containers.run(
                self.shell.cli, container, ["/bin/bash", "-l", "-c", f'printf "%s" "{escaped}"'], user="root"
            )
            if code != 0:
                raise StepFailed(f"failed to evaluate environment variable {key}: exit status {code}", name)
            envs[key] = out
        return context.with_envs(envs)

    def workdir(self, container: str, args: list[str], context: Context, prefix: str, name: str) -> Context:
        if not args:
            raise StepFailed("WORKDIR requires a path argument", name)
        path = (
            args[0] if posixpath.isabs(args[0]) else posixpath.normpath(posixpath.join(context.workdir or "/", args[0]))
        )
        argv = ("/bin/bash", "-l", "-c", _MKDIR, "workdir", path, context.user)
        code = self._logged(container, Command(argv, "root", "/", context.command_env()), Output(prefix, name, "info"))
        if code != 0:
            raise StepFailed(f"failed to create workdir: exit status {code}", name)
        code, out, err = containers.run(
            self.shell.cli, container, ["/bin/sh", "-c", 'cd "$1" && pwd', "sh", path], user="root", cwd="/"
        )
        if code != 0 or err.strip():
            raise StepFailed(f"failed to save workdir {path}: {err.strip() or f'exit status {code}'}", name)
        return replace(context, workdir=out.strip())

    def user(self, container: str, context: Context, args: list[str], prefix: str, name: str) -> Context:
        if not args:
            raise StepFailed("USER requires a username argument", name)
        user, env = args[0], context.command_env()
        if containers.run(self.shell.cli, container, ["id", "-u", user], user="root")[0] != 0:
            argv: tuple[str, ...] = (
                "/bin/bash",
                "-l",
                "-c",
                f"useradd --create-home --shell /bin/bash {shlex.quote(user)}",
            )
            code = self._logged(container, Command(argv, "root", None, env), Output(prefix, name, "info"))
            if code != 0:
                raise StepFailed(f"failed to create user: exit status {code}", name)
        if len(args) > 1 and args[1] == "true":
            argv = ("/bin/bash", "-l", "-c", _SUDOER, "sudoer", user)
            code = self._logged(container, Command(argv, "root", None, env), Output(prefix, name, "debug"))
            if code != 0:
                raise StepFailed(f"failed to configure sudoers: exit status {code}", name)
        return replace(context, user=user)


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
