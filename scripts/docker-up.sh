#!/usr/bin/env bash
# Make this machine ready for e2b-matrix's Docker backend (make docker-up, make e2e).
#
#   1. packages   docker.io and debootstrap, installed with apt-get only when missing.
#                 docker.io brings dockerd and /usr/bin/docker, a CLI (20.10) that drives
#                 the daemon's BuildKit with DOCKER_BUILDKIT=1 even where the `docker`
#                 first on PATH is a newer CLI without the buildx plugin (which refuses
#                 BuildKit)
#   2. daemon     dockerd started in the background when no daemon answers
#   3. builder    which docker CLI and builder e2b-matrix will use, found by the same
#                 discovery the Docker backend runs (a tiny probe build); when it finds
#                 only the legacy builder and apt offers a buildx plugin package, that
#                 package is installed and the discovery runs again
#   4. base images Debian images made with debootstrap and `docker import` (no image
#                 registry is needed), unless their tags already exist: bookworm for the
#                 Docker backend's e2e tests, trixie for the E2B emulator's Docker mode
#
# Idempotent: a second run finds everything in place and changes nothing (about a
# second). On failure it exits non-zero with one line starting "docker-up: error:".
# Needs root. Settings (environment):
#   E2B_MATRIX_DOCKER_BASE            base image tag (default e2b-matrix/debian-base:bookworm)
#   E2B_MATRIX_EMULATOR_BASE          the trixie base tag (default e2b-matrix/debian-base:trixie)
#   E2B_MATRIX_DOCKER_STORAGE_DRIVER  force a storage driver (default: overlay2 when an
#                                     overlay mount works here, else vfs)
#   E2B_MATRIX_DEBIAN_MIRROR          Debian mirror for debootstrap (default: read from
#                                     the host's apt sources)
#   E2B_MATRIX_DOCKERD_WAIT           seconds to wait for dockerd to answer (default 60)
#   E2B_MATRIX_DOCKER_LOG_DIR         where dockerd's log goes (default /tmp/e2b-matrix-docker)
#   E2B_MATRIX_DOCKER_CLI, E2B_MATRIX_DOCKER_BUILDKIT
#                                     as for e2b-matrix (phase 3 reports what they select;
#                                     with E2B_MATRIX_DOCKER_BUILDKIT=1 no BuildKit is an error)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SYSTEM_DOCKER=/usr/bin/docker   # docker.io's CLI: drives the daemon's BuildKit

BASE_TAG="${E2B_MATRIX_DOCKER_BASE:-e2b-matrix/debian-base:bookworm}"
EMULATOR_BASE_TAG="${E2B_MATRIX_EMULATOR_BASE:-e2b-matrix/debian-base:trixie}"
LOG_DIR="${E2B_MATRIX_DOCKER_LOG_DIR:-/tmp/e2b-matrix-docker}"
DOCKERD_LOG="$LOG_DIR/dockerd.log"
DOCKERD_PID="$LOG_DIR/dockerd.pid"
WAIT_SECONDS="${E2B_MATRIX_DOCKERD_WAIT:-60}"
DOCKER_ROOT=/var/lib/docker
# What the layers need on top of minbase: Python and pip (pip install ...), TLS for
# pip and apt (ca-certificates), sudo and procps (fuse layer, checks), netbase
# (/etc/services and /etc/protocols for Python's socket module), and the small
# tools a pip build or an apt-get install inside a build expects.
PACKAGES=python3,python3-pip,python3-venv,ca-certificates,sudo,procps,netbase,less,xz-utils,gnupg

log() { printf 'docker-up: %s\n' "$*"; }
die() { printf 'docker-up: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
SUMMARY=()
phase_done() {  # name start detail
    local took
    took=$(elapsed "$2")
    SUMMARY+=("$(printf '%-10s %6ss  %s' "$1" "$took" "$3")")
    log "phase $1: ${took}s ($3)"
}

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, starts dockerd and runs debootstrap)"
mkdir -p "$LOG_DIR"

daemon_answers() { timeout 10 docker info >/dev/null 2>&1; }

