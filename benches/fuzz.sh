#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a short time and prints one line per target:
# how many inputs it ran, and whether it found a crash (and where the input was saved).
# Exits 1 when any target found one (2 when the targets do not build).
#
#   benches/fuzz.sh              # 30 s per target
#   benches/fuzz.sh 300          # 5 min per target
#   benches/fuzz.sh 60 conn      # one target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). It runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1, set here (cargo-fuzz uses nightly-only sanitizer flags). Not part of
# `cargo test`: a fuzz run is a search, not a check with a fixed answer.
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written: what libFuzzer
# finds goes to a scratch corpus under fuzz/target/, and crashes to fuzz/artifacts/.

set -euo pipefail

seconds="${1:-30}"
shift || true
targets=("$@")
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

# Built once for all targets; the compiler's output only when it fails.
if ! build="$(cargo fuzz build 2>&1)"; then
    printf '%s\n' "$build" >&2
    exit 2
fi

found=0
for target in "${targets[@]}"; do
    scratch="target/fuzz-corpus/$target"
    log="target/fuzz-logs/$target.log"
    mkdir -p "$scratch" "$(dirname "$log")"
    status=0
    cargo fuzz run "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    # The final stats when the run ends in time; the last progress line (#N) after a crash.
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    if [ -z "$runs" ]; then
        runs="$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#' || true)"
    fi
    crash="$(grep -o 'Test unit written to [^ ]*' "$log" | sed 's/Test unit written to //' || true)"
    if [ "$status" -eq 0 ]; then
        printf '%-12s %12s runs in %ss  no crash\n' "$target" "${runs:-?}" "$seconds"
    else
        found=1
        printf '%-12s %12s runs          CRASH: %s (log: fuzz/%s)\n' \
            "$target" "${runs:-?}" "${crash:-see log}" "$log"
    fi
done
exit "$found"
