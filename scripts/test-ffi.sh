#!/usr/bin/env bash
# Tests libtern, the C ABI (ffi/): the committed header is current, the README's C example is
# the one that is built, every C test under ffi/tests passes linked against the shared and
# the static library, one runs under valgrind without errors or leaks, the shared library and
# the example run on aarch64 under qemu (the Android check is in scripts/test-cross.sh).
#
# Installs what it needs if missing: Debian packages through scripts/setup.sh, cbindgen with
# cargo. The model is the default one (`tern pull`), fetched into the cache on first use.
# TERN_FFI_SKIP_CROSS=1 skips the aarch64 step (for quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SECONDS=0
step() { echo "== $* (${SECONDS}s)"; }

CBINDGEN_VERSION=0.29.4
# What Rust's std needs from the system when linking libtern.a on linux-gnu
# (`cargo rustc --crate-type staticlib -- --print native-static-libs`).
NATIVE_LIBS=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -Wall -Wextra -Werror -pedantic
    -Iffi/include -Iffi/tests)

scripts/setup.sh test # valgrind, qemu-user, the aarch64 cross compiler and C library, clang

tmp=$(mktemp -d /tmp/tern-test-ffi-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

step "cargo build libtern (shared and static) and the tern CLI"
cargo build --release -p tern-ffi -p tern-cli
model=$(target/release/tern pull)
echo "model: $model"

step "header: ffi/include/tern.h matches cbindgen's output"
if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    cargo install cbindgen --locked --version "$CBINDGEN_VERSION"
fi
cbindgen --quiet --config ffi/cbindgen.toml --crate tern-ffi --output "$tmp/tern.h"
if ! diff -u ffi/include/tern.h "$tmp/tern.h"; then
    echo "ffi/include/tern.h is stale; regenerate it with:" >&2
    echo "  cbindgen --config ffi/cbindgen.toml --crate tern-ffi --output ffi/include/tern.h" >&2
    exit 1
fi

step "README: its C example is ffi/examples/chat.c"
sed -n '/<!-- example: ffi\/examples\/chat.c -->/,/^```$/p' ffi/README.md | sed '1,2d;$d' \
    >"$tmp/readme-chat.c"
diff -u ffi/examples/chat.c "$tmp/readme-chat.c" || {
    echo "ffi/README.md's example differs from ffi/examples/chat.c" >&2
    exit 1
}

step "compile the C tests against libtern.so and libtern.a"
tests=()
for src in ffi/tests/test_*.c ffi/examples/chat.c; do
    name=$(basename "$src" .c)
    cc "${CFLAGS[@]}" "$src" -o "$tmp/$name.shared" \
        -Ltarget/release -ltern -Wl,-rpath,"$root/target/release" -lpthread
    cc "${CFLAGS[@]}" "$src" -o "$tmp/$name.static" target/release/libtern.a "${NATIVE_LIBS[@]}"
    case $name in test_*) tests+=("$name") ;; esac
done
# ldd's output is captured first: `ldd | grep -q` under pipefail fails at random when grep
# exits before ldd has written everything (SIGPIPE).
shared_deps=$(ldd "$tmp/test_stream.shared")
static_deps=$(ldd "$tmp/test_stream.static")
grep -q "libtern.so" <<<"$shared_deps" || {
    echo "the shared build is not linked to libtern.so" >&2
    exit 1
}
if grep -q "libtern" <<<"$static_deps"; then
    echo "the static build still needs libtern.so" >&2
    exit 1
fi

# Each program run below counts once towards the closing "N passed, M failed" line.
passed=0 failed=0
run() {
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        echo "FAILED: $what" >&2
        failed=$((failed + 1))
    fi
}
for name in "${tests[@]}"; do
    for kind in shared static; do
        step "$name ($kind)"
        run "$name ($kind)" "$tmp/$name.$kind" "$model"
    done
done
step "example chat (static)"
run "example chat" "$tmp/chat.static" "$model" "Say hi." 8

step "valgrind: test_errors (every error path, a streamed reply, save and restore)"
run valgrind valgrind --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite,possible --suppressions=ffi/tests/valgrind.supp \
    --log-file="$tmp/valgrind.log" "$tmp/test_errors.shared" "$model"
grep -E "ERROR SUMMARY|definitely lost|possibly lost|suppressed:" "$tmp/valgrind.log" || true
grep -q "ERROR SUMMARY: 0 errors" "$tmp/valgrind.log" || cat "$tmp/valgrind.log" >&2

if [ "${TERN_FFI_SKIP_CROSS:-0}" != 1 ]; then
    step "aarch64: libtern.so and the example, run under qemu"
    rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1
    # The linker comes from .cargo/config.toml ([target.aarch64-unknown-linux-gnu]).
    grep -q 'linker = "aarch64-linux-gnu-gcc"' .cargo/config.toml || {
        echo ".cargo/config.toml lacks the aarch64 linker setting" >&2
        exit 1
    }
    cargo build --release --target aarch64-unknown-linux-gnu -p tern-ffi
    a64=target/aarch64-unknown-linux-gnu/release
    aarch64-linux-gnu-gcc "${CFLAGS[@]}" ffi/examples/chat.c -o "$tmp/chat.aarch64" \
        -L"$a64" -ltern -Wl,-rpath,"$root/$a64"
    file "$tmp/chat.aarch64" "$a64/libtern.so" | sed "s|$tmp/||"
    run "aarch64 example under qemu" qemu-aarch64 -L /usr/aarch64-linux-gnu \
        "$tmp/chat.aarch64" "$model" "Say hi." 4 >"$tmp/qemu.out"
    echo "aarch64 reply: $(cat "$tmp/qemu.out")"
    run "aarch64 reply is not empty" grep -q '[[:alnum:]]' "$tmp/qemu.out"
fi

step "done"
echo "test-ffi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
