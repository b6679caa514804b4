#!/usr/bin/env bash
# Throughput and latency of pilfered next to its true ceilings and
# /dev/urandom, over both FUSE transports, all measured in one run.
#
#   benches/throughput.sh [--rounds N] [--avx2] [--enable-uring] [--markdown FILE] [-- SERVE-OPTIONS...]
#
# Builds the release binary and the helpers, starts two `pilfered serve`
# on temporary paths, one serving its FUSE file over io_uring and one over
# /dev/fuse (legacy), and for N rounds (default 3) alternates each pilfered
# measurement with the same `dd` reading its ceiling and /dev/urandom; then
# prints the median MB/s (10^6 bytes per second) of each and the ratios,
# each the median over the rounds of the ratio within a round:
#   - FUSE reads: a null FUSE server (benches/nullfs.rs) per transport,
#     pilfered's own mount, transport and file system answering zeros, so
#     it differs from pilfered only in the bytes;
#   - FIFO reads: a FIFO of the same pipe size as pilfered's, kept full of
#     zeros by benches/zerofifo.rs with vmsplice, so that only the reader
#     copies;
#   - 4 readers of 1 MiB at once (their bytes together per second), against
#     what 1 reader gets in the same round;
#   - and, for the bulk reads, the keystream one generator makes with no
#     queue and no reader (benches/keystream.rs, the daemon's own generator
#     code, built like the daemon measured unless PILFERED is set).
# It also measures 4 KiB read latency on the file while a 1 MiB reader and a
# FIFO reader drain the queue, each daemon's CPU use over 5 idle seconds and
# its peak RSS.
#
#   --avx2          measure a build without chacha20's AVX-512 backend, as
#                   CPUs without AVX-512 run it (built in target/avx2 with
#                   RUSTFLAGS replacing .cargo/config.toml's flags).
#   --enable-uring  turn FUSE over io_uring on for the run if it is off
#                   (/sys/module/fuse/parameters/enable_uring, as root), and
#                   back off at the end; without it, an off switch stops the
#                   script with the command that turns it on.
#   --markdown FILE also write the table, with the machine it ran on.
#   PILFERED=PATH   (environment) measure that binary instead of the build.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
markdown=""
avx2=0
enable_uring=0
serve_opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --avx2) avx2=1; shift ;;
        --enable-uring) enable_uring=1; shift ;;
        --markdown) markdown="$2"; shift 2 ;;
        --) shift; serve_opts=("$@"); break ;;
        *) echo "throughput.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

switch=/sys/module/fuse/parameters/enable_uring
[ -e "$switch" ] || { echo "throughput.sh: $switch is missing: this kernel has no FUSE over io_uring (Linux 6.14+)" >&2; exit 1; }
uring_was=$(cat "$switch")
if [ "$uring_was" != Y ]; then
    if [ $enable_uring = 0 ]; then
        echo "throughput.sh: FUSE over io_uring is off; turn it on with 'echo 1 > $switch' (as root), or pass --enable-uring" >&2
        exit 1
    fi
    echo 1 >"$switch"
    # shellcheck disable=SC2034 # run by lib.sh's exit trap
    on_exit="echo 0 >$switch"
    trap 'eval "$on_exit"' EXIT