# ---------------------------------------------------------------- 1. packages
start=$(now)
APT_UPDATED=0
apt_install() {  # packages... -> 0 when installed; the log goes to $LOG_DIR/apt.log
    # Keep the package scripts from starting a daemon of their own (there is no init
    # system here to manage it): this script starts dockerd itself, with its own flags.
    local policy_rc=/usr/sbin/policy-rc.d made_policy=0 rc=0
    if [ ! -e "$policy_rc" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy_rc" && chmod +x "$policy_rc" && made_policy=1
    fi
    set +e
    if [ "$APT_UPDATED" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 && APT_UPDATED=1
    fi
    [ "$APT_UPDATED" -eq 1 ] &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "$@" >>"$LOG_DIR/apt.log" 2>&1
    rc=$?
    set -e
    [ "$made_policy" -eq 1 ] && rm -f "$policy_rc"
    return $rc
}

missing=()
# docker.io when there is no daemon binary, or no distribution CLI next to it (the
# one that drives the daemon's BuildKit without a plugin). A machine with Docker's
# own packages (docker-ce: dockerd and /usr/bin/docker) installs nothing here.
if ! command -v dockerd >/dev/null 2>&1 || [ ! -x "$SYSTEM_DOCKER" ]; then
    missing+=(docker.io)
fi
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (log: $LOG_DIR/apt.log)"
    : >"$LOG_DIR/apt.log"
    if ! apt_install "${missing[@]}"; then
        tail -n 20 "$LOG_DIR/apt.log" >&2
        die "apt-get could not install ${missing[*]} (full log: $LOG_DIR/apt.log)"
    fi
    phase_done packages "$start" "installed ${missing[*]}"
else
    phase_done packages "$start" "docker.io and debootstrap already installed"
fi
command -v docker >/dev/null 2>&1 || die "no docker client on PATH after installing docker.io"

# ---------------------------------------------------------------- 2. daemon
overlay_works() {  # can this machine mount an overlay on the filesystem of $DOCKER_ROOT?
    local dir rc=1
    mkdir -p "$DOCKER_ROOT"
    dir=$(mktemp -d "$DOCKER_ROOT/.overlay-probe.XXXXXX")
    mkdir -p "$dir/lower" "$dir/upper" "$dir/work" "$dir/merged"
    echo probe >"$dir/lower/file"
    if mount -t overlay overlay -o "lowerdir=$dir/lower,upperdir=$dir/upper,workdir=$dir/work" \
        "$dir/merged" 2>/dev/null; then
        if [ "$(cat "$dir/merged/file" 2>/dev/null)" = probe ] && echo up >"$dir/merged/new" 2>/dev/null; then
            rc=0
        fi
        umount "$dir/merged" 2>/dev/null || umount -l "$dir/merged" 2>/dev/null || true
    fi
    rm -rf --one-file-system "$dir"
    return $rc
}

choose_driver() {
    if [ -n "${E2B_MATRIX_DOCKER_STORAGE_DRIVER:-}" ]; then
        echo "$E2B_MATRIX_DOCKER_STORAGE_DRIVER"; return
    fi
    # A driver used before keeps its images: stay with it.
    local d
    for d in overlay2 vfs; do
        if [ -d "$DOCKER_ROOT/image/$d" ]; then echo "$d"; return; fi
    done
    if overlay_works; then echo overlay2; else echo vfs; fi
}

start_dockerd() {  # driver -> 0 when the daemon answers within WAIT_SECONDS
    local driver=$1 pid waited=0
    log "starting dockerd (storage driver $driver), log: $DOCKERD_LOG"
    printf '\n==== %s dockerd --storage-driver=%s\n' "$(date -u +%FT%TZ)" "$driver" >>"$DOCKERD_LOG"
    # Own session, so it outlives this script and the shell that ran it.
    setsid dockerd --storage-driver="$driver" --pidfile=/var/run/docker.pid \
        </dev/null >>"$DOCKERD_LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$DOCKERD_PID"
    while [ "$waited" -lt "$WAIT_SECONDS" ]; do
        if daemon_answers; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd exited; last lines of its log:"
            tail -n 15 "$DOCKERD_LOG" | sed 's/^/    /' >&2
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "dockerd did not answer within ${WAIT_SECONDS}s; stopping it"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    return 1
}

start=$(now)
if daemon_answers; then
    driver=$(docker info --format '{{.Driver}}' 2>/dev/null || echo unknown)
    phase_done daemon "$start" "a daemon already answers (storage driver $driver)"
else
    if [ -S /var/run/docker.sock ] && ! pgrep -x dockerd >/dev/null 2>&1; then
        rm -f /var/run/docker.sock /var/run/docker.pid  # left by a daemon that died
    fi
    pgrep -x dockerd >/dev/null 2>&1 &&
        die "a dockerd process runs but does not answer 'docker info'; see $DOCKERD_LOG"
    driver=$(choose_driver)
    if ! start_dockerd "$driver"; then
        if [ "$driver" != vfs ] && [ -z "${E2B_MATRIX_DOCKER_STORAGE_DRIVER:-}" ]; then
            log "storage driver $driver failed; falling back to vfs"
            driver=vfs
            start_dockerd vfs || die "dockerd did not start with vfs either; see $DOCKERD_LOG"
        else
            die "dockerd did not start (storage driver $driver); see $DOCKERD_LOG"
        fi
    fi
    driver=$(docker info --format '{{.Driver}}' 2>/dev/null || echo "$driver")
    phase_done daemon "$start" "dockerd pid $(cat "$DOCKERD_PID"), storage driver $driver"
fi

# ---------------------------------------------------------------- 3. builder
# The same discovery the Docker backend runs (e2b_matrix.backends.docker_discovery), so
# this line says what builds will use. Exit codes of the check: 0 BuildKit, 3 legacy,
# 4 BuildKit required (E2B_MATRIX_DOCKER_BUILDKIT=1) but unavailable, 5 legacy as the
# setting asks (E2B_MATRIX_DOCKER_BUILDKIT=0), else it could not run.
BUILDER_CHECK='
import sys
from e2b_matrix.backends.docker_discovery import discover
from e2b_matrix.settings import Settings
s = Settings.from_env()
found = discover(s.docker_cli, s.docker_buildkit)
print(found.describe())
sys.exit(4 if found.error else 0 if found.buildkit else 5 if s.docker_buildkit is False else 3)
'
check_builder() {  # -> prints the one-line description; returns the check's exit code
    local py
    if [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c 'import e2b_matrix' 2>/dev/null; then
        py=("$ROOT/.venv/bin/python")
    elif command -v python3 >/dev/null 2>&1 &&
        PYTHONPATH="$ROOT/src" python3 -c 'import attrs, e2b_matrix.settings' 2>/dev/null; then
        py=(env PYTHONPATH="$ROOT/src" python3)
    else
        echo "not checked: no Python with e2b-matrix's dependencies yet (make venv)"
        return 2
    fi
    "${py[@]}" -c "$BUILDER_CHECK" 2>&1 | tail -n 1
    return "${PIPESTATUS[0]}"
}
buildx_package() {  # a buildx plugin package apt can install here, or nothing
    local p candidate
    for p in docker-buildx-plugin docker-buildx; do
        candidate=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')
        if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
            echo "$p"; return
        fi
    done
}

start=$(now)
set +e
builder=$(check_builder); rc=$?
set -e
if [ $rc -eq 3 ] && pkg=$(buildx_package) && [ -n "$pkg" ]; then
    log "only the legacy builder works; installing $pkg (log: $LOG_DIR/apt.log)"
    apt_install "$pkg" || log "could not install $pkg; keeping the legacy builder (see $LOG_DIR/apt.log)"
    set +e
    builder=$(check_builder); rc=$?
    set -e
fi
case $rc in
    0 | 2 | 5) phase_done builder "$start" "$builder" ;;
    3) phase_done builder "$start" "$builder"
       log "warning: builds will use the legacy builder (no BuildKit: identical steps of concurrent builds run twice)" ;;
    4) die "$builder" ;;
    *) die "the builder check failed: $builder" ;;
