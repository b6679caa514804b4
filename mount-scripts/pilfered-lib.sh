# shellcheck shell=bash
# shellcheck disable=SC2034 # the globals set here are read by the sourcing scripts
# Shared by pilfered-mount, pilfered-umount and mount.fuse.pilfered, which
# source it from the directory they are installed in. Not a program itself.
#
# State kept per mount point, in STATE_DIR (see state_dir below), under the
# mount point's name escaped as `systemd-escape --path` does
# (/mnt/pilfered -> mnt-pilfered):
#   NAME.pid   the daemon's PID, written once it is ready
#   NAME.fifo  its FIFO's path (absent with --no-fifo)
#   NAME.log   its log (stderr), appended to by each start

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

# state_files MOUNTPOINT: sets PIDFILE, FIFOFILE and LOGFILE for the
# (absolute) mount point, in STATE_DIR.
state_files() {
    escape_path "$1"
    PIDFILE=$STATE_DIR/$ESCAPED.pid
    FIFOFILE=$STATE_DIR/$ESCAPED.fifo
    LOGFILE=$STATE_DIR/$ESCAPED.log
}

# is_alive PID: whether the process runs (a zombie does not).
is_alive() {
    local state
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
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
# mount point, from its pidfile or else by looking at every process's
# command line (for daemons started by hand or by systemd); empty if none.
find_daemon() {
    local p
    DAEMON_PID=
    if [ -r "$PIDFILE" ] && read -r p <"$PIDFILE" && serves_mount "$p" "$1"; then
        DAEMON_PID=$p
        return
    fi
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        if [ "$p" != $$ ] && serves_mount "$p" "$1"; then
            DAEMON_PID=$p
            return
        fi
    done
}

# mount_type MOUNTPOINT: prints the file system type of the topmost mount
# at exactly MOUNTPOINT (like fuse.pilfered), or nothing.
mount_type() {
    MP=$1 awk '
        {
            p = $5
            gsub(/\\040/, " ", p); gsub(/\\011/, "\t", p); gsub(/\\012/, "\n", p); gsub(/\\134/, "\\", p)
            if (p == ENVIRON["MP"]) {
                for (i = 6; i < NF; i++) if ($i == "-") { t = $(i + 1); break }
            }
        }
        END { if (t != "") print t }' /proc/self/mountinfo
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

# wait_gone PID: waits up to TIMEOUT seconds for PID to exit.
wait_gone() {
    local deadline=$((SECONDS + TIMEOUT))
    while is_alive "$1"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
