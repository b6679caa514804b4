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
    rows+=("$iface|rngtest: FIPS 140-2, 2000 blocks|$ok passed, $bad failed (about 1.6 failures expected by chance)")

    echo "$iface: ent" >&2
    head -c $((64 << 20)) "$src" >"$tmp/sample"
    ent_out=$(ent -t "$tmp/sample" | tail -1)
    IFS=, read -r _ _ entropy chisq chip mean pi_est serial <<<"$ent_out"
    rows+=("$iface|ent: 64 MiB|entropy $entropy bits/byte, chi-square $chisq (p = $chip), mean $mean, pi $pi_est, serial correlation $serial")
    rm -f "$tmp/sample"

    for t in "${dieharder_tests[@]}"; do
        echo "$iface: dieharder -d $t" >&2
        while read -r line; do
            name=$(awk -F'|' '{ gsub(/ /, "", $1); print $1 }' <<<"$line")
            ntup=$(awk -F'|' '{ gsub(/ /, "", $2); print $2 }' <<<"$line")
            p=$(awk -F'|' '{ gsub(/ /, "", $5); print $5 }' <<<"$line")
            verdict=$(awk -F'|' '{ gsub(/ /, "", $6); print $6 }' <<<"$line")
            rows+=("$iface|dieharder $name (ntup $ntup)|$verdict (p = $p)")
        done < <(dieharder -g 200 -d "$t" <"$src" 2>/dev/null | grep -E 'PASSED|WEAK|FAILED')
    done
done

header="interface|test|result"
print_table "$header" "${rows[@]}"
if [ -n "$markdown" ]; then
    write_markdown "$markdown" \
        "Measured $(date -u +%Y-%m-%d) on Linux $(uname -r) by \`benches/quality.sh${serve_opts[*]:+ -- ${serve_opts[*]}}\`." \
        "$header" "${rows[@]}"
fi
