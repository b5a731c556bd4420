#!/usr/bin/env bash
# make demo: the whole e2b-matrix flow against a local E2B (e2b-matrix emulate), no account needed.
#
# In a scratch copy of the project (variants/, requirements/, layers/): the repository stays as it
# was. The emulator runs in its timing mode (builds take modelled time, nothing runs: well under a
# minute); docs/emulator.md says what it models and how to run its Docker mode instead.
#
#   build-all  ->  plan (all fresh)  ->  resolve  ->  promote  ->  a second build (pinned moves to
#   another nexus-ai-fs release)  ->  diff  ->  rollback
#
# Settings (environment): DEMO_PINNED_TO (default 0.5.5: the release the second build moves
# pinned to), DEMO_KEEP=1 keeps the scratch copy and prints where it is.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLI="$ROOT/.venv/bin/e2b-matrix"
MOVE_TO=${DEMO_PINNED_TO:-0.5.5}

[ -x "$CLI" ] || { echo "demo: error: no $CLI (make demo creates it: make venv)" >&2; exit 2; }
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/e2b-matrix-demo.XXXXXX")
EMULATOR_PID=""
cleanup() {
    [ -n "$EMULATOR_PID" ] && kill "$EMULATOR_PID" 2>/dev/null && wait "$EMULATOR_PID" 2>/dev/null
    if [ "${DEMO_KEEP:-}" = 1 ]; then echo "demo: the scratch project stays in $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
for d in variants requirements layers; do
    [ -d "$ROOT/$d" ] && cp -R "$ROOT/$d" "$SCRATCH/$d"
done

step() { if [ -t 1 ]; then printf '\n\033[1m$ e2b-matrix %s\033[0m\n' "$*"; else printf '\n$ e2b-matrix %s\n' "$*"; fi; }
run() { step "$@"; "$CLI" -C "$SCRATCH" "$@"; }

start=$(date +%s)
step "emulate --mode timing &"
"$CLI" emulate --mode timing --env-file "$SCRATCH/e2b.env" >/dev/null 2>"$SCRATCH/emulate.log" &
EMULATOR_PID=$!
for _ in $(seq 1 300); do
    [ -s "$SCRATCH/e2b.env" ] && break
    kill -0 "$EMULATOR_PID" 2>/dev/null || { cat "$SCRATCH/emulate.log" >&2; exit 1; }
    sleep 0.1
done
[ -s "$SCRATCH/e2b.env" ] || { echo "demo: error: the emulator did not start" >&2; exit 1; }
cat "$SCRATCH/e2b.env"
set -a; . "$SCRATCH/e2b.env"; set +a

run build-all
run plan
run resolve latest
run promote latest --channel stable
run resolve latest --channel stable

step "(a change: pinned moves to nexus-ai-fs $MOVE_TO in variants/pinned.toml)"
sed -i.bak -E "s/^version = \".*\"/version = \"$MOVE_TO\"/" "$SCRATCH/variants/pinned.toml" && rm -f "$SCRATCH/variants/pinned.toml.bak"
run plan pinned
run build pinned
# What changed inside needs an inventory, which verify records in a sandbox that runs: the timing
# mode's run nothing, so diff says so (e2b-matrix emulate --mode docker runs them).
run diff pinned || true
run rollback pinned
run lock show
printf '\ndemo: done in %ss (the emulator ran in its timing mode; docs/emulator.md)\n' "$(( $(date +%s) - start ))"
