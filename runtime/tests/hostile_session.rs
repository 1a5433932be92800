//! Hostile session files and session sizes (issue 12): a file with a valid checksum is
//! trusted for integrity, never for its sizes, and a session never outgrows the memory guard.

mod common;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tern::cache::{CacheConfig, CacheError};
use tern::model::{Model, ModelError};
use tern::session::{Session, SessionError, SessionOptions};
use tern::snapshot::SnapshotError;

fn model() -> Arc<Model> {
    Arc::new(Model::load(common::smollm2()).unwrap())
}

fn small_opts() -> SessionOptions {
    SessionOptions {
        cache: CacheConfig {
            sinks: 4,
            window: 60,
            ..CacheConfig::default()
        },
        system: None,
        ..SessionOptions::default()
    }
}

/// The host's board with a memory budget of the model plus `kv_rows` tokens of f16 cache.
fn board_with_room_for(m: &Model, kv_rows: u64) -> tern_boards::Board {
    let mut b = tern_boards::select(None).unwrap();
    let c = m.llama().config();
    let per_token = 2 * c.n_layer as u64 * tern::cache::KvType::F16.row_bytes(c.kv_dim()) as u64;
    b.settings.memory_budget.value = m.llama().file().file_size() + kv_rows * per_token;
    b
}

/// A saved session's file, and where its payload starts (after magic, version and length).
fn saved(m: &Arc<Model>, dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let s = Session::new(m.clone(), small_opts()).unwrap();
    let f = dir.join("s.tern");
    s.save(&f).unwrap();
    let bytes = std::fs::read(&f).unwrap();
    (f, bytes)
}

/// Rewrites `bytes` at payload offset `at` and seals the file with a valid checksum again.
fn forge(bytes: &[u8], at: usize, value: &[u8], path: &std::path::Path) {
    let mut b = bytes.to_vec();
    let payload = 20..b.len() - 32;
    b[payload.start + at..payload.start + at + value.len()].copy_from_slice(value);
    let digest = Sha256::digest(&b[payload.clone()]);
    let n = b.len();
    b[n - 32..].copy_from_slice(&digest);
    std::fs::write(path, b).unwrap();
}

// Payload offsets (snapshot.rs): fingerprint 32 bytes, then the cache's sinks, window and
// evict chunk (u64 each), its KV type (u8), then temperature (f32), top_k (u64), top_p and
// min_p (f32).
const SINKS: usize = 32;
const WINDOW: usize = 40;
const TEMPERATURE: usize = 57;
const TOP_P: usize = 69;
const MIN_P: usize = 73;

/// Defect 1: a valid checksum over a window of 2²⁶…2⁵⁰ (sinks 2³⁰) aborted on allocation.
#[test]
fn restored_huge_cache_is_an_error_not_an_abort() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = saved(&m, dir.path());
    let board = board_with_room_for(&m, 4096);
    for (sinks, window) in [(4u64, 1u64 << 26), (1 << 30, 1 << 40), (4, 1 << 50)] {
        let f = dir.path().join(format!("huge-{window}.tern"));
        forge(&bytes, SINKS, &sinks.to_le_bytes(), &f);
        forge(
            &std::fs::read(&f).unwrap(),
            WINDOW,
            &window.to_le_bytes(),
            &f,
        );
        match Session::restore_within(m.clone(), &f, &board) {
            Err(SessionError::Memory(e)) => {
                assert!(e.to_string().contains("memory budget"), "{e}")
            }
            Err(e) => panic!("window {window}: wrong error {e}"),
            Ok(_) => panic!("window {window}: restored"),
        }
    }
    // Without a board the sizes are still checked: 2⁵⁰ rows cannot be allocated.
    let f = dir.path().join("huge-1125899906842624.tern");
    assert!(matches!(
        Session::restore(m.clone(), &f),
        Err(SessionError::Cache(CacheError::TooLarge { .. }))
            | Err(SessionError::Model(ModelError::Cache(
                CacheError::TooLarge { .. }
            )))
    ));
}

