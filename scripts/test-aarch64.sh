#!/usr/bin/env bash
# Runs tern-kernels' tests for aarch64 under qemu-user, twice: as a Cortex-A72 (NEON only,
# Raspberry Pi 4 class) and as qemu's `max` CPU (dotprod and i8mm), so that every aarch64
# kernel set is checked against the scalar reference. The tests print which sets ran.
# Needs the Debian packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user
# (scripts/setup.sh installs them); the linker and runner are set in .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add aarch64-unknown-linux-gnu
for cpu in cortex-a72 max; do
    echo "== cargo test aarch64 (QEMU_CPU=$cpu)"
    QEMU_CPU=$cpu cargo test --release --target aarch64-unknown-linux-gnu -p tern-kernels \
        -- --nocapture
done
