#!/usr/bin/env bash
# Runs every test of Tern: formatting, lints, the whole test suite on the x86-64 host (with
# llama.cpp as the oracle), the kernels and the runtime for aarch64 under qemu (a Raspberry Pi
# 4 class CPU and one with dotprod and i8mm), and libtern's C tests. The README's test
# command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
scripts/setup.sh test

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings (${SECONDS}s)"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo test, x86-64 host (${SECONDS}s)"
cargo test --release --workspace -- --nocapture
echo "== aarch64 under qemu, armv7 and Android checks (${SECONDS}s)"
scripts/test-cross.sh
echo "== libtern, the C ABI (${SECONDS}s)"
scripts/test-ffi.sh
echo "== all tests passed in ${SECONDS}s"