fi

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
start_daemon --fuse-transport io-uring "${serve_opts[@]}"
grep -q '(io_uring, ' "$tmp/daemon.log" ||
    { echo "throughput.sh: the daemon does not serve over io_uring:" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
# The daemon's own start-up line names the keystream backend it runs.
backend=$(grep -o 'ChaCha[0-9]* ([^)]*)' "$tmp/daemon.log" | head -1)
build="${PILFERED:-target/release/pilfered}, keystream $backend"
# The same daemon over /dev/fuse.
"${PILFERED:-target/release/pilfered}" serve --mount "$tmp/legacy" --fifo "$tmp/legacy-fifo" --fuse-transport legacy \
    "${serve_opts[@]}" 2>"$tmp/legacy.log" &
legacy_daemon=$!

# The FUSE ceilings: a null server over each transport, mounted and opened
# like pilfered's file.
mkdir "$tmp/null-uring" "$tmp/null-legacy"
# Each logs the daemon's serving line, with the transport in use.
"$ex/nullfs" "$tmp/null-uring" io-uring 2>"$tmp/null-uring.log" &
"$ex/nullfs" "$tmp/null-legacy" legacy 2>"$tmp/null-legacy.log" &
# The FIFO ceiling: a FIFO of pilfered's pipe size, kept full of zeros.
"$ex/zerofifo" "$tmp/zeros" "$fifo" >"$tmp/pipe-size" &
for _ in $(seq 100); do
    [ -r "$tmp/legacy/bits" ] && grep -q 'serving:' "$tmp/null-uring.log" &&
        grep -q 'serving:' "$tmp/null-legacy.log" && [ -s "$tmp/pipe-size" ] && break
    sleep 0.1
done
grep -q 'serving:.*(io_uring' "$tmp/null-uring.log" ||
    { echo "throughput.sh: the null server does not serve over io_uring" >&2; exit 1; }
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
    awk -v b=$((count * $2 * $4)) -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f\n", b / (t1 - t0) / 1e6 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

one_reader="FUSE, 1 MiB reads"
# name | block | bytes (pilfered, its ceilings) | readers. FUSE cases are
# measured over both transports; /dev/urandom reads at most 512 MiB.
cases=(
    "FIFO, 64 KiB reads|65536|$((4 << 30))|1"
    "$one_reader|1048576|$((2 << 30))|1"
    "FUSE, 128 KiB reads|131072|$((2 << 30))|1"
    "FUSE, 4 KiB reads|4096|$((256 << 20))|1"
    "FUSE, 32-byte reads|32|$((4 << 20))|1"
    "FUSE, 1 MiB reads, 4 readers together|1048576|$((4 << 30))|4"
)
declare -A uring legacy null_uring null_legacy urandom
keystream=""
for r in $(seq "$rounds"); do
    # What one generator makes with no queue and no reader: the most bulk
    # reads can get from one.
    keystream+="$("$keystream_ex") "
    for c in "${cases[@]}"; do
        IFS='|' read -r name block bytes readers <<<"$c"
        u_bytes=$((bytes < (512 << 20) ? bytes : (512 << 20)))
        if [[ $name == FIFO* ]]; then
            uring[$name]+="$(mbs "$fifo" "$block" "$bytes" "$readers") "
            null_uring[$name]+="$(mbs "$tmp/zeros" "$block" "$bytes" "$readers") "
        else
            uring[$name]+="$(mbs "$mnt/bits" "$block" "$bytes" "$readers") "
            null_uring[$name]+="$(mbs "$tmp/null-uring/bits" "$block" "$bytes" "$readers") "
            legacy[$name]+="$(mbs "$tmp/legacy/bits" "$block" "$bytes" "$readers") "
            null_legacy[$name]+="$(mbs "$tmp/null-legacy/bits" "$block" "$bytes" "$readers") "
        fi
        urandom[$name]+="$(mbs /dev/urandom "$block" "$u_bytes" "$readers") "
        echo "round $r: $name done" >&2
    done
done

# Latency of 4 KiB reads on DIR/bits while a 1 MiB reader drains it and a
# reader drains FIFO: latency DIR FIFO prints "p50 p99 max" in us.
latency() {
    local drainers
    dd if="$1/bits" of=/dev/null bs=1M 2>/dev/null & drainers=($!)
    dd if="$2" of=/dev/null bs=64K 2>/dev/null & drainers+=($!)
    sleep 1
    "$ex/readlat" "$1/bits" 4096 50000
    kill "${drainers[@]}"
    wait "${drainers[@]}" 2>/dev/null || true
}
read -r p50 p99 max < <(latency "$mnt" "$fifo")
read -r lp50 lp99 lmax < <(latency "$tmp/legacy" "$tmp/legacy-fifo")

# CPU over 5 idle seconds (after the queues have refilled), and peak RSS.
sleep 2
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
t0=$(ticks "$daemon"); l0=$(ticks "$legacy_daemon"); sleep 5
t1=$(ticks "$daemon"); l1=$(ticks "$legacy_daemon")
hz=$(getconf CLK_TCK)
cpu() { awk -v d=$(($2 - $1)) -v hz="$hz" 'BEGIN { printf "%.2f", d / hz / 5 * 100 }'; }
idle_cpu=$(cpu "$t0" "$t1")
legacy_idle_cpu=$(cpu "$l0" "$l1")
rss() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
rss_mib=$(rss "$daemon")
legacy_rss_mib=$(rss "$legacy_daemon")
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
times() { awk -v r="$1" 'BEGIN { printf "%.2f", r }'; }
mbs_of() { [ -n "$1" ] && echo "$(med "$1") MB/s"; }

rows=("keystream of one generator, no I/O|$(med "$keystream") MB/s|||||||||")
for c in "${cases[@]}"; do
    IFS='|' read -r name _ _ _ <<<"$c"
    of_null=$(paired "${uring[$name]}" "${null_uring[$name]}")
    x_urandom=$(times "$(paired "${uring[$name]}" "${urandom[$name]}")")
    x_legacy=""
    [ -n "${legacy[$name]:-}" ] && x_legacy=$(times "$(paired "${uring[$name]}" "${legacy[$name]}")")
    case $name in
        FIFO*)
            t=">= 5 x urandom"; met=$(yes_no "$x_urandom >= 5") ;;
        "FUSE, 4 KiB reads")
            t=">= 1 x urandom, >= 90 % of null io_uring"
            met=$(yes_no "$x_urandom >= 1 && $of_null >= 0.90") ;;
        "FUSE, 32-byte reads")
            t=">= 2 x legacy"; met=$(yes_no "$x_legacy >= 2") ;;
        *"4 readers"*)
            of_one=$(paired "${uring[$name]}" "${uring[$one_reader]}")
            t=">= 1 reader (here $(percent "$of_one") %)"
            met=$(yes_no "$of_one >= 1") ;;
        *)
            t=">= 5 x urandom, >= 0.97 x legacy"
            met=$(yes_no "$x_urandom >= 5 && $x_legacy >= 0.97") ;;
    esac
    null_name="null FUSE, io_uring"
    [[ $name == FIFO* ]] && null_name="pipe of zeros, $pipe_kib KiB"
    rows+=("$name|$(mbs_of "${uring[$name]}")|$(mbs_of "${legacy[$name]:-}")|$(mbs_of "${null_uring[$name]}") ($null_name)|$(mbs_of "${null_legacy[$name]:-}")|$(mbs_of "${urandom[$name]}")|$(percent "$of_null") %|$x_urandom x|${x_legacy:+$x_legacy x}|$t|$met")
