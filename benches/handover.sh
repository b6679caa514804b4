#!/usr/bin/env bash
# The longest read stall across each kind of handover, over both FUSE
# transports, all measured in one run.
#
#   benches/handover.sh [--handovers N] [--enable-uring] [--markdown FILE]
#
# Builds the release binary and benches/stall.rs, which for each transport
# runs N (default 5) handovers of each kind on a daemon of its own: `serve
# --replace`; a restart under a stand-in for systemd (SIGUSR1, the unit's
# RestartKillSignal, then a start given the stored connection); and a crash
# (SIGKILL) whose stand-in manager starts the next daemon at once. Three
# readers hold one open each all along: `bits` in 4 KiB and in 64-byte
# reads, the FIFO in 64 KiB reads. For each it prints the longest gap
# between two reads over a quiet second before the handovers (what the
# machine alone costs), the median and the largest over the handovers of
# each handover's longest gap, and the failed reads and stranded readers
# (no read within 5 s of a handover). Targets: under 100 ms for --replace
# and a restart, under 2 s for a crash, with no failed read.
#
#   --enable-uring  turn FUSE over io_uring on for the run if it is off
#                   (as root), and back off at the end.
#   --markdown FILE also write the table, with the machine it ran on.
set -euo pipefail
cd "$(dirname "$0")/.."

handovers=5
markdown=""
enable_uring=0
while [ $# -gt 0 ]; do
    case "$1" in
        --handovers) handovers="$2"; shift 2 ;;
        --enable-uring) enable_uring=1; shift ;;
        --markdown) markdown="$2"; shift 2 ;;
        *) echo "handover.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

switch=/sys/module/fuse/parameters/enable_uring
[ -e "$switch" ] || { echo "handover.sh: $switch is missing: this kernel has no FUSE over io_uring (Linux 6.14+)" >&2; exit 1; }
if [ "$(cat "$switch")" != Y ]; then
    if [ $enable_uring = 0 ]; then
        echo "handover.sh: FUSE over io_uring is off; turn it on with 'echo 1 > $switch' (as root), or pass --enable-uring" >&2
        exit 1
    fi
    echo 1 >"$switch"
    trap 'echo 0 >$switch' EXIT
fi

cargo build --release --quiet --bin pilfered --example stall
. benches/lib.sh
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
results=$(mktemp)
target/release/examples/stall target/release/pilfered "$handovers" io-uring legacy 2>"$results.err" >"$results" ||
    { cat "$results.err" >&2; exit 1; }
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

rows=()
while read -r transport kind reader quiet med max errors stranded; do
    case $kind in
        replace) name="serve --replace"; limit=100 ;;
        restart) name="restart (SIGUSR1, store)"; limit=100 ;;
        crash) name="crash (kill -9, store)"; limit=2000 ;;
    esac
    met=$(awk -v m="$max" -v l="$limit" -v e="$errors" -v s="$stranded" \
        'BEGIN { print (m != "nan" && m < l && e == 0 && s == 0) ? "yes" : "no" }')
    rows+=("$name|$transport|$reader|$quiet ms|$med ms|$max ms|$errors|$stranded|< $limit ms, no error|$met")
done <"$results"
# What the failed reads were.
errors=$(sed -n 's/^stall: a read of .*: //p' "$results.err" | sort | uniq -c | awk '{ $1 = $1 " x"; print }' | paste -sd';' -)
rm -f "$results" "$results.err"

header="handover|transport|reader|longest gap, quiet second|median over handovers|largest|failed reads|stranded|target|met"
command="benches/handover.sh --handovers $handovers"
[ $enable_uring = 1 ] && command+=" --enable-uring"
intro="Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), by \`$command\`; each stall the longest gap between two reads of a held reader from just before a handover until it has read 256 KiB after it; load average $load_start at the start, $load_end at the end. Failed reads: ${errors:-none}."
echo "$intro"
print_table "$header" "${rows[@]}"
if [ -n "$markdown" ]; then
    write_markdown "$markdown" "$intro" "$header" "${rows[@]}"
fi
