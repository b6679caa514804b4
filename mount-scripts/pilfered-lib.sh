# shellcheck shell=bash
# shellcheck disable=SC2034 # the globals set here are read by the sourcing scripts
# Shared by pilfered-mount, pilfered-umount and mount.fuse.pilfered, which
# source it from the directory they are installed in. Not a program itself.
#
# State kept per mount point, in STATE_DIR (see state_dir below), under the
# mount point's name escaped as `systemd-escape --path` does
# (/mnt/pilfered -> mnt-pilfered):
#   NAME.pid   written by the daemon itself once it serves the mount: its
#              PID and start time (src/sys/records.rs); removed when it exits
#   NAME.log   its log (stderr) when pilfered-mount started it, begun afresh
#              by each start; the daemon removes it after a clean stop

# Messages, sizes and escapes byte by byte, whatever the user's locale.
export LC_ALL=C

: "${PROG:?PROG must be set before sourcing pilfered-lib.sh}"

# pilfered serve's defaults (src/cli.rs: DEFAULT_MOUNT, DEFAULT_FIFO), named
# once for the scripts; tests/it/scripts.rs checks they agree with the binary.
DEFAULT_MOUNT=/mnt/pilfered
DEFAULT_FIFO=/tmp/pilferedbits

# die MESSAGE: one line on stderr, then exit 1.
die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

# usage_error MESSAGE: like die, with exit status 2 and a pointer to --help.
usage_error() {
    printf "%s: %s; see '%s --help'\n" "$PROG" "$*" "$PROG" >&2
    exit 2
}

# timeout_secs: $PILFERED_TIMEOUT (whole seconds), default 10.
timeout_secs() {
    TIMEOUT=${PILFERED_TIMEOUT:-10}
    case $TIMEOUT in
        '' | *[!0-9]*) usage_error "PILFERED_TIMEOUT=$TIMEOUT: expected whole seconds, like 10" ;;
    esac
}

# state_dir CREATE: sets STATE_DIR: $PILFERED_RUNDIR if set, else
# /run/pilfered for root, else $XDG_RUNTIME_DIR/pilfered, else
# /tmp/pilfered-UID. With CREATE=1 makes it (mode 0700) if missing.
state_dir() {
    if [ -n "${PILFERED_RUNDIR:-}" ]; then
        STATE_DIR=$PILFERED_RUNDIR
    elif [ "$(id -u)" -eq 0 ]; then
        STATE_DIR=/run/pilfered
    elif [ -n "${XDG_RUNTIME_DIR:-}" ]; then
        STATE_DIR=$XDG_RUNTIME_DIR/pilfered
    else
        STATE_DIR=/tmp/pilfered-$(id -u)
    fi
    if [ "$1" = 1 ] && [ ! -d "$STATE_DIR" ]; then
        (umask 077 && mkdir -p -- "$STATE_DIR") || die "cannot create the state directory $STATE_DIR"
    fi
    if [ -e "$STATE_DIR" ] && { [ -L "$STATE_DIR" ] || [ ! -d "$STATE_DIR" ] || [ ! -O "$STATE_DIR" ]; }; then
        die "$STATE_DIR is not a directory owned by us; refusing to keep pidfiles and logs there (set PILFERED_RUNDIR to another)"
    fi
}

# absolute PATH: sets ABS to PATH made absolute and canonical (symlinks
# resolved; the last components need not exist).
absolute() {
    ABS=$(realpath -m -- "$1") || die "$1: cannot resolve this path"
}

# escape_path ABSOLUTE-PATH: sets ESCAPED to the path as
# `systemd-escape --path` writes it: no leading or trailing slash, `/` as
# `-`, and every byte but [A-Za-z0-9:_.] (and a leading `.`) as \xNN.
escape_path() {
    local p=${1#/} c i
    p=${p%/}
    ESCAPED=
    if [ -z "$p" ]; then
        ESCAPED=-
        return
    fi
    for ((i = 0; i < ${#p}; i++)); do
        c=${p:i:1}
        case $c in
            /) ESCAPED+=- ;;
            [A-Za-z0-9:_]) ESCAPED+=$c ;;
            .) if [ "$i" -eq 0 ]; then ESCAPED+='\x2e'; else ESCAPED+=.; fi ;;
            *) ESCAPED+=$(printf '\\x%02x' "'$c") ;;
        esac
    done
}

# state_files MOUNTPOINT: sets PIDFILE and LOGFILE for the (absolute)
# mount point, in STATE_DIR.
state_files() {
    escape_path "$1"
    PIDFILE=$STATE_DIR/$ESCAPED.pid
    LOGFILE=$STATE_DIR/$ESCAPED.log
}

# is_alive PID: whether the process runs (a zombie does not).
is_alive() {
    local state
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# start_time PID: the process's start time in clock ticks since boot (field
# 22 of /proc/PID/stat, after the parenthesised command name).
start_time() {
    awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null
}

# recorded_daemon: sets RECORDED_PID to the daemon PIDFILE names, if that
# very process (PID and start time, as the daemon wrote them) still runs;
# fails otherwise.
recorded_daemon() {
    local pid='' start=''
    RECORDED_PID=
    { [ -f "$PIDFILE" ] && [ ! -L "$PIDFILE" ] && read -r pid start <"$PIDFILE"; } 2>/dev/null || return 1
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    case $start in '' | *[!0-9]*) return 1 ;; esac
    [ "$(start_time "$pid")" = "$start" ] && is_alive "$pid" || return 1
    RECORDED_PID=$pid
}

