#!/bin/bash
# npm run test:docker: the whole host test suite inside a privileged container, then the
# end-to-end across the container boundary (test/deploy/docker.test.ts).
#
#   1. a Docker engine: ../shared/tools/docker-env.sh up (stopped again at the end if started here)
#      and docker-compose (apt) for docker/compose.yaml;
#   2. docker/build.sh: relayfork:latest (the daemon) and relayfork:test (+ cc, util-linux);
#   3. npm test in relayfork:test with --privileged --pid=host --net=host --device /dev/fuse, the
#      flags the proc connector and FUSE need;
#   4. jest -c jest.deploy.config.js test/deploy/docker.test.ts on the host.
# RELAYFORK_SHARED_TOOLS overrides where the shared tools are (default: ../shared/tools next to
# the repository, as in CI).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${RELAYFORK_SHARED_TOOLS:-$(cd "$ROOT/.." && pwd)/shared/tools}
TEST_IMAGE=${RELAYFORK_TEST_IMAGE:-relayfork:test}
export RELAYFORK_SHARED_TOOLS=$TOOLS

log() { printf '+ [%s] %s\n' "$(date +%T)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "test:docker needs root (Docker, FUSE, the proc connector)" >&2; exit 1; }
[ -x "$TOOLS/docker-env.sh" ] || { echo "$TOOLS/docker-env.sh is missing: set RELAYFORK_SHARED_TOOLS" >&2; exit 1; }

started_engine=0
if ! docker info >/dev/null 2>&1; then
    started_engine=1
    log "no Docker engine running: $TOOLS/docker-env.sh up"
    "$TOOLS/docker-env.sh" up
fi
cleanup() {
    if [ "$started_engine" = 1 ]; then "$TOOLS/docker-env.sh" down || true; fi
}
trap cleanup EXIT

if ! command -v docker-compose >/dev/null 2>&1; then
    log "apt-get install docker-compose"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null
fi

t0=$SECONDS
"$ROOT/docker/build.sh"
log "images built in $((SECONDS - t0)) s"

t0=$SECONDS
log "npm test inside $TEST_IMAGE (--privileged --pid=host --net=host --device /dev/fuse)"
docker run --rm --privileged --pid=host --net=host --device /dev/fuse \
    --name "relayfork-suite-$$" "$TEST_IMAGE" npm test
log "suite in the container: $((SECONDS - t0)) s"

t0=$SECONDS
(cd "$ROOT" && npx jest -c jest.deploy.config.js --detectOpenHandles test/deploy/docker.test.ts)
log "end-to-end across the container boundary: $((SECONDS - t0)) s"
