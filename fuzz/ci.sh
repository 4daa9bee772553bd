#!/usr/bin/env bash
# Fuzzing in CI: replays every committed input on stable, then runs every
# cargo-fuzz target for a bounded time on nightly. Fails on any crash, and
# says which inputs to look at. See fuzz/README.md.
#
#   bash fuzz/ci.sh                      # every target, 50 s each
#   FUZZ_SECONDS=600 bash fuzz/ci.sh     # longer
#   bash fuzz/ci.sh server client        # some targets only
#
# Environment: FUZZ_SECONDS (per target, default 50), FUZZ_TOOLCHAIN (default
# nightly), FUZZ_WORK (where new corpus entries go, default a temporary
# directory: the committed corpus/ is only read).
set -uo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-50}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(decode_frame roundtrip server client)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 1
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "error: the $toolchain toolchain is missing; cargo fuzz needs it (rustup toolchain install $toolchain)" >&2
    exit 1
fi

echo "== replaying corpus/ and regressions/ on stable (cargo test in fuzz/)"
# RUSTFLAGS from the environment would replace .cargo/config.toml's, so
# say --cfg fuzzing here too.
if ! RUSTFLAGS="${RUSTFLAGS:-} --cfg fuzzing" cargo test --quiet; then
    echo "FAILED: a committed input no longer passes its target (see the test output above)" >&2
    exit 1
fi

work="${FUZZ_WORK:-$(mktemp -d -t rmmap-fuzz.XXXXXX)}"
failed=()
summary=()
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds}s"
    mkdir -p "$work/$t"
    log="$work/$t.log"
    # New inputs go to $work/$t; corpus/$t (the committed seeds) is only read.
    # -timeout: one input taking 10 s is a finding (a loop), not patience.
    cargo "+$toolchain" fuzz run --sanitizer none --debug-assertions "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    status=$?
    runs=$(grep -Eo '^Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1)
    if [ $status -ne 0 ]; then
        failed+=("$t")
        summary+=("$t: FAILED (exit $status)")
        grep -E -A1 "panicked at" "$log" | head -6
        grep -E "ERROR: libFuzzer|Test unit written" "$log" | head -4
        echo "   full log: $log"
        echo "   reproduce: cd fuzz && cargo +$toolchain fuzz run --sanitizer none --debug-assertions $t artifacts/$t/<file>"
    else
        summary+=("$t: ${runs:-?} executions, no finding")
    fi
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]} (crash inputs under fuzz/artifacts/; minimize with cargo fuzz tmin, then add to fuzz/regressions/<target>/)" >&2
    exit 1
fi
