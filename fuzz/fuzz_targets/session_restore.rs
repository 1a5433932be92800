//! Session restore on fuzzed files. The input is a payload: it is sealed with a valid header
//! and checksum (as an attacker can), so the fuzzer reaches the decoding and the size checks
//! behind the checksum. An error or a session, never a panic or an abort. The model is the
//! fuzz crate's tiny one, loaded once, and its vocabulary of 512 makes a valid logits block
//! 2 KiB, within the fuzzer's reach (SmolLM2's is 192 KiB). The file is written to tmpfs:
//! each execution costs the restore alone.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tern::cache::CacheConfig;
use tern::model::Model;
use tern::session::{Session, SessionOptions};

const SESSION_FORMAT_VERSION: u32 = 2;

fn model() -> &'static (Arc<Model>, tern_boards::Board) {
    static M: OnceLock<(Arc<Model>, tern_boards::Board)> = OnceLock::new();
    M.get_or_init(|| {
        let m = Arc::new(Model::load(tern_fuzz::tiny_model()).expect("the model loads"));
        // A small budget (the model and 16 MiB), so a restored cache stays quick to allocate.
        let mut board = tern_boards::select(None).expect("a board");
        board.settings.memory_budget.value = m.llama().file().file_size() + (16 << 20);
        (m, board)
    })
}

/// With `TERN_FUZZ_SEED_TO` set (scripts/fuzz.sh sets it until the corpus has it), writes
/// there, as `seed-session`, the input of a real session file: a chat on the tiny model with
/// a system prompt, a reply, logits and a cache that has evicted. From nothing, the fuzzer
/// must build each of these a field at a time.
fn seed() {
    let Some(dir) = std::env::var_os("TERN_FUZZ_SEED_TO").filter(|d| !d.is_empty()) else {
        return;
    };
    let (m, board) = model();
    let opts = SessionOptions {
        cache: CacheConfig {
            sinks: 4,
            window: 28,
            ..CacheConfig::default()
        },
        system: Some("You are brief.".into()),
        max_reply: 16,
        ..SessionOptions::default()
    };
    let mut s = Session::new(m.clone(), opts).expect("a session on the tiny model");
    s.chat("Hi there, how are you?", |_| true).expect("a reply");
    let path = tern_fuzz::scratch_dir().join(format!("tern-fuzz-seed-{}.tern", std::process::id()));
    s.save(&path).expect("the session saves");
    Session::restore_within(m.clone(), &path, board).expect("the seed restores");
    let file = std::fs::read(&path).expect("the session file");
    let _ = std::fs::remove_file(&path);
    // The header (20 bytes) and the fingerprint (32) are the target's to add, as the digest.
    let input = &file[20 + 32..file.len() - 32];
    let to = std::path::Path::new(&dir).join("seed-session");
    std::fs::write(to, input).expect("the seed is written");
}

fuzz_target!(init: seed(), |data: &[u8]| {
    let (m, board) = model();
    // The model's fingerprint first, so most inputs pass the "another model" check.
    let mut payload = m.fingerprint().to_vec();
    payload.extend_from_slice(data);
    let mut file = b"TERNSESS".to_vec();
    // The format's version (runtime/src/snapshot.rs `VERSION`): with another, every input
    // stops at the version check (this target wrote 1 while the format was at 2, and reached
    // 108 edges in a minute).
    file.extend_from_slice(&SESSION_FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&payload);
    file.extend_from_slice(&Sha256::digest(&payload));
    let path = tern_fuzz::scratch_dir().join(format!("tern-fuzz-{}.tern", std::process::id()));
    std::fs::write(&path, &file).expect("temp file");
    let _ = Session::restore_within(m.clone(), &path, board);
});
