#!/usr/bin/env bash
# Runs every test of Tern: formatting, lints, the whole test suite on the x86-64 host (with
# llama.cpp as the oracle), the kernels and the runtime for aarch64 under qemu (a Raspberry Pi
# 4 class CPU and one with dotprod and i8mm), libtern's C tests, the Python package and `tern
# serve` with the openai package. The README's test
# command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
scripts/setup.sh test

# Every model a test reads is fetched by the test itself (tern-testkit pulls it by catalog
# name): the model cache is a new, empty directory for each run, so a file left anywhere by
# hand can never make the suite pass. TERN_TEST_CACHE names a directory to keep instead
# (e.g. for repeated local runs).
if [ -n "${TERN_TEST_CACHE:-}" ]; then
    export XDG_CACHE_HOME="$TERN_TEST_CACHE"
else
    XDG_CACHE_HOME=$(mktemp -d /tmp/tern-test-cache-XXXXXX)
    export XDG_CACHE_HOME
    trap 'rm -rf "$XDG_CACHE_HOME"' EXIT
fi
echo "== model cache for this run: $XDG_CACHE_HOME/tern/models"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings (${SECONDS}s)"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo test, x86-64 host (${SECONDS}s)"
cargo test --release --workspace --no-fail-fast -- --nocapture
echo "== aarch64 under qemu, armv7 and Android checks (${SECONDS}s)"
scripts/test-cross.sh
echo "== libtern, the C ABI (${SECONDS}s)"
scripts/test-ffi.sh
echo "== the Python package, ffi/python (${SECONDS}s)"
scripts/test-python.sh
echo "== tern serve and the openai package (${SECONDS}s)"
scripts/test-serve.sh
echo "== all tests passed in ${SECONDS}s"