# process_uid PID: the process's effective uid.
process_uid() {
    awk '$1 == "Uid:" { print $3 }' "/proc/$1/status" 2>/dev/null
}

# serves_mount PID MOUNTPOINT: whether PID is a live `pilfered serve`
# mounting at MOUNTPOINT, judged from its command line (`--mount DIR`,
# `--mount=DIR`, or no --mount for the default mount point).
serves_mount() {
    local pid=$1 mp=$2 arg prev='' n=0 serve=0 mount=''
    is_alive "$pid" || return 1
    while IFS= read -r -d '' arg; do
        if [ "$n" = 0 ]; then
            case ${arg##*/} in pilfered*) ;; *) return 1 ;; esac
        fi
        case $arg in
            serve) serve=1 ;;
            --mount=*) mount=${arg#--mount=} ;;
        esac
        [ "$prev" = --mount ] && mount=$arg
        prev=$arg
        n=$((n + 1))
    done <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [ "$serve" = 1 ] && [ "${mount:-$DEFAULT_MOUNT}" = "$mp" ]
}

# find_daemon MOUNTPOINT: sets DAEMON_PID to the live daemon serving the
# mount point, from the record it wrote itself (PIDFILE), or else (a daemon
# that keeps its records elsewhere) the `pilfered serve` of that mount
# point run by the user who mounted it (the mount's user_id=), never
# another user's process; empty if none.
find_daemon() {
    local p owner
    DAEMON_PID=
    if recorded_daemon; then
        DAEMON_PID=$RECORDED_PID
        return
    fi
    owner=$(mount_owner "$1")
    [ -n "$owner" ] || return 0
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        if [ "$p" != $$ ] && [ "$(process_uid "$p")" = "$owner" ] && serves_mount "$p" "$1"; then
            DAEMON_PID=$p
            return
        fi
    done
}

# mount_field MOUNTPOINT N: prints field N after the separator of the
# topmost mount at exactly MOUNTPOINT in /proc/self/mountinfo (1: the file
# system type, like fuse.pilfered; 3: its super options), or nothing.
mount_field() {
    MP=$1 N=$2 awk '
        {
            p = $5
            gsub(/\\040/, " ", p); gsub(/\\011/, "\t", p); gsub(/\\012/, "\n", p); gsub(/\\134/, "\\", p)
            if (p == ENVIRON["MP"]) {
                for (i = 6; i < NF; i++) if ($i == "-") { t = $(i + ENVIRON["N"]); break }
            }
        }
        END { if (t != "") print t }' /proc/self/mountinfo
}

# mount_type MOUNTPOINT: the file system type mounted there, or nothing.
mount_type() {
    mount_field "$1" 1
}

# mount_owner MOUNTPOINT: the uid of whoever made the FUSE mount there (its
# user_id= option), or nothing.
mount_owner() {
    local opts
    opts=,$(mount_field "$1" 3),
    case $opts in *,user_id=*) opts=${opts#*,user_id=} && printf '%s\n' "${opts%%,*}" ;; esac
}

# is_stale MOUNTPOINT: whether the FUSE connection behind it is gone, so
# that statfs fails with "Transport endpoint is not connected". (Not stat:
# the kernel answers that from its attribute cache for up to a second after
# the daemon died; statfs always asks the daemon.)
is_stale() {
    local err
    if err=$(stat -f -- "$1" 2>&1 >/dev/null); then
        return 1
    fi
    # ECONNABORTED, ECANCELED: a request caught in flight as the connection
    # died (over io_uring, a request queued on a ring).
    case $err in *"Transport endpoint is not connected"* | *"Software caused connection abort"* | *"Operation canceled"*) return 0 ;; esac
    return 1
}

# detach MOUNTPOINT: lazily unmounts it (gone from the namespace at once,
# released when its last user lets go): umount -l as root, else
# fusermount3 -u -z.
detach() {
    if [ "$(id -u)" -eq 0 ]; then
        umount -l -- "$1"
    else
        fusermount3 -u -z -- "$1"
    fi
}

# wait_gone PID: waits for PID to exit for as long as it makes progress,
# and returns 1 once it has made none for TIMEOUT seconds: no second in
# which it used a tenth of a CPU or gave memory back. An exiting daemon
# does both (it wipes and frees its queue, which takes longer on a busy
# machine); a stuck one does neither.
wait_gone() {
    local last=$SECONDS tenth=$(($(getconf CLK_TCK) / 10)) polls=0 cpu rss was_cpu='' was_rss=''
    while is_alive "$1"; do
        if [ $((polls % 20)) -eq 0 ]; then
            # utime + stime (fields 14 and 15) and rss (24) of /proc/PID/stat.
            read -r cpu rss < <(awk '{ sub(/^.*\) /, ""); print $12 + $13, $22 }' "/proc/$1/stat" 2>/dev/null) || return 0
            if [ -z "$was_cpu" ] || [ $((cpu - was_cpu)) -ge "$tenth" ] || [ "$rss" -lt "$was_rss" ]; then
                last=$SECONDS
            elif [ $((SECONDS - last)) -ge "$TIMEOUT" ]; then
                return 1
            fi
            was_cpu=$cpu was_rss=$rss
        fi
        polls=$((polls + 1))
        sleep 0.05
    done
}
