#!/usr/bin/env bash
# The Python package `tern` (ffi/python): formatting and lints of its Rust crate (it is not a
# member of the workspace: a PyO3 extension module cannot link test binaries), then in a
# virtual environment under target/: `pip install ./ffi/python`, pytest (the README's
# examples, bad input, Ctrl-C, `python -m tern chat` against `tern chat`, decode speed
# against the CLI), and the aarch64 wheel, cross-built with Debian's aarch64 gcc, whose size
# it prints. Needs python3-venv and gcc-aarch64-linux-gnu (scripts/setup.sh test).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
root=$PWD
# The extension shares the workspace's target directory, so the runtime it links is the one
# the rest of the suite already compiled.
export CARGO_TARGET_DIR="$root/target"
manifest=ffi/python/Cargo.toml

echo "== ffi/python: cargo fmt --check, clippy -D warnings"
cargo fmt --manifest-path "$manifest" -- --check
cargo clippy --release --manifest-path "$manifest" --all-targets -- -D warnings

venv="$root/target/python-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "maturin>=1.5,<2" "pytest>=7"

echo "== pip install ./ffi/python (${SECONDS}s)"
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./ffi/python
# The CLI, the truth of the chat-parity and speed tests.
cargo build --release -p tern-cli --bin tern
export TERN_CLI="$root/target/release/tern"

echo "== pytest ffi/python/tests (${SECONDS}s)"
# From another directory, so that `import tern` is the installed package.
(cd "$root/target" && "$venv/bin/python" -m pytest -q -rs "$root/ffi/python/tests" -s)

echo "== aarch64 wheel (${SECONDS}s)"
rustup target add aarch64-unknown-linux-gnu
rm -rf "$root/target/wheels-aarch64"
PATH="$venv/bin:$PATH" maturin build --release --target aarch64-unknown-linux-gnu \
    -m "$manifest" --out "$root/target/wheels-aarch64"
wheel=$(ls "$root"/target/wheels-aarch64/tern-*aarch64.whl 2>/dev/null | head -1 || true)
[ -n "$wheel" ] || { echo "no aarch64 wheel was built" >&2; exit 1; }
# The extension inside must be an aarch64 ELF.
"$venv/bin/python" - "$wheel" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
so = [n for n in z.namelist() if n.endswith(".so")]
elf = z.read(so[0])
assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183, "not aarch64"
print(f"aarch64 wheel: {sys.argv[1]}: {sum(i.compress_size for i in z.infolist())} bytes "
      f"compressed; {so[0]} is an aarch64 ELF of {len(elf)} bytes")
PY
ls -l "$wheel"
echo "== python package passed in ${SECONDS}s"
