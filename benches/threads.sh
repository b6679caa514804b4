#!/usr/bin/env bash
# One reader against four, and where the daemon's CPU time goes meanwhile.
#
#   benches/threads.sh [--rounds N] [-- SERVE-OPTIONS...]
#
# Builds the release binary, starts `pilfered serve` on temporary paths and,
# for N rounds (default 9), reads 2 GiB from the file with 1 `dd` of 1 MiB
# reads, then 2 GiB with 4 such `dd`s at once (timed alike: bytes over the
# wall time), and prints each pair and the median of the paired ratios
# 4 readers / 1 reader: the machine's noise moves both runs of a pair
# together far more than it moves their ratio.
#
# For the last round it also prints, per generator and FUSE thread, the
# share of the wall time it ran and waited runnable for a CPU (from
# /proc/PID/task/TID/schedstat) and its involuntary context switches
# (preemptions), for 1 and for 4 readers.
#
#   PILFERED=PATH   (environment) measure that binary instead of the build.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=9
serve_opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --) shift; serve_opts=("$@"); break ;;
        *) echo "threads.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

[ -n "${PILFERED:-}" ] || cargo build --release --quiet --bin pilfered
. benches/lib.sh
start_daemon "${serve_opts[@]}"
bytes=$((2 << 30))

# "name run_ns wait_ns involuntary_switches" for the threads that matter.
threads() {
    local t
    for t in /proc/"$daemon"/task/*; do
        case $(cat "$t/comm") in
            generator-* | fuser-*)
                echo "$(cat "$t/comm") $(cut -d' ' -f1-2 "$t/schedstat") $(awk '/^nonvoluntary/ { print $2 }' "$t/status")" ;;
        esac
    done | sort
}

# readers N: MB/s of N readers of 1 MiB sharing $bytes; leaves the thread
# figures for that run in $tmp/threads-N.
readers() {
    local n=$1 count=$((bytes / $1 >> 20)) t0 t1 pids=() before
    before=$(threads)
    t0=$(date +%s%N)
    for _ in $(seq "$n"); do
        dd if="$mnt/bits" of=/dev/null bs=1M count="$count" iflag=fullblock 2>/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s%N)
    join <(echo "$before") <(threads) | awk -v w=$((t1 - t0)) \
        '{ printf "  %-12s ran %3.0f %%  waited for a CPU %3.0f %%  preempted %5d times\n", $1, ($5 - $2) / w * 100, ($6 - $3) / w * 100, $7 - $4 }' \
        >"$tmp/threads-$n"
    awk -v b=$((count * n << 20)) -v w=$((t1 - t0)) 'BEGIN { printf "%.0f\n", b / w * 1000 }'
}

echo "round  1 reader  4 readers  ratio"
for r in $(seq "$rounds"); do
    one=$(readers 1)
    four=$(readers 4)
    ratio=$(awk -v a="$four" -v b="$one" 'BEGIN { printf "%.3f", a / b }')
    echo "$ratio" >>"$tmp/ratios"
    printf '%5d  %8s  %9s  %5s\n' "$r" "$one MB/s" "$four MB/s" "$ratio"
done
median=$(sort -n "$tmp/ratios" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
range=$(sort -n "$tmp/ratios" | awk 'NR == 1 { lo = $1 } END { print lo " to " $1 }')
echo "4 readers / 1 reader: median $median ($range) over $rounds rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "last round, 1 reader:"
cat "$tmp/threads-1"
echo "last round, 4 readers:"
cat "$tmp/threads-4"
