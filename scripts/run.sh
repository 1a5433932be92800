#!/usr/bin/env bash
# The README's run command: builds Tern, fetches the default model on first use, and starts
# a streaming chat. Extra arguments go to `tern chat` (e.g. --system "You are a pirate.").
# When stdin is not a terminal, each line is one user message.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p tern-cli
exec target/release/tern chat "$@"
