#!/usr/bin/env bash
# The README's run command: builds Tern, fetches the default model on first use, and streams
# an answer. Extra arguments go to `tern run` (e.g. -p "your prompt").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q -p tern
if [ $# -eq 0 ]; then
  set -- -p "<|im_start|>user
What makes a tern a good long-distance flyer?<|im_end|>
<|im_start|>assistant
" -n 200
fi
exec target/release/tern run "$@"
