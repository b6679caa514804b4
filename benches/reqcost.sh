#!/usr/bin/env bash
# Where a 4 KiB read over io_uring spends its time: pilfered against the
# null FUSE server (benches/nullfs.rs, the same transport code answering
# with zeros), one after the other in each round.
#
#   benches/reqcost.sh [--rounds N] [--perf]
#
# For each daemon and round it reads 1 GiB of `bits` with `dd bs=4k` and
# prints the MB/s and, per request, the CPU time of the daemon's ring
# threads and of its other threads (the generator), from
# /proc/PID/task/TID/schedstat, and the ring threads' voluntary context
# switches. With --perf it also samples both daemons under `perf record`
# (cpu-clock) and prints where their threads ran. FUSE over io_uring must
# be on (docs/OPERATIONS.md); run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
use_perf=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --perf) use_perf=1; shift ;;
        *) echo "reqcost.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ "$(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null)" = Y ] ||
    { echo "reqcost.sh: FUSE over io_uring is off; turn it on with 'echo 1 > /sys/module/fuse/parameters/enable_uring' (as root)" >&2; exit 1; }
[ $use_perf = 0 ] || command -v perf >/dev/null ||
    { echo "reqcost.sh: --perf needs perf (apt-get install linux-perf)" >&2; exit 1; }

cargo build --release --quiet --bin pilfered --example nullfs
. benches/lib.sh
start_daemon --fuse-transport io-uring --no-fifo
mkdir "$tmp/null"
target/release/examples/nullfs "$tmp/null" io-uring 2>"$tmp/null.log" &
null=$!
for _ in $(seq 100); do grep -q 'serving:' "$tmp/null.log" && break; sleep 0.1; done
if ! grep -q '(io_uring' "$tmp/daemon.log" || ! grep -q '(io_uring' "$tmp/null.log"; then
    echo "reqcost.sh: a daemon does not serve over io_uring" >&2
    cat "$tmp"/*.log >&2
    exit 1
fi

count=262144
# ns PID: the CPU nanoseconds of its ring threads and of its other threads,
# and the ring threads' voluntary context switches.
ns() {
    local ring=0 other=0 switches=0 t
    for t in /proc/"$1"/task/*; do
        local run
        run=$(cut -d' ' -f1 "$t/schedstat")
        case $(cat "$t/comm") in
            fuse-ring*)
                ring=$((ring + run))
                switches=$((switches + $(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status")))
                ;;
            *) other=$((other + run)) ;;
        esac
    done
    echo "$ring $other $switches"
}
echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), by \`benches/reqcost.sh --rounds $rounds\`; $count reads of 4 KiB each; load average $(cut -d' ' -f1-3 /proc/loadavg) at the start."
rows=("round|daemon|MB/s|ring threads, us per read|other threads, us per read|ring thread sleeps per read")
for round in $(seq "$rounds"); do
    for who in pilfered null; do
        if [ $who = pilfered ]; then pid=$daemon; file=$mnt/bits; else pid=$null; file=$tmp/null/bits; fi
        read -r r0 o0 s0 < <(ns "$pid")
        mbs=$(dd if="$file" of=/dev/null bs=4k count=$count 2>&1 | awk '/copied/ { print $(NF-1) }')
        read -r r1 o1 s1 < <(ns "$pid")
        rows+=("$round|$who|$mbs|$(awk -v a="$r0" -v b="$r1" -v n=$count 'BEGIN { printf "%.2f", (b - a) / n / 1000 }')|$(awk -v a="$o0" -v b="$o1" -v n=$count 'BEGIN { printf "%.2f", (b - a) / n / 1000 }')|$(awk -v a="$s0" -v b="$s1" -v n=$count 'BEGIN { printf "%.2f", (b - a) / n }')")
    done
done
print_table "${rows[@]}"
if [ $use_perf = 1 ]; then
    for who in pilfered null; do
        if [ $who = pilfered ]; then pid=$daemon; file=$mnt/bits; else pid=$null; file=$tmp/null/bits; fi
        dd if="$file" of=/dev/null bs=4k count=$count 2>/dev/null &
        reader=$!
        perf record -q -e cpu-clock -F 4999 -o "$tmp/$who.perf" -p "$pid" -- sleep 2 2>/dev/null
        wait "$reader"
        echo "== $who: samples by thread and object, then the ring threads' top symbols"
        perf report -i "$tmp/$who.perf" --no-children --sort comm,dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
        perf report -i "$tmp/$who.perf" --no-children --sort sym --stdio \
            --comms "$(cat /proc/"$pid"/task/*/comm | grep fuse-ring | paste -sd,)" \
            2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
    done
fi
