#!/usr/bin/env bash
# Soak test: tens of GiB through both interfaces with reader churn.
#
#   SOAK_GIB=20 benches/soak.sh [-- SERVE-OPTIONS...]
#
# Starts `pilfered serve` on temporary paths and keeps SOAK_READERS readers
# busy on each interface: each reader runs one `dd` after another, every one
# with a random block size and length, so readers start and stop all the
# time; one more reader per interface opens, reads a few bytes and closes
# in a loop. Every SOAK_INTERVAL seconds it prints the throughput of each
# interface over that interval (from the daemon's exact counters), the
# daemon's RSS and peak RSS. Each reader keeps the output of its first
# `dd`, and of one in four after that, as a sample (SOAK_SAMPLE_MIB per
# interface in all); at the end every sample is checked for any 32-byte
# stretch occurring twice, the daemon is stopped and must exit 0 leaving no
# mount and no FIFO.
#
# Exits 0 only if no stretch repeats, the peak RSS stayed under
# SOAK_MAX_RSS_MIB and the daemon ran and stopped cleanly.
#
# Settings (environment):
#   SOAK_GIB          total to move, both interfaces together (default 20;
#                     fractions allowed)
#   SOAK_READERS      churning readers per interface (default 4)
#   SOAK_INTERVAL     seconds between report lines (default 5)
#   SOAK_SAMPLE_MIB   output kept per interface for the check (default 64)
#   SOAK_MAX_RSS_MIB  peak RSS allowed (default 64)
#   PILFERED          daemon binary (default: cargo build --release)
#   DUPCHECK          checker binary (default: the dupcheck example, built
#                     with cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

gib=${SOAK_GIB:-20}
readers=${SOAK_READERS:-4}
interval=${SOAK_INTERVAL:-5}
sample_mib=${SOAK_SAMPLE_MIB:-64}
max_rss_mib=${SOAK_MAX_RSS_MIB:-64}
serve_opts=()
if [ $# -gt 0 ]; then
    [ "$1" = -- ] || { echo "soak.sh: usage: [SOAK_GIB=N ...] benches/soak.sh [-- SERVE-OPTIONS...]" >&2; exit 2; }
    shift
    serve_opts=("$@")
fi

need_build=()
[ -n "${PILFERED:-}" ] || need_build+=(--bin pilfered)
[ -n "${DUPCHECK:-}" ] || need_build+=(--example dupcheck)
if [ ${#need_build[@]} -gt 0 ]; then
    cargo build --release --quiet "${need_build[@]}"
fi
bin=${PILFERED:-target/release/pilfered}
dupcheck=${DUPCHECK:-target/release/examples/dupcheck}

# %.0f, not %d: mawk's %d stops at 2^31 - 1.
total=$(awk -v g="$gib" 'BEGIN { printf "%.0f", g * 1073741824 }')
[ "$total" -gt 0 ] || { echo "soak.sh: SOAK_GIB=$gib: expected a positive number of GiB" >&2; exit 2; }
per_reader=$((total / 2 / readers))
sample_per_reader=$((sample_mib * 1048576 / readers))

# shellcheck source=benches/lib.sh
. benches/lib.sh
PILFERED=$bin start_daemon "${serve_opts[@]}"
trap 'exit 130' INT TERM HUP

# reader NAME PATH: dd after dd with random block sizes and lengths until
# this reader's share is moved; keeps some of its output as samples.
reader() {
    local name=$1 path=$2 moved=0 sampled=0 n=0 child="" bs count len out
    trap 'kill "$child" 2>/dev/null; exit 0' TERM
    while [ "$moved" -lt "$per_reader" ]; do
        case $((RANDOM % 5)) in
            0) bs=4096 ;;
            1) bs=65536 ;;
            2) bs=131072 ;;
            3) bs=1048576 ;;
            4) bs=$((RANDOM % 8192 + 1)) ;;
        esac
        # 1 to 256 MiB (1 to 8 MiB for odd small blocks, which cost a
        # request each), never past the share.
        if [ "$bs" -ge 4096 ]; then
            count=$(((RANDOM % 256 + 1) * 1048576 / bs + 1))
        else
            count=$(((RANDOM % 8 + 1) * 1048576 / bs + 1))
        fi
        [ $((count * bs)) -le $((per_reader - moved)) ] || count=$(((per_reader - moved + bs - 1) / bs))
        out=/dev/null
        # The first run of each reader, then one in four, keeps a sample:
        # a short soak may be only a run or two per reader.
        if [ "$sampled" -lt "$sample_per_reader" ] && { [ "$n" = 0 ] || [ $((RANDOM % 4)) = 0 ]; }; then
            len=$(((sample_per_reader - sampled) / 2))
            [ "$bs" -ge 4096 ] || [ "$len" -le 1048576 ] || len=1048576
            count=$((len / bs + 1))
            out=$tmp/sample-$name-$n
            sampled=$((sampled + count * bs))
        fi
        dd if="$path" of="$out" bs="$bs" count="$count" iflag=fullblock status=none &
        child=$!
        wait "$child" || { echo "soak.sh: reader $name: dd failed" >&2; exit 1; }
        moved=$((moved + count * bs))
        n=$((n + 1))
    done
}

