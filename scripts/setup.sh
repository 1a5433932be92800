#!/usr/bin/env bash
# Installs what Tern's builds and tests need on a fresh Debian machine, and nothing twice.
#   scripts/setup.sh          what the runtime needs (a C compiler for crates with C parts)
#   scripts/setup.sh test     also what the tests need: cmake and libclang for llama.cpp, the
#                             oracle (built by llama-cpp-sys-2 through bindgen); python3 with
#                             jinja2, the reference for chat templates; python3-venv for
#                             the Python package's tests and `tern serve`'s (openai, curl)
#   scripts/setup.sh bench    also what the long experiments need: the KJV text (bible-kjv)
#                             and a font for the plots; llvm-mca (llvm) and the aarch64 C++
#                             headers (g++-aarch64-linux-gnu) for the aarch64 cycle estimates
#                             of `arm-cost`
set -euo pipefail

need=()
have() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
want() { have "$1" || need+=("$1"); }

want gcc
want pkg-config
if [ "${1:-}" = "test" ] || [ "${1:-}" = "bench" ]; then
  want cmake
  want libclang-dev
  want clang
  want g++
  # aarch64 cross builds run under qemu, armv7 ones are checked; the C ABI tests run under
  # valgrind.
  want qemu-user
  want gcc-aarch64-linux-gnu
  want libc6-dev-arm64-cross
  want gcc-arm-linux-gnueabihf
  want libc6-dev-armhf-cross
  want valgrind
  # The Python package is built and tested in a virtual environment (scripts/test-python.sh).
  want python3-venv
  want python3-pip
  # Chat templates are checked against Python's jinja2 (runtime/tests/chat_template.rs).
  want python3
  want python3-jinja2
  # `tern serve` is tested with the official openai package (pip, in the same virtual
  # environment) and with curl (scripts/test-serve.sh).
  want curl
fi
if [ "${1:-}" = "bench" ]; then
  want bible-kjv
  want fonts-dejavu-core
  want llvm
  want g++-aarch64-linux-gnu
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
