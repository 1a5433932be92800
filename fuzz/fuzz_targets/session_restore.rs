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
use tern::model::Model;
use tern::session::Session;

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

fuzz_target!(|data: &[u8]| {
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
