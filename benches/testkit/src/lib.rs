//! The one place where Tern's tests, benches and programs get a model: by its catalog name,
//! pulled into the model cache on first use (verified by SHA-256), never from a path left on
//! a machine by hand. The test command points the cache at a new, empty directory for each
//! run (`scripts/test.sh`), so a test passes only if it can fetch what it reads.

pub mod heap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The default model, SmolLM2-135M-Instruct Q4_1.
pub const SMOLLM2: &str = "smollm2-135m";

/// The path of the known model `name` in the cache, pulled on first use. Tests of one binary
/// run on several threads: one pull per model and process, the others wait for it.
///
/// Panics with the catalog's error when the model cannot be had (a test cannot run without
/// it, and saying why is all it can do).
pub fn model(name: &str) -> PathBuf {
    static PULLED: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut pulled = PULLED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = pulled.get(name) {
        return path.clone();
    }
    assert!(
        tern::catalog::known_model(name).is_some(),
        "{name} is not a catalog model: tests read models by catalog name only"
    );
    let path = tern_cli::fetch::resolve_model(name)
        .unwrap_or_else(|e| panic!("model {name} (pulled into {}): {e}", cache_note()));
    pulled.insert(name.to_string(), path.clone());
    path
}

/// SmolLM2-135M-Instruct Q4_1, the default model.
pub fn smollm2() -> PathBuf {
    model(SMOLLM2)
}

fn cache_note() -> String {
    tern::catalog::cache_dir().display().to_string()
}

/// Natural English prose present on every Debian machine: the GNU GPL, version 3.
pub fn natural_text() -> String {
    std::fs::read_to_string("/usr/share/common-licenses/GPL-3").expect("GPL-3 text present")
}

/// Natural-log softmax of a row of logits, in f64: what the parity tests compare (KL
/// divergence, perplexity) between Tern and llama.cpp.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// Stops a child process with SIGTERM, so that it can clean up (`tern serve` removes its
/// temporary session files), then SIGKILL if it is still there after ten seconds.
pub fn stop_gracefully(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
