#!/usr/bin/env bash
# How long `pilfered serve` takes to be ready, and to be gone after SIGTERM,
# for a few queue capacities.
#
#   benches/startstop.sh [--rounds N] [CAPACITY...]     (default 16M 1G 4G)
#
# Builds the release binary (or measures $PILFERED) and, N times (default 3)
# for each capacity, starts `pilfered serve --queue-capacity CAPACITY` on
# temporary paths and measures
#   - ready: from the start to the daemon's "serving:" line in its log, which
#     it writes once the queue is allocated and both interfaces are up;
#   - stop:  from SIGTERM to the process having exited, once the queue had
#     been full for a moment (its generators stop at capacity), so that the
#     stop wipes and frees a full queue.
# Prints the median of each, in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
caps=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        -*) echo "startstop.sh: unknown argument '$1'" >&2; exit 2 ;;
        *) caps+=("$1"); shift ;;
    esac
done
[ ${#caps[@]} -gt 0 ] || caps=(16M 1G 4G)
[ -n "${PILFERED:-}" ] || cargo build --release --quiet --bin pilfered
bin=${PILFERED:-target/release/pilfered}

tmp=$(mktemp -d /tmp/pilfered-startstop.XXXXXX)
daemon=
cleanup() {
    [ -z "$daemon" ] || kill -KILL "$daemon" 2>/dev/null || true
    awk -v t="$tmp/" 'index($2, t) == 1 { print $2 }' /proc/self/mounts | xargs -r -n1 umount -l
    rm -rf "$tmp"
}
trap cleanup EXIT

now() { date +%s.%N; }

# The median of the numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }'; }

# The queued bytes the daemon reports in its stats file.
queued() {
    awk '$1 == "queue_bytes" { print $2 }' "$tmp/mnt/stats" 2>/dev/null
}

rows=()
for cap in "${caps[@]}"; do
    : >"$tmp/ready" && : >"$tmp/stop"
    for _ in $(seq "$rounds"); do
        rm -f "$tmp/log"
        t0=$(now)
        "$bin" serve --mount "$tmp/mnt" --fifo "$tmp/fifo" --queue-capacity "$cap" 2>"$tmp/log" &
        daemon=$!
        until grep -q "serving:" "$tmp/log" 2>/dev/null; do
            kill -0 "$daemon" 2>/dev/null || { cat "$tmp/log" >&2; exit 1; }
            sleep 0.005
        done
        echo "$(now) - $t0" | bc >>"$tmp/ready"
        # Wait until the queue is full: its generators then sleep.
        want=$(numfmt --from=iec "$cap")
        for _ in $(seq 600); do
            [ "$(queued)" -ge $((want * 9 / 10)) ] 2>/dev/null && break
            sleep 0.1
        done
        t0=$(now)
        kill -TERM "$daemon"
        wait "$daemon" || true
        echo "$(now) - $t0" | bc >>"$tmp/stop"
        daemon=
    done
    rows+=("$cap|$(median <"$tmp/ready")|$(median <"$tmp/stop")")
done

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, Linux $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$bin, median of $rounds rounds"
printf '%s\n' "queue capacity|ready (s)|stop after SIGTERM (s)" "${rows[@]}" | column -t -s '|'
