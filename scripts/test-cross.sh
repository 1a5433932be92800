#!/usr/bin/env bash
# Tern on the CPUs it is for, from this x86-64 host:
#  - the whole test suite for aarch64 under qemu-user as a Cortex-A72 (NEON only, Raspberry
#    Pi 4 class), and as qemu's `max` CPU (dotprod and i8mm) the kernels and the end-to-end
#    checks below, so that every aarch64 kernel set is checked against the scalar reference
#    and the runtime runs on each. The llama.cpp oracle is built for the host only; the
#    tests that compare with it run there.
#  - greedy replies of SmolLM2, Qwen2.5-Coder-0.5B and Gemma 3 recorded on the host and
#    compared under both CPUs (runtime/tests/greedy.rs: equal text, or a divergence at a
#    near-tie of the top two), and the logits of the synthetic architectures
#    (runtime/tests/synthetic_arch.rs: llama.cpp on the host, the host's logits under qemu).
#  - as a Neoverse-N1 (dotprod without i8mm) and as `max` (i8mm), a model whose weights are
#    repacked at load (runtime/tests/repack.rs: the same logits as in the map, resident
#    memory ≤ file + 5 %).
#  - `cargo check` for 32-bit ARM (armv7, a Pi with a 32-bit OS) and Android arm64.
# Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, gcc-arm-linux-gnueabihf,
# libc6-dev-armhf-cross and qemu-user (scripts/setup.sh test installs them); linkers and the
# qemu runner are set in .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-linux-android
# The libraries and libtern; the `tern` binary's crate (tern-cli) is tested too, except for
# Android, where only the libraries matter (an app embeds libtern).
libs=(-p tern -p tern-kernels -p tern-boards -p tern-ffi)
crates=("${libs[@]}" -p tern-cli)
reference="$PWD/target/host-reference"
rm -rf "$reference" && mkdir -p "$reference"

echo "== greedy replies and synthetic-architecture logits recorded on the host"
TERN_GREEDY_RECORD="$reference" TERN_SYNTHETIC_RECORD="$reference" \
    cargo test --release -p tern --test greedy --test synthetic_arch -- --nocapture

# As a Cortex-A72 (NEON), the whole suite; as `max` (dotprod, i8mm), what depends on the
# CPU's features: every kernel set against the reference, and the end-to-end greedy replies
# and synthetic-architecture logits against the host's (the rest of the suite runs the same
# code on both, and twice would cost a quarter of an hour).
aarch64_test() {
    local cpu=$1
    shift
    # Tests that start the `tern` binary go through the emulator too (no binfmt here).
    QEMU_CPU=$cpu TERN_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
        TERN_GREEDY_REFERENCE="$reference" TERN_SYNTHETIC_REFERENCE="$reference" \
        cargo test --release --no-fail-fast --target aarch64-unknown-linux-gnu "$@" -- --nocapture
}
echo "== cargo test aarch64 (QEMU_CPU=cortex-a72)"
aarch64_test cortex-a72 "${crates[@]}"
echo "== cargo test aarch64 (QEMU_CPU=max): kernels, greedy replies, synthetic architectures"
aarch64_test max -p tern-kernels
aarch64_test max -p tern --test greedy --test synthetic_arch
# As a Neoverse-N1 (a Cortex-A76: dotprod without i8mm, Pi 5 class) and as `max` (i8mm), whose
# sets repack Q4_0, Q8_0, Q4_K and Q6_K matrices at load (decode by `sdot`, prefill by `sdot`
# or `smmla`): a model's logits repacked and in the map, and its resident memory (the kernels
# themselves are checked under `max`, which runs every set).
echo "== cargo test aarch64 (QEMU_CPU=neoverse-n1, max): repacked weights"
aarch64_test neoverse-n1 -p tern --test repack
aarch64_test max -p tern --test repack

echo "== cargo check armv7-unknown-linux-gnueabihf"
cargo check --release --target armv7-unknown-linux-gnueabihf "${crates[@]}" --all-targets

echo "== cargo check aarch64-linux-android"
# The libraries carry no C dependencies (the downloader's TLS lives in tern-cli), so no
# Android C compiler is needed.
cargo check --release --target aarch64-linux-android "${libs[@]}"
