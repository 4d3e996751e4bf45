#!/bin/bash
# docker/build.sh - build relayfork's images on a machine where no registry serves node images.
#
#   docker/build.sh            -> relayfork:latest (the daemon) and relayfork:test (npm test)
#
# The Node 20 base is derived from local/bookworm:base (../shared/tools/docker-env.sh up) plus
# this host's node and npm (docker/host-node.Dockerfile); set RELAYFORK_BASE_IMAGE to use another
# base, e.g. node:20-bookworm-slim where Docker Hub is reachable. The build context is the files
# git knows of (tracked, or untracked and not ignored), so node_modules/, dist/ and .git/ stay
# out without a .dockerignore. Needs a running engine; builds use --network=host (apt, npm).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${RELAYFORK_IMAGE:-relayfork:latest}
TEST_IMAGE=${RELAYFORK_TEST_IMAGE:-relayfork:test}
DEBIAN_BASE=${RELAYFORK_DEBIAN_BASE:-local/bookworm:base}

log() { printf '+ [%s] %s\n' "$(date +%T)" "$*" >&2; }

host_node_base() {
    local node npm version image ctx
    node=$(command -v node)
    version=$(node -p 'process.versions.node')
    npm=$(dirname "$(readlink -f "$(command -v npm)")")/..
    image=local/relayfork-node:$version
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        docker image inspect "$DEBIAN_BASE" >/dev/null 2>&1 ||
            { echo "$DEBIAN_BASE is missing: run ../shared/tools/docker-env.sh up" >&2; exit 1; }
        ctx=$(mktemp -d)
        trap 'rm -rf "$ctx"' RETURN
        cp "$(readlink -f "$node")" "$ctx/node"
        cp -a "$(readlink -f "$npm")" "$ctx/npm"
        log "building $image from $DEBIAN_BASE + host node v$version"
        docker build -q --build-arg BASE_IMAGE="$DEBIAN_BASE" -t "$image" \
            -f "$ROOT/docker/host-node.Dockerfile" "$ctx" >/dev/null
    fi
    echo "$image"
}

build() {  # $1 = target, $2 = tag
    local previous
    previous=$(docker image inspect -f '{{.Id}}' "$2" 2>/dev/null || true)
    log "docker build --target $1 -t $2 (base $BASE)"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -c) |
        docker build --network=host --build-arg BASE_IMAGE="$BASE" --target "$1" -t "$2" \
            -f docker/Dockerfile - >&2
    # The image this tag named before, unless a container still uses it (then it stays).
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$2")" ]; then
        docker rmi "$previous" >/dev/null 2>&1 || true
    fi
}

BASE=${RELAYFORK_BASE_IMAGE:-$(host_node_base)}
t0=$SECONDS
build relayfork "$IMAGE"
build test "$TEST_IMAGE"
log "built $IMAGE and $TEST_IMAGE in $((SECONDS - t0)) s"
