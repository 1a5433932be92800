#!/usr/bin/env bash
# Runs every test of Tern: formatting, lints, and the whole test suite (with llama.cpp as the
# oracle). The README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo test (x86-64 host)"
cargo test --release --workspace -- --nocapture