/// Defect 2: a window of 2⁶⁴−54 wrapped into a 10-row ring claiming a huge capacity, and
/// sampler settings from the file (NaN temperature, top-p −5, min-p 2) were taken as given.
#[test]
fn restored_sizes_that_wrap_and_bad_sampler_settings_are_refused() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = saved(&m, dir.path());
    let f = dir.path().join("wrap.tern");
    forge(&bytes, WINDOW, &(u64::MAX - 53).to_le_bytes(), &f);
    match Session::restore(m.clone(), &f) {
        Err(SessionError::Cache(CacheError::TooLarge { .. })) => {}
        Err(e) => panic!("wrong error {e}"),
        Ok(s) => panic!("restored a cache of capacity {}", s.stats().cache_capacity),
    }
    for (at, value, name) in [
        (TEMPERATURE, f32::NAN, "temperature"),
        (TOP_P, -5.0, "top_p"),
        (MIN_P, 2.0, "min_p"),
    ] {
        forge(&bytes, at, &value.to_le_bytes(), &f);
        match Session::restore(m.clone(), &f) {
            Err(SessionError::Snapshot(e @ SnapshotError::Invalid { .. })) => {
                assert!(e.to_string().contains(name), "{e}")
            }
            Err(e) => panic!("{name}: wrong error {e}"),
            Ok(_) => panic!("{name} = {value} restored"),
        }
    }
    // The untouched file still restores.
    std::fs::write(&f, &bytes).unwrap();
    Session::restore(m.clone(), &f).unwrap();
}

/// Defect 4: pinned system prompt tokens became sinks after the guard had approved the cache.
#[test]
fn pinned_system_prompt_larger_than_the_budget_is_an_error() {
    let m = model();
    // Room for 1 200 tokens of cache: sinks 4 + window 60 + batch 64 fit; ~3 000 pinned
    // system tokens do not.
    let board = board_with_room_for(&m, 1200);
    let mut opts = small_opts();
    opts.system = Some("The quick brown fox jumps over the lazy dog. ".repeat(300));
    match Session::new_within(m.clone(), opts.clone(), &board) {
        Err(SessionError::Memory(e)) => assert!(e.to_string().contains("sinks"), "{e}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(s) => panic!("a cache of {} tokens passed", s.stats().cache_capacity),
    }
    // A short system prompt fits the same board.
    opts.system = Some("Be brief.".into());
    Session::new_within(m, opts, &board).unwrap();
}

/// Defect 8: session files were read whole before any check (`/load /dev/zero` grew without
/// bound). Devices are refused, and a declared length is checked before the payload is read.
#[test]
fn session_files_are_checked_from_a_bounded_header() {
    let m = model();
    let board = board_with_room_for(&m, 4096);
    let zero = std::path::Path::new("/dev/zero");
    if zero.exists() {
        assert!(matches!(
            Session::restore(m.clone(), zero),
            Err(SessionError::Snapshot(SnapshotError::NotAFile(_)))
        ));
    }
    // A sparse 64 GiB file with a valid header: refused by its declared size, unread.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.tern");
    let len: u64 = 64 << 30;
    let mut head = b"TERNSESS".to_vec();
    head.extend_from_slice(&2u32.to_le_bytes());
    head.extend_from_slice(&len.to_le_bytes());
    std::fs::write(&f, &head).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(20 + len + 32)
        .unwrap();
    let t0 = std::time::Instant::now();
    assert!(matches!(
        Session::restore_within(m.clone(), &f, &board),
        Err(SessionError::Snapshot(SnapshotError::TooLarge { .. }))
    ));
    assert!(t0.elapsed().as_secs() < 5, "{:?}", t0.elapsed());
    // A declared length the file does not hold is corrupt, also unread.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert!(matches!(
        Session::restore(m, &f),
        Err(SessionError::Snapshot(SnapshotError::Corrupt(_)))
    ));
}