esac

# ---------------------------------------------------------------- 4. base image
mirror_from_host() {  # the first URI that serves $SUITE in the host's apt sources
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822: paragraphs of "Key: value" lines
        awk -v suite="$SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uri != "")
                    { print uri; found = 1; exit }
                types = suites = uri = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "suites") suites = val
                else if (key == "uris") { split(val, u, /[ \t]+/); uri = u[1] }
                else if (key == "enabled") enabled = tolower(val)
            }
            END { if (!found) flush() }
        ' "$f" | head -n 1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # one-line: deb [options] URI suite components
        awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f"
    done
}

ROOTFS=""
cleanup_rootfs() {
    [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ] || return 0
    # debootstrap mounts /proc and /sys inside the target; never delete through them.
    local m
    for m in $(awk -v root="$ROOTFS" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup_rootfs EXIT

host_suite() {  # the host's own Debian release (the suite its apt sources certainly name)
    local codename=""
    [ -r /etc/os-release ] && codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    echo "${codename:-bookworm}"
}

image_sources() {  # suite -> the host's apt sources, each naming that suite instead of the host's own
    local suite=$1 hsuite f
    hsuite=$(host_suite)
    rm -f "$ROOTFS/etc/apt/sources.list"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        if [ "$suite" = "$hsuite" ]; then
            cp "$f" "$ROOTFS$f"
        else  # bookworm -> trixie, bookworm-updates -> trixie-updates, bookworm-security -> trixie-security
            sed -E "s/\\<$hsuite(-[a-z]+)?\\>/$suite\\1/g" "$f" >"$ROOTFS$f"
        fi
    done
}

make_base() {  # suite tag what-for
    local suite=$1 tag=$2 what=$3 mirror image python size t start
    start=$(now)
    if docker image inspect "$tag" >/dev/null 2>&1; then
        phase_done "$suite" "$start" "$tag already exists ($(docker image inspect --format '{{.Id}}' "$tag" | cut -c1-19))"
        return
    fi
    # The mirror that serves the host's own suite serves the others too.
    mirror="${E2B_MATRIX_DEBIAN_MIRROR:-$(SUITE=$suite mirror_from_host | head -n 1)}"
    [ -n "$mirror" ] || mirror=$(SUITE=$(host_suite) mirror_from_host | head -n 1)
    [ -n "$mirror" ] || die "no Debian mirror for $suite in the host's apt sources; set E2B_MATRIX_DEBIAN_MIRROR"
    ROOTFS=$(mktemp -d /var/tmp/e2b-matrix-rootfs.XXXXXX)
    log "debootstrap --variant=minbase $suite from $mirror (log: $LOG_DIR/debootstrap-$suite.log)"
    t=$(now)
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$ROOTFS" "$mirror" \
        >"$LOG_DIR/debootstrap-$suite.log" 2>&1; then
        tail -n 20 "$LOG_DIR/debootstrap-$suite.log" >&2
        [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 20 "$ROOTFS/debootstrap/debootstrap.log" >&2
        die "debootstrap $suite failed (log: $LOG_DIR/debootstrap-$suite.log)"
    fi
    log "  debootstrap: $(elapsed "$t")s"

    t=$(now)
    # apt inside the image uses the host's sources (same mirror), for its own suite ...
    image_sources "$suite"
    # ... which may be a dated snapshot whose Release files have expired.
    cat >"$ROOTFS/etc/apt/apt.conf.d/99e2b-matrix" <<'EOF2'
// e2b-matrix: the mirror may serve a dated snapshot; do not reject it as expired.
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
EOF2
    # Plain `pip install` works, as on E2B's images (no PEP 668 marker).
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    [ -e "$ROOTFS/usr/bin/pip" ] || ln -s pip3 "$ROOTFS/usr/bin/pip"
    [ -x "$ROOTFS/usr/bin/pip" ] || die "pip is missing in the image (python3-pip not installed?)"
    # Smaller image; Docker provides these at run time.
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb \
        "$ROOTFS/debootstrap"
    : >"$ROOTFS/etc/hostname"
    : >"$ROOTFS/etc/resolv.conf"
    log "  configure: $(elapsed "$t")s"

    t=$(now)
    image=$(tar -C "$ROOTFS" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV DEBIAN_FRONTEND=noninteractive' \
        --change "LABEL org.opencontainers.image.description=\"Debian $suite minbase with Python 3 and pip, made by e2b-matrix scripts/docker-up.sh ($what)\"" \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $suite" \
        - "$tag") || die "docker import of $tag failed"
    log "  import: $(elapsed "$t")s"
    cleanup_rootfs
    ROOTFS=""
    python=$(docker run --rm --network host "$tag" python3 --version 2>&1) ||
        die "the new image $tag does not run python3: $python"
    size=$(docker image inspect --format '{{.Size}}' "$tag")
    phase_done "$suite" "$start" "made $tag (${image:0:19}, $((size / 1024 / 1024)) MB, $python)"
}

# bookworm (Python 3.11): the Docker backend's base in the e2e tests. trixie (Python 3.13, the
# Python of E2B's code-interpreter-v1): what the E2B emulator's Docker mode builds its stand-in
# of that template on (e2b_matrix/emulator/standin.py).
make_base bookworm "$BASE_TAG" "the Docker backend's e2e base"
make_base trixie "$EMULATOR_BASE_TAG" "the E2B emulator's Docker mode"

log "ready:"
for line in "${SUMMARY[@]}"; do log "  $line"; done
