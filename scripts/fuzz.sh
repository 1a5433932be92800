#!/usr/bin/env bash
# On-demand fuzzing (issue 12; not part of scripts/test.sh): the coverage-guided targets in
# fuzz/ under libFuzzer with cargo-fuzz (installed here if missing) and the nightly toolchain.
#
#   scripts/fuzz.sh                     every target, 10 million executions each
#   TERN_FUZZ_RUNS=-1 TERN_FUZZ_SECONDS=60 scripts/fuzz.sh tokenizer   60 s of one target
#   TERN_FUZZ_SANITIZER=none scripts/fuzz.sh tokenizer   without AddressSanitizer, then the
#                                                         corpus replayed once under it
#
# AddressSanitizer (the default) finds memory errors in the unsafe code (the map, the
# kernels, the C ABI) where they happen, at a third or more of the speed. Without it, a run
# still catches every panic, abort, leak of memory past -rss_limit_mb and hang; the corpus
# it leaves (one input per new edge) is then run once under AddressSanitizer, so each
# behaviour the run reached is also checked for memory errors.
#
# Corpora grow in fuzz/corpus/TARGET, crashes land in fuzz/artifacts/TARGET, and each run's
# log in fuzz/logs/TARGET.log; the summary prints executions, time, edges covered and corpus
# size per target.
# Every crash found becomes a regression test in the crate it belongs to.
#
# Rates on 2026-11-30, a 2-core machine shared with other builds (load 10 to 16, short runs
# at nice 10; README, "Hostile input"): gguf_load about 1 000/s from its seeded corpus,
# session_restore 3 000-3 600/s, tokenizer 2 500/s, chat_template 250-400/s, c_abi 37-39/s
# (a whole session per execution). 10 million executions take from about an hour
# (session_restore, tokenizer) to days (c_abi) of such a share of a core.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOME/.cache} # the model, pulled by tern-testkit

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

runs=${TERN_FUZZ_RUNS:-10000000}
sanitizer=${TERN_FUZZ_SANITIZER:-address}
# `fuzz_run SANITIZER TARGET ARGS…`: cargo fuzz run in fuzz/. Each sanitizer builds in a
# target directory of its own: switching rebuilds nothing.
fuzz_run() {
    local san=$1
    shift
    (cd fuzz && cargo +nightly fuzz run --release --sanitizer "$san" \
        --target-dir "target/sanitizer-$san" "$@")
}
seconds=${TERN_FUZZ_SECONDS:-0}
targets=("$@")
# Fastest first (the rates above).
[ ${#targets[@]} -gt 0 ] || targets=(session_restore tokenizer gguf_load chat_template c_abi)
# Longest input per target: 64 KiB where length is what is tested (the GGUF reader's sizes
# against the file, the tokenizer's long runs, a session file's payload); the C ABI target's
# fields are each a length byte and at most 255 bytes, so 8 KiB holds every field whole; a
# chat template's limits are reached by its loops, not its length.
max_len() {
    case $1 in
    chat_template) echo 4096 ;;
    c_abi) echo 8192 ;;
    *) echo 65536 ;;
    esac
}

mkdir -p fuzz/logs
# The targets' files (the tiny model, session files) in memory, removed when done.
shm=/dev/shm
[ -d $shm ] || shm=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$shm/tern-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TERN_FUZZ_SCRATCH=$scratch
# gguf_load starts from a valid model: the tiny one (32 KB) the session targets write, taken
# from a one-input run of session_restore. From nothing, the fuzzer stayed in the header's
# bytes (900 edges after 3 million executions); seeded, it reached the model checks and the
# tokenizer's loading (5 300 edges within seconds).
if [[ " ${targets[*]} " == *" gguf_load "* ]] &&
    [ ! -e fuzz/corpus/gguf_load/seed-tiny-model.gguf ]; then
    fuzz_run "$sanitizer" session_restore -- -runs=1 >fuzz/logs/seed.log 2>&1
    mkdir -p fuzz/corpus/gguf_load
    cp "$(ls "$scratch"/tern-fuzz-tiny-*.gguf | head -1)" fuzz/corpus/gguf_load/seed-tiny-model.gguf
fi
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    status=ok
    started=$(date -u +%FT%TZ)
    # session_restore and chat_template write their own seeds (a real session file, a real
    # template over messages) until their corpus has one.
    seed_to=
    if [[ $t == session_restore || $t == chat_template ]] &&
        ! ls "fuzz/corpus/$t" | grep -q '^seed-'; then
        seed_to=$PWD/fuzz/corpus/$t
    fi
    limits=(-max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=30)
    TERN_FUZZ_SEED_TO=$seed_to fuzz_run "$sanitizer" "$t" "corpus/$t" -- -runs="$runs" \
        -max_total_time="$seconds" "${limits[@]}" -print_final_stats=1 \
        >"fuzz/logs/$t.log" 2>&1 || status=FAILED
    # A run stopped by Ctrl-C (or SIGINT) prints its figures too; it is not a find.
    grep -q 'libFuzzer: run interrupted' "fuzz/logs/$t.log" && status=interrupted
    replay=
    if [[ $sanitizer != address && $status != FAILED ]]; then
        # -runs=0: every corpus input once, then stop.
        if fuzz_run address "$t" "corpus/$t" -- -runs=0 "${limits[@]}" \
            >"fuzz/logs/$t.replay.log" 2>&1; then
            replay=", corpus replayed under AddressSanitizer: ok"
        else
            replay=", corpus replayed under AddressSanitizer: FAILED (fuzz/logs/$t.replay.log)"
            status=FAILED
        fi
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/logs/$t.log" | tail -1 |
        grep -o '[0-9]*$' || echo "?")
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "fuzz/logs/$t.log" | tail -1 |
        grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo "?")
    edges=$(grep -o 'cov: [0-9]*' "fuzz/logs/$t.log" | tail -1 | grep -o '[0-9]*$' || echo "?")
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    summary+=("$t: $status, $execs executions, ${secs}s (from $started, sanitizer $sanitizer),\
 $edges edges, corpus $corpus files$replay")
done
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q FAILED
