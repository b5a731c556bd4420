#!/usr/bin/env bash
# The real Nexus server for `make e2e`: nexus-ai-fs in its OWN virtualenv
# (.venv-nexus), never in the project's .venv (its dependencies must not decide
# ours, nor ours its). tests/test_nexus_client.py runs `nexus serve` from it
# against the E2B emulator.
#
# Version: 0.5.6, the newest nexus-ai-fs release whose Requires-Python admits
# Python 3.11. nexus-ai-fs declares no dependency on the e2b SDK, yet its E2B
# sandbox provider imports it ("e2b package not installed. Install with: pip
# install e2b"), so e2b is installed alongside, as Nexus says: unpinned, the
# release pip resolves next to nexus-ai-fs (NEXUS_E2B pins it, e.g. e2b==2.63.0).
# Idempotent: reuses the venv when it holds what was asked (under a second).
# On failure: exit non-zero with one line starting "nexus-venv: error:".
# Settings (environment): PYTHON (default python3), VENV_NEXUS (default
# .venv-nexus), NEXUS_VERSION (default 0.5.6), NEXUS_E2B (default e2b).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_NEXUS:-.venv-nexus}
VERSION=${NEXUS_VERSION:-0.5.6}
E2B=${NEXUS_E2B:-e2b}

fail() { echo "nexus-venv: error: $*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    fail "needs Python >= 3.11 (set PYTHON=...)"

want="nexus-ai-fs==$VERSION $E2B $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
installed() {  # what was asked, per the stamp and per the venv's own package metadata (not importing: 3 s)
    [ "$(cat "$VENV/.installed" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" -c '
import sys
from importlib.metadata import version
sys.exit(version("nexus-ai-fs") != sys.argv[1] or not version("e2b"))' "$VERSION" 2>/dev/null
}
if installed; then
    echo "nexus-venv: $want already in $VENV"
    exit 0
fi

rm -rf "$VENV"  # fresh: another version's leftovers must not satisfy anything
out=$("$PYTHON" -m venv "$VENV" 2>&1) || fail "cannot create $VENV with $PYTHON: $(echo "$out" | tail -n1)"
echo '*' >"$VENV/.gitignore"  # git ignores the whole venv, the log inside included
LOG=$VENV/install.log  # pip's output: one line of it is shown when it fails
echo "nexus-venv: installing nexus-ai-fs==$VERSION and $E2B into $VENV (about a minute)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "nexus-ai-fs==$VERSION" "$E2B" >>"$LOG" 2>&1 ||
    fail "pip install nexus-ai-fs==$VERSION $E2B: $(grep '^ERROR' "$LOG" | tail -n1 | grep . || tail -n1 "$LOG") (log: $LOG)"
got=$("$VENV/bin/python" -c 'import nexus, e2b
from importlib.metadata import version
print(version("nexus-ai-fs"), version("e2b"))' 2>>"$LOG") || fail "nexus or e2b is not importable in $VENV (see $LOG)"
read -r got e2b_got <<<"$got"
[ "$got" = "$VERSION" ] || fail "$VENV has nexus-ai-fs $got, not $VERSION"
echo "$want" >"$VENV/.installed"
echo "nexus-venv: nexus-ai-fs $got and e2b $e2b_got in $VENV"
