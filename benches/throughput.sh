#!/usr/bin/env bash
# Throughput and latency of pilfered next to /dev/urandom, measured in one run.
#
#   benches/throughput.sh [--rounds N] [--markdown FILE] [-- SERVE-OPTIONS...]
#
# Builds the release binary, starts `pilfered serve` on temporary paths and,
# for N rounds (default 3), alternates each pilfered measurement with the
# same `dd` reading /dev/urandom, then prints the median MB/s of each and
# their ratio. It also measures 4 KiB read latency on the FUSE file while two
# other readers drain the file and the FIFO, the daemon's CPU use over 5 idle
# seconds, and its peak RSS. As a yardstick for 4 KiB reads it also reads a
# null FUSE server (benches/nullfs.rs) mounted the same way. With --markdown
# FILE it also writes the table, with the machine it ran on, as Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
markdown=""
serve_opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --markdown) markdown="$2"; shift 2 ;;
        --) shift; serve_opts=("$@"); break ;;
        *) echo "throughput.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

cargo build --release --quiet --bin pilfered --example readlat --example nullfs
readlat=target/release/examples/readlat

. benches/lib.sh
start_daemon "${serve_opts[@]}"

# The yardstick: a null FUSE server, mounted and opened like pilfered's file,
# whose reads return zeros at once.
mkdir "$tmp/null"
target/release/examples/nullfs "$tmp/null" &
for _ in $(seq 100); do [ -r "$tmp/null/bits" ] && break; sleep 0.1; done

# MB/s (10^6 bytes per second) of one dd run: dd_mbs PATH BLOCK TOTAL_BYTES
dd_mbs() {
    LC_ALL=C dd if="$1" of=/dev/null bs="$2" count=$(($3 / $2)) iflag=fullblock 2>&1 |
        awk '/copied/ { printf "%.0f\n", $1 / $(NF-3) / 1e6 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# name  path  block  bytes
cases=(
    "FIFO, 64 KiB reads|$fifo|65536|$((2 << 30))"
    "FUSE, 1 MiB reads|$mnt/bits|1048576|$((2 << 30))"
    "FUSE, 128 KiB reads|$mnt/bits|131072|$((2 << 30))"
    "FUSE, 4 KiB reads|$mnt/bits|4096|$((512 << 20))"
    "null FUSE server, 4 KiB reads (reference)|$tmp/null/bits|4096|$((512 << 20))"
)
declare -A ours theirs
for r in $(seq "$rounds"); do
    for c in "${cases[@]}"; do
        IFS='|' read -r name path block bytes <<<"$c"
        ours[$name]+="$(dd_mbs "$path" "$block" "$bytes") "
        theirs[$name]+="$(dd_mbs /dev/urandom "$block" "$bytes") "
        echo "round $r: $name done" >&2
    done
done

# Latency of 4 KiB reads while the file and the FIFO are drained.
dd if="$mnt/bits" of=/dev/null bs=1M 2>/dev/null & drainers=($!)
dd if="$fifo" of=/dev/null bs=64K 2>/dev/null & drainers+=($!)
sleep 1
read -r p50 p99 max < <("$readlat" "$mnt/bits" 4096 50000)
kill "${drainers[@]}"
wait "${drainers[@]}" 2>/dev/null || true

# CPU over 5 idle seconds (after the queue has refilled), and peak RSS.
sleep 2
ticks() { awk '{ print $14 + $15 }' "/proc/$daemon/stat"; }
t0=$(ticks); sleep 5; t1=$(ticks)
hz=$(getconf CLK_TCK)
idle_cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.2f", d / hz / 5 * 100 }')
rss_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$daemon/status")
rss_mib=$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')

target() {
    case "$1" in
        "FIFO, 64 KiB reads") echo 2.5 ;;
        "FUSE, 1 MiB reads") echo 2.0 ;;
        "FUSE, 128 KiB reads") echo 1.8 ;;
        "FUSE, 4 KiB reads") echo 0.7 ;;
        *) echo 0 ;;
    esac
}
yes_no() { awk -v c="$1" 'BEGIN { print (c ? "yes" : "no") }'; }

rows=()
for c in "${cases[@]}"; do
    IFS='|' read -r name _ <<<"$c"
    a=$(tr ' ' '\n' <<<"${ours[$name]}" | grep . | median)
    b=$(tr ' ' '\n' <<<"${theirs[$name]}" | grep . | median)
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')
    t=$(target "$name")
    if [ "$t" = 0 ]; then
        rows+=("$name|$a MB/s|$b MB/s|${ratio} x|what FUSE allows|")
    else
        rows+=("$name|$a MB/s|$b MB/s|${ratio} x|>= $t x|$(yes_no "$(awk -v r="$ratio" -v t="$t" 'BEGIN { print (r >= t) }')")")
    fi
done
rows+=("4 KiB read latency under load (p50 / p99 / max)|$p50 / $p99 / $max us|||p99 < 2000 us, max < 20000 us|$(yes_no "$(awk -v p="$p99" -v m="$max" 'BEGIN { print (p < 2000 && m < 20000) }')")")
rows+=("CPU while idle (5 s)|$idle_cpu % of a core|||< 1 %|$(yes_no "$(awk -v c="$idle_cpu" 'BEGIN { print (c < 1) }')")")
rows+=("peak RSS|$rss_mib MiB|||< 64 MiB|$(yes_no "$(awk -v r="$rss_mib" 'BEGIN { print (r < 64) }')")")

header="measure|pilfered|/dev/urandom|ratio|target|met"
print_table "$header" "${rows[@]}"
if [ -n "$markdown" ]; then
    write_markdown "$markdown" \
        "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), by \`benches/throughput.sh --rounds $rounds${serve_opts[*]:+ -- ${serve_opts[*]}}\`; medians of $rounds alternating rounds." \
        "$header" "${rows[@]}"
fi
