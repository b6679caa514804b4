#!/usr/bin/env bash
# Throughput and latency of pilfered next to its true ceilings and
# /dev/urandom, all measured in one run.
#
#   benches/throughput.sh [--rounds N] [--avx2] [--markdown FILE] [-- SERVE-OPTIONS...]
#
# Builds the release binary and the helpers, starts `pilfered serve` on
# temporary paths and, for N rounds (default 3), alternates each pilfered
# measurement with the same `dd` reading its ceiling and /dev/urandom, then
# prints the median MB/s (10^6 bytes per second) of each and the ratios,
# each the median over the rounds of the ratio within a round:
#   - FUSE reads: a null FUSE server (benches/nullfs.rs) mounted with
#     pilfered's own mount configuration and open flags, answering zeros;
#   - FIFO reads: a FIFO of the same pipe size as pilfered's, kept full of
#     zeros by benches/zerofifo.rs with vmsplice, so that only the reader
#     copies;
#   - 4 readers of 1 MiB at once (their bytes together per second), against
#     what 1 reader gets in the same round;
#   - and, for the bulk reads, the keystream one generator makes with no
#     queue and no reader (benches/keystream.rs, the daemon's own generator
#     code, built like the daemon measured unless PILFERED is set).
# It also measures 4 KiB read latency on the file while a 1 MiB reader and a
# FIFO reader drain the queue, the daemon's CPU use over 5 idle seconds and
# its peak RSS.
#
#   --avx2          measure a build without chacha20's AVX-512 backend, as
#                   CPUs without AVX-512 run it (built in target/avx2 with
#                   RUSTFLAGS replacing .cargo/config.toml's flags).
#   --markdown FILE also write the table, with the machine it ran on.
#   PILFERED=PATH   (environment) measure that binary instead of the build.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
markdown=""
avx2=0
serve_opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --avx2) avx2=1; shift ;;
        --markdown) markdown="$2"; shift 2 ;;
        --) shift; serve_opts=("$@"); break ;;
        *) echo "throughput.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

helpers=(--example readlat --example nullfs --example zerofifo --example keystream)
cargo build --release --quiet --bin pilfered "${helpers[@]}"
ex=target/release/examples
keystream_ex=$ex/keystream
if [ $avx2 = 1 ]; then
    # A set RUSTFLAGS replaces the config's `--cfg chacha20_avx512`.
    CARGO_TARGET_DIR=target/avx2 RUSTFLAGS="-C debuginfo=0" \
        cargo build --release --quiet --bin pilfered --example keystream
    export PILFERED=target/avx2/release/pilfered
    keystream_ex=target/avx2/release/examples/keystream
fi
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

. benches/lib.sh
start_daemon "${serve_opts[@]}"
# The daemon's own start-up line names the keystream backend it runs.
backend=$(grep -o 'ChaCha[0-9]* ([^)]*)' "$tmp/daemon.log" | head -1)
build="${PILFERED:-target/release/pilfered}, keystream $backend"

# The FUSE ceiling: a null server mounted and opened like pilfered's file.
mkdir "$tmp/null"
"$ex/nullfs" "$tmp/null" &
# The FIFO ceiling: a FIFO of pilfered's pipe size, kept full of zeros.
"$ex/zerofifo" "$tmp/zeros" "$fifo" >"$tmp/pipe-size" &
for _ in $(seq 100); do
    [ -r "$tmp/null/bits" ] && [ -s "$tmp/pipe-size" ] && break
    sleep 0.1
done
pipe_kib=$(($(cat "$tmp/pipe-size") / 1024))

# MB/s of READERS dd runs at once, their bytes together over the wall time
# from starting the first to the end of the last: mbs PATH BLOCK TOTAL_BYTES
# READERS. One reader is timed the same way, so that 1 and 4 compare.
mbs() {
    local count=$(($3 / $4 / $2)) t0 t1 pids=()
    t0=$(date +%s.%N)
    for _ in $(seq "$4"); do
        dd if="$1" of=/dev/null bs="$2" count="$count" iflag=fullblock 2>/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s.%N)
    awk -v b=$((count * $2 * $4)) -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.0f\n", b / (t1 - t0) / 1e6 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

