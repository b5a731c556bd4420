#!/usr/bin/env bash
# The tests against the LOWEST versions pyproject.toml allows for our direct
# dependencies (transitive ones resolve as usual), in .venv-lowest: proof that
# the declared floors are true. Usage: scripts/test-lowest.sh [pytest args]
#
# Resolves with uv's --resolution lowest-direct (uv from the registry, in a
# bootstrap venv); without uv, pins every ">=" floor with a pip constraints file.
# LOWEST_WITH=pip forces that fallback. Idempotent: reinstalls only when
# pyproject.toml, this script or the Python changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_LOWEST:-.venv-lowest}
TOOLS=$VENV-uv

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "e2b-matrix needs Python >= 3.11 (set PYTHON=...)" >&2; exit 2; }

want="$(cat pyproject.toml scripts/test-lowest.sh | cksum) $("$PYTHON" -V) ${LOWEST_WITH:-uv}"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$VENV"  # fresh: an installed newer version would satisfy a floor and stay
    "$PYTHON" -m venv "$VENV"
    echo '*' >"$VENV/.gitignore"  # git ignores the venv (and $TOOLS) with no .gitignore change
    if [ "${LOWEST_WITH:-uv}" = uv ] && { test -x "$TOOLS/bin/uv" ||
            { "$PYTHON" -m venv "$TOOLS" && echo '*' >"$TOOLS/.gitignore" && "$TOOLS/bin/python" -m pip install -q uv; }; }; then
        "$TOOLS/bin/uv" pip install -q --python "$VENV/bin/python" --resolution lowest-direct -e '.[test]'
    else
        echo "test-lowest: without uv: pinning the >= floors of pyproject.toml (pip constraints)" >&2
        "$VENV/bin/python" - >"$VENV/floors.txt" <<'EOF'
import tomllib
try:
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: pip's own copy of packaging
    from pip._vendor.packaging.requirements import Requirement
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in map(Requirement, project["dependencies"] + project["optional-dependencies"]["test"]):
    print("\n".join(f"{req.name}=={s.version}" for s in req.specifier if s.operator == ">="))
EOF
        "$VENV/bin/python" -m pip install -q -c "$VENV/floors.txt" -e '.[test]'
    fi
    echo "$want" >"$VENV/.installed"
fi

echo "direct dependencies in $VENV (resolved / declared):"
"$VENV/bin/python" - <<'EOF'
import tomllib
from importlib.metadata import version
from packaging.requirements import Requirement
from packaging.version import Version
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in map(Requirement, project["dependencies"] + project["optional-dependencies"]["test"]):
    got = version(req.name)
    floor = next((s.version for s in req.specifier if s.operator == ">="), None)
    note = "  <- above the floor: another requirement raises it" if floor and Version(got) != Version(floor) else ""
    print(f"  {req.name:24} {got:10} {req}{note}")
EOF
exec "$VENV/bin/python" -m pytest -q "$@"
