#!/bin/bash
# Runs inside the image of docker/fresh-install.Dockerfile (scripts/test-fresh-install.sh): README's
# two set-up commands exactly, in a checkout with no node_modules on a machine with no compiler,
# then what the Quick start promises: `ready`, one fork relayed to a registrant, and SIGTERM
# unmounting. Needs --privileged --pid=host --net=host --device /dev/fuse.
set -euo pipefail
cd /opt/relayfork
MOUNTPOINT=/run/relayfork
WORK=$(mktemp -d)
say() { printf 'fresh-install: %s\n' "$*"; }
fail() { printf 'fresh-install: FAIL: %s\n' "$*" >&2; exit 1; }

# Liveness only: $1 seconds for the condition in "${@:3}" ($2 names it).
wait_until() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 $((seconds * 10))); do "$@" && return 0; sleep 0.1; done
    fail "no $what within $seconds s"
}

say "node $(node --version), npm $(npm --version), no compiler (checked when the image was built)"
start=$(date +%s%N)
if ! npm ci; then
    fail "npm ci failed on a machine without a compiler"
fi
say "npm ci took $((($(date +%s%N) - start) / 1000000)) ms"

daemon_pid=
consumer_pid=
cleanup() {
    [ -n "$consumer_pid" ] && kill "$consumer_pid" 2>/dev/null || true
    [ -n "$daemon_pid" ] && kill -- "-$daemon_pid" 2>/dev/null || true
    if grep -q " $MOUNTPOINT fuse" /proc/self/mounts; then umount -l "$MOUNTPOINT" || true; fi
}
trap cleanup EXIT

# In a process group of its own, as a shell with job control runs a foreground command, so that
# a signal can be sent as a terminal (Ctrl-C) or a service manager sends it: to the whole group.
# (A signal to npx alone ends npx and leaves the daemon running: npm exec does not forward it.)
setsid npx relayfork --mountpoint "$MOUNTPOINT" >"$WORK/daemon.log" 2>&1 &
daemon_pid=$!
daemon_ready() {
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$WORK/daemon.log" >&2; fail "the daemon exited"; }
    grep -q 'ready' "$WORK/daemon.log"
}
wait_until 60 "'ready' from npx relayfork" daemon_ready
say "daemon: $(grep 'ready' "$WORK/daemon.log" | head -1)"
grep -q " $MOUNTPOINT fuse" /proc/self/mounts || fail "$MOUNTPOINT is not a FUSE mount"

# README's Quick start, from here on.
echo 40 >"$MOUNTPOINT/signal"
[ "$(cat "$MOUNTPOINT/signal")" = 40 ] || fail "signal reads $(cat "$MOUNTPOINT/signal"), not 40"
/opt/fixtures/rt_consumer --signal 40 --register "$MOUNTPOINT/processes" >"$WORK/consumer.out" &
consumer_pid=$!
wait_until 15 "'ready' from the registrant" grep -qx ready "$WORK/consumer.out"
[ "$(cat "$MOUNTPOINT/processes")" = "$consumer_pid " ] ||
    fail "processes reads '$(cat "$MOUNTPOINT/processes")', not '$consumer_pid '"

# One fork of our own: the registrant must get si_code SI_ASYNCIO (-4), si_pid = the parent,
# si_value = the child.
read -r _ parent child < <(/opt/fixtures/forker 1 0)
expected="sig=40 code=-4 pid=$parent val=$child"
wait_until 15 "signal for fork $parent -> $child" grep -qx "$expected" "$WORK/consumer.out"
say "relayed: $expected"

kill -TERM "$consumer_pid"
wait "$consumer_pid" || true
consumer_pid=
# SIGTERM to the process group (npx and the daemon it started), as `kill -TERM -PGID` or systemd
# sends it (the lifecycle tests cover SIGINT, Ctrl-C, too). The daemon unmounts and exits; every
# process of the group must be gone, and the mount with them.
group_alive() {
    local stat line rest state pgrp
    for stat in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$stat" || continue
        # after the command name (which may hold spaces): state, ppid, process group. A zombie
        # (npx, until this shell waits for it) has exited.
        rest=${line##*) }
        read -r state _ pgrp _ <<<"$rest"
        [ "$pgrp" = "$daemon_pid" ] && [ "$state" != Z ] && return 0
    done
    return 1
}
kill -TERM -- "-$daemon_pid"
group_gone() { ! group_alive; }
wait_until 15 "exit of npx and the daemon after SIGTERM" group_gone
wait "$daemon_pid" || true
daemon_pid=
grep -q "unmounted $MOUNTPOINT" "$WORK/daemon.log" || { cat "$WORK/daemon.log" >&2; fail "the daemon did not log its unmount"; }
if grep " $MOUNTPOINT " /proc/self/mounts; then fail "$MOUNTPOINT is still mounted after SIGTERM"; fi
say "SIGTERM: the daemon unmounted and exited"

# README "As a systemd service": the global install from the tarball npm pack makes.
version=$(node -p 'require("./package.json").version')
npm pack --loglevel=warn >/dev/null
[ -f "relayfork-$version.tgz" ] || fail "npm pack made no relayfork-$version.tgz"
npm install -g "./relayfork-$version.tgz" || fail "npm install -g ./relayfork-$version.tgz failed"
[ "$(command -v relayfork)" = /usr/local/bin/relayfork ] || fail "relayfork is not on PATH in /usr/local/bin"
relayfork --help | grep -q install-service || fail "relayfork --help does not list install-service"
[ -f "$(npm root -g)/relayfork/systemd/relayfork.service" ] || fail "the shipped unit is missing"
relayfork install-service --unit-dir "$WORK/units" >/dev/null
exec_start="ExecStart=$(command -v node) $(npm root -g)/relayfork/dist/cli.js --signal 40 --fd-store"
grep -qx "$exec_start" "$WORK/units/relayfork.service" ||
    fail "install-service wrote no '$exec_start': $(grep ExecStart= "$WORK/units/relayfork.service")"
say "npm install -g ./relayfork-$version.tgz: relayfork on PATH, the unit shipped"
say "PASS"