done
rows+=("4 KiB read latency under load (p50 / p99 / max)|$p50 / $p99 / $max us|$lp50 / $lp99 / $lmax us|||||||p99 < 1000 us|$(yes_no "$p99 < 1000")")
rows+=("CPU while idle (5 s)|$idle_cpu % of a core|$legacy_idle_cpu % of a core|||||||< 1 %|$(yes_no "$idle_cpu < 1 && $legacy_idle_cpu < 1")")
rows+=("peak RSS|$rss_mib MiB|$legacy_rss_mib MiB|||||||< 64 MiB|$(yes_no "$rss_mib < 64 && $legacy_rss_mib < 64")")

header="measure|pilfered, io_uring|pilfered, /dev/fuse|ceiling, io_uring|null FUSE, /dev/fuse|/dev/urandom|of ceiling|x urandom|x /dev/fuse|target|met"
command="benches/throughput.sh --rounds $rounds"
[ $avx2 = 1 ] && command+=" --avx2"
[ $enable_uring = 1 ] && command+=" --enable-uring"
command+="${serve_opts[*]:+ -- ${serve_opts[*]}}"
intro="Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), by \`$command\`; $build; medians of $rounds alternating rounds, ratios the medians of the ratios within each round; load average $load_start at the start, $load_end at the end."
echo "$intro"
print_table "$header" "${rows[@]}"
if [ -n "$markdown" ]; then
    write_markdown "$markdown" "$intro" "$header" "${rows[@]}"
fi
