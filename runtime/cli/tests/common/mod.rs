//! Shared by the integration tests of the `tern` binary: the models and texts they run on,
//! and the command that starts the binary.
#![allow(dead_code)]

use std::process::Command;

#[allow(unused_imports)]
pub use tern_testkit::{model, natural_text, smollm2};

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