# nibbler PATH: opens, reads 1 to 4096 bytes and closes, over and over.
nibbler() {
    local child=""
    trap 'kill "$child" 2>/dev/null; exit 0' TERM
    while :; do
        head -c $((RANDOM % 4096 + 1)) -- "$1" >/dev/null &
        child=$!
        wait "$child" || { echo "soak.sh: nibbler on $1 failed" >&2; exit 1; }
    done
}

readers_pids=()
for i in $(seq "$readers"); do
    reader "fuse$i" "$mnt/bits" & readers_pids+=($!)
    reader "fifo$i" "$fifo" & readers_pids+=($!)
done
nibbler "$mnt/bits" & nibblers=($!)
nibbler "$fifo" & nibblers+=($!)

stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$tmp/stats"; }
vm() { awk -v k="$1:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$daemon/status"; }
mib_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? b / s / 1048576 : 0) }'; }
now() { date +%s.%N; }

echo "soak: $gib GiB through FUSE and FIFO, $readers churning readers + 1 nibbler each, report every $interval s"
printf '%8s %12s %12s %10s %10s %10s %8s\n' elapsed "FUSE MiB/s" "FIFO MiB/s" "moved GiB" "RSS MiB" "peak MiB" waits
start=$(now)
last_t=$start
last_fuse=0
last_fifo=0
report() {
    cat "$mnt/stats" >"$tmp/stats"
    local t fuse fifo dt
    t=$(now)
    fuse=$(stat_of bytes_served_fuse)
    fifo=$(stat_of bytes_served_fifo)
    dt=$(awk -v a="$t" -v b="$last_t" 'BEGIN { print a - b }')
    printf '%7.0fs %12s %12s %10.2f %10s %10s %8s\n' \
        "$(awk -v a="$t" -v b="$start" 'BEGIN { print a - b }')" \
        "$(mib_s $((fuse - last_fuse)) "$dt")" "$(mib_s $((fifo - last_fifo)) "$dt")" \
        "$(awk -v b=$((fuse + fifo)) 'BEGIN { print b / 1073741824 }')" \
        "$(vm VmRSS)" "$(vm VmHWM)" "$(stat_of consumer_waits)"
    last_t=$t
    last_fuse=$fuse
    last_fifo=$fifo
}

failed=0
running() {
    local p
    for p in "${readers_pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}
# printf, not print: print would round the time to 6 digits (1.79577e+09).
next=$(awk -v a="$start" -v i="$interval" 'BEGIN { printf "%.3f", a + i }')
while running; do
    kill -0 "$daemon" 2>/dev/null || { echo "soak.sh: the daemon died" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 0.1
    if awk -v a="$(now)" -v b="$next" 'BEGIN { exit !(a >= b) }'; then
        report
        next=$(awk -v a="$next" -v i="$interval" 'BEGIN { printf "%.3f", a + i }')
    fi
done
for p in "${readers_pids[@]}"; do wait "$p" || failed=1; done
for p in "${nibblers[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" || true; done
report
elapsed=$(awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }')
[ "$failed" = 0 ] || { echo "soak.sh: a reader failed" >&2; exit 1; }

peak=$(vm VmHWM)
moved=$(($(stat_of bytes_served_fuse) + $(stat_of bytes_served_fifo)))
printf 'moved %.2f GiB in %.0f s (%s MiB/s), peak RSS %s MiB (limit %s MiB)\n' \
    "$(awk -v b="$moved" 'BEGIN { print b / 1073741824 }')" "$elapsed" "$(mib_s "$moved" "$elapsed")" "$peak" "$max_rss_mib"

shopt -s nullglob
samples=("$tmp"/sample-*)
if [ ${#samples[@]} -eq 0 ]; then
    echo "soak.sh: no samples were taken" >&2
    exit 1
fi
dup_ok=1
"$dupcheck" "${samples[@]}" || dup_ok=0

kill -TERM "$daemon"
status=0
wait "$daemon" || status=$?
daemon=""
clean=1
[ "$status" = 0 ] || { echo "soak.sh: the daemon exited with status $status" >&2; clean=0; }
if grep -qsF " $mnt " /proc/self/mountinfo; then echo "soak.sh: the mount was left behind" >&2; clean=0; fi
[ ! -e "$fifo" ] || { echo "soak.sh: the FIFO was left behind" >&2; clean=0; }

rss_ok=$(awk -v p="$peak" -v m="$max_rss_mib" 'BEGIN { print (p < m) }')
[ "$rss_ok" = 1 ] || echo "soak.sh: peak RSS $peak MiB is over $max_rss_mib MiB" >&2
if [ "$dup_ok" = 1 ] && [ "$clean" = 1 ] && [ "$rss_ok" = 1 ]; then
    echo "soak: PASS"
else
    echo "soak: FAIL"
    exit 1
fi
