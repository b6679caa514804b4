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

# The threads that matter, as patterns of their names: the generators, the
# threads reading /dev/fuse (all of the FUSE file's over /dev/fuse, one for
# stray requests over io_uring) and, when the daemon serves over io_uring
# (its serving line, which may follow the mount, says so), the ring threads
# of each queue. Each must match a thread, or the rows it stands for would
# silently be missing.
for _ in $(seq 100); do
    grep -q '] serving: ' "$tmp/daemon.log" && break
    sleep 0.1
done
grep -q '] serving: ' "$tmp/daemon.log" || { echo "threads.sh: the daemon logged no serving line:" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
expected=('generator-*' 'fuse-[0-9]*')
if grep -q '] serving: FUSE .*(io_uring, ' "$tmp/daemon.log"; then expected+=('fuse-ring-*'); fi

# Whether thread name $1 matches one of the patterns.
expected_thread() {
    local pattern
    for pattern in "${expected[@]}"; do
        # shellcheck disable=SC2053 # $pattern is a glob on purpose
        [[ $1 == $pattern ]] && return 0
    done
    return 1
}
names=$(cat /proc/"$daemon"/task/*/comm)
for pattern in "${expected[@]}"; do
    found=0
    while read -r name; do
        # shellcheck disable=SC2053 # $pattern is a glob on purpose
        [[ $name == $pattern ]] && found=1
    done <<<"$names"
    [ $found = 1 ] || {
        echo "threads.sh: no thread of the daemon is named $pattern; its threads: $(tr "\n" " " <<<"$names")" >&2
        exit 1
    }
done

# "name run_ns wait_ns involuntary_switches" for those threads.
threads() {
    local t name
    for t in /proc/"$daemon"/task/*; do
        name=$(cat "$t/comm")
        expected_thread "$name" &&
            echo "$name $(cut -d' ' -f1-2 "$t/schedstat") $(awk '/^nonvoluntary/ { print $2 }' "$t/status")"
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
        '{ printf "  %-13s ran %3.0f %%  waited for a CPU %3.0f %%  preempted %5d times\n", $1, ($5 - $2) / w * 100, ($6 - $3) / w * 100, $7 - $4 }' \
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
