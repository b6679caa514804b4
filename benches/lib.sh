# shellcheck shell=bash
# Shared by the scripts in benches/: start the release daemon on temporary
# paths, stop it on exit, and print result tables. Source it, don't run it.

# start_daemon SERVE-OPTIONS...: builds nothing; starts $PILFERED (default
# target/release/pilfered) on a fresh temporary directory, logging to
# $tmp/daemon.log, and waits until its interfaces are ready. Sets tmp, mnt,
# fifo and daemon, and stops everything on exit (then runs $on_exit, if the
# script set one).
start_daemon() {
    tmp=$(mktemp -d /tmp/pilfered-bench.XXXXXX)
    mnt="$tmp/mnt"
    fifo="$tmp/fifo"
    # shellcheck disable=SC2154 # on_exit is the sourcing script's
    trap 'stop_daemon; eval "${on_exit:-}"' EXIT
    "${PILFERED:-target/release/pilfered}" serve --mount "$mnt" --fifo "$fifo" "$@" 2>"$tmp/daemon.log" &
    daemon=$!
    local want_fuse=1 want_fifo=1 arg
    for arg in "$@"; do
        case $arg in
            --no-fuse) want_fuse=0 ;;
            --no-fifo) want_fifo=0 ;;
        esac
    done
    for _ in $(seq 100); do
        { [ $want_fuse = 0 ] || [ -r "$mnt/bits" ]; } &&
            { [ $want_fifo = 0 ] || [ -p "$fifo" ]; } && return 0
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    echo "pilfered did not start:" >&2
    cat "$tmp/daemon.log" >&2
    exit 1
}

stop_daemon() {
    # Background jobs of the script (readers) first, then the daemon.
    local pids
    mapfile -t pids < <(jobs -p)
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
    wait 2>/dev/null
    # Anything still mounted below $tmp (the daemon's mount if it failed to
    # unmount, a helper's) is detached before the directory goes.
    awk -v t="$tmp/" 'index($2, t) == 1 { print $2 }' /proc/self/mounts | xargs -r -n1 umount -l
    rm -rf "$tmp"
}

# print_table HEADER ROW...: fields separated by '|', aligned in columns.
print_table() {
    printf '%s\n' "$@" | column -t -s '|'
}

# write_markdown FILE INTRO HEADER ROW...: the same table as Markdown, after a
# line saying how it was made.
write_markdown() {
    local file=$1 intro=$2 header=$3 cols
    shift 3
    cols=$(awk -F'|' '{ print NF }' <<<"$header")
    {
        echo "$intro"
        echo
        echo "| ${header//|/ | } |"
        printf '|'; for _ in $(seq "$cols"); do printf ' --- |'; done; echo
        for row in "$@"; do echo "| ${row//|/ | } |"; done
    } >"$file"
    echo "wrote $file" >&2
}
