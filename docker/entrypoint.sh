#!/bin/bash
# The daemon image's entry point: runs relayfork with the container's arguments, passes SIGTERM
# and SIGINT on to it (it unmounts and exits), and exits with its status. If the mountpoint did
# not exist before, the daemon created it, and it is removed again once unmounted: with the
# host's /run bound into the container that directory is the host's /run/relayfork, which
# `docker compose down` or `docker stop` would otherwise leave behind, empty.
set -uo pipefail

mountpoint=/run/relayfork
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --mountpoint) mountpoint=${args[i + 1]:-} ;;
        --mountpoint=*) mountpoint=${args[i]#--mountpoint=} ;;
    esac
done
created=0
[ -e "$mountpoint" ] || created=1

node /opt/relayfork/dist/cli.js "$@" &
child=$!
forward() { kill -s "$1" "$child" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT
# wait returns early when a trapped signal arrives: wait again until the daemon has exited.
while :; do
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
done

if [ "$created" = 1 ] && [ -d "$mountpoint" ] && ! grep -q " $mountpoint " /proc/self/mounts; then
    rmdir "$mountpoint" 2>/dev/null || true
fi
exit "$status"