one_reader="FUSE, 1 MiB reads"
# name | path | ceiling | ceiling path | block | bytes | readers
cases=(
    "FIFO, 64 KiB reads|$fifo|pipe of zeros, $pipe_kib KiB|$tmp/zeros|65536|$((4 << 30))|1"
    "$one_reader|$mnt/bits|null FUSE|$tmp/null/bits|1048576|$((4 << 30))|1"
    "FUSE, 128 KiB reads|$mnt/bits|null FUSE|$tmp/null/bits|131072|$((4 << 30))|1"
    "FUSE, 4 KiB reads|$mnt/bits|null FUSE|$tmp/null/bits|4096|$((512 << 20))|1"
    "FUSE, 1 MiB reads, 4 readers together|$mnt/bits|null FUSE|$tmp/null/bits|1048576|$((4 << 30))|4"
)
declare -A ours ceiling urandom
keystream=""
for r in $(seq "$rounds"); do
    # What one generator makes with no queue and no reader: the most bulk
    # reads can get from one.
    keystream+="$("$keystream_ex") "
    for c in "${cases[@]}"; do
        IFS='|' read -r name path _ cpath block bytes readers <<<"$c"
        ours[$name]+="$(mbs "$path" "$block" "$bytes" "$readers") "
        ceiling[$name]+="$(mbs "$cpath" "$block" "$bytes" "$readers") "
        urandom[$name]+="$(mbs /dev/urandom "$block" "$bytes" "$readers") "
        echo "round $r: $name done" >&2
    done
done

# Latency of 4 KiB reads while the file and the FIFO are drained.
dd if="$mnt/bits" of=/dev/null bs=1M 2>/dev/null & drainers=($!)
dd if="$fifo" of=/dev/null bs=64K 2>/dev/null & drainers+=($!)
sleep 1
read -r p50 p99 max < <("$ex/readlat" "$mnt/bits" 4096 50000)
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
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

med() { tr ' ' '\n' <<<"$1" | grep . | median; }
# paired A B: the median over rounds of A's figure over B's in the same
# round. The machine's load moves both runs of a round together, more than
# it moves their ratio.
paired() {
    paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) |
        awk '{ print $1 / $2 }' | median
}
yes_no() { awk "BEGIN { print (($1) ? \"yes\" : \"no\") }"; }
percent() { awk -v r="$1" 'BEGIN { printf "%.0f", r * 100 }'; }

rows=("keystream of one generator, no I/O|$(med "$keystream") MB/s||||||")
for c in "${cases[@]}"; do
    IFS='|' read -r name _ cname _ _ _ readers <<<"$c"
    of_ceiling=$(paired "${ours[$name]}" "${ceiling[$name]}")
    x_urandom=$(paired "${ours[$name]}" "${urandom[$name]}" | awk '{ printf "%.2f", $1 }')
    case $name in
        "FUSE, 4 KiB reads")
            t=">= 95 % of ceiling"; met=$(yes_no "$of_ceiling >= 0.95") ;;
        *"4 readers"*)
            of_one=$(paired "${ours[$name]}" "${ours[$one_reader]}")
            t=">= 1 reader (here $(percent "$of_one") %)"
            met=$(yes_no "$of_one >= 1") ;;
        *)
            t=">= 5 x urandom"; met=$(yes_no "$x_urandom >= 5") ;;
    esac
    rows+=("$name|$(med "${ours[$name]}") MB/s|$(med "${ceiling[$name]}") MB/s ($cname)|$(percent "$of_ceiling") %|$(med "${urandom[$name]}") MB/s|$x_urandom x|$t|$met")
done
rows+=("4 KiB read latency under load (p50 / p99 / max)|$p50 / $p99 / $max us|||||p99 < 2000 us, max < 20000 us|$(yes_no "$p99 < 2000 && $max < 20000")")
rows+=("CPU while idle (5 s)|$idle_cpu % of a core|||||< 1 %|$(yes_no "$idle_cpu < 1")")
rows+=("peak RSS|$rss_mib MiB|||||< 64 MiB|$(yes_no "$rss_mib < 64")")

header="measure|pilfered|ceiling|of ceiling|/dev/urandom|x urandom|target|met"
command="benches/throughput.sh --rounds $rounds"
[ $avx2 = 1 ] && command+=" --avx2"
command+="${serve_opts[*]:+ -- ${serve_opts[*]}}"
intro="Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), by \`$command\`; $build; medians of $rounds alternating rounds, ratios the medians of the ratios within each round; load average $load_start at the start, $load_end at the end."
echo "$intro"
print_table "$header" "${rows[@]}"
if [ -n "$markdown" ]; then
    write_markdown "$markdown" "$intro" "$header" "${rows[@]}"
fi
