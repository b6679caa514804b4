#!/usr/bin/env bash
# Statistical quality of pilfered's output through both interfaces.
#
#   benches/quality.sh [--markdown FILE] [-- SERVE-OPTIONS...]
#
# Builds the release binary, starts `pilfered serve` on temporary paths, and
# runs on each interface: rngtest (FIPS 140-2, 2,000 blocks of 20,000 bits),
# ent (64 MiB), and a quick dieharder selection reading the stream directly.
# Prints a summary table; with --markdown FILE also writes it as Markdown.
# Needs the Debian packages rng-tools5, ent and dieharder.
set -euo pipefail
cd "$(dirname "$0")/.."

markdown=""
serve_opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --markdown) markdown="$2"; shift 2 ;;
        --) shift; serve_opts=("$@"); break ;;
        *) echo "quality.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
for tool in rngtest ent dieharder; do
    command -v "$tool" >/dev/null || {
        echo "quality.sh: $tool is missing; install it with: apt-get install rng-tools5 ent dieharder" >&2
        exit 1
    }
done

cargo build --release --quiet --bin pilfered
. benches/lib.sh
start_daemon "${serve_opts[@]}"

# Diehard birthdays, 32x32 rank, bitstream, count-the-ones, parking lot,
# runs, craps; STS monobit, runs and serial; RGB bit distribution.
dieharder_tests=(0 2 4 8 10 15 16 100 101 102 200)

rows=()
for iface in FUSE FIFO; do
    src="$mnt/bits"; [ "$iface" = FIFO ] && src="$fifo"
    echo "$iface: rngtest" >&2
    rng=$(head -c $((2000 * 2500 + 2500)) "$src" | rngtest -c 2000 2>&1 || true)
    ok=$(awk -F': ' '/FIPS 140-2 successes/ { print $3 }' <<<"$rng")
    bad=$(awk -F': ' '/FIPS 140-2 failures/ { print $3 }' <<<"$rng")
    rows+=("$iface|rngtest: FIPS 140-2, 2000 blocks|$ok passed, $bad failed (a perfect generator fails about 1.6)")

    echo "$iface: ent" >&2
    head -c $((64 << 20)) "$src" >"$tmp/sample"
    ent_out=$(ent "$tmp/sample" | tr '\n' ' ')
    rm -f "$tmp/sample"
    rows+=("$iface|ent: 64 MiB|$(awk '{
        for (i = 1; i <= NF; i++) {
            if ($i == "Entropy") entropy = $(i + 2)
            if ($i == "exceed") chip = $(i + 3)
            if ($i == "Arithmetic") mean = $(i + 7)
            if ($i == "Pi") { pi = $(i + 2); pierr = $(i + 4) }
            if ($i == "Serial") serial = $(i + 4)
        }
        printf "entropy %s bits/byte; chi-square exceeded %s%% of the time; mean %s; pi %s (error %s%%); serial correlation %s",
            entropy, chip, mean, pi, pierr, serial
    }' <<<"$ent_out")")

    # Each dieharder test gives one or more p-values; WEAK means outside
    # [0.005, 0.995], which about 1 in 100 p-values of a perfect generator
    # is, FAILED outside [0.000001, 0.999999].
    : >"$tmp/dieharder"
    for t in "${dieharder_tests[@]}"; do
        echo "$iface: dieharder -d $t" >&2
        dieharder -g 200 -d "$t" <"$src" 2>/dev/null | grep -E 'PASSED|WEAK|FAILED' >>"$tmp/dieharder" || true
    done
    rows+=("$iface|dieharder: ${#dieharder_tests[@]} tests|$(awk -F'|' '{
        gsub(/ /, ""); n++; count[$6]++
        if ($6 != "PASSED") odd = odd sprintf("%s%s ntup %s p = %s", (odd ? ", " : ""), $1, $2, $5)
    } END {
        printf "%d p-values: %d passed, %d weak, %d failed%s", n, count["PASSED"], count["WEAK"], count["FAILED"], (odd ? " (" odd ")" : "")
    }' "$tmp/dieharder")")
done

header="interface|test|result"
print_table "$header" "${rows[@]}"
if [ -n "$markdown" ]; then
    write_markdown "$markdown" \
        "Measured $(date -u +%Y-%m-%d) on Linux $(uname -r) by \`benches/quality.sh${serve_opts[*]:+ -- ${serve_opts[*]}}\`." \
        "$header" "${rows[@]}"
fi
