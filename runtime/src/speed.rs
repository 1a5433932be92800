//! Prefill and decode speed, measured the way the head-to-head measures llama.cpp: a prompt
//! fed as batches from an empty cache, then tokens generated one at a time (greedy).

use std::sync::Arc;
use std::time::Instant;

use crate::cache::CacheConfig;
use crate::model::Model;
use crate::session::{Session, SessionError};

/// Token ids for benchmarks: a fixed pseudo-random sequence from the middle of the
/// vocabulary (no special tokens), the same for every engine measured.
pub fn bench_tokens(n_vocab: usize, n: usize) -> Vec<u32> {
    let (lo, span) = (n_vocab as u64 / 8, n_vocab as u64 * 3 / 4);
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (lo + x % span) as u32
        })
        .collect()
}

/// Seconds to feed `prompt` from an empty cache, and to generate `n` tokens after it.
pub fn time_generation(
    model: &Arc<Model>,
    prompt: &[u32],
    n: usize,
) -> Result<(f64, f64), SessionError> {
    let mut s = Session::for_scoring(model.clone(), CacheConfig::dense(prompt.len() + n + 1))?;
    let t0 = Instant::now();
    s.feed(prompt)?;
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..n {
        let id = s.sample();
        s.feed(&[id])?;
    }
    Ok((prefill, t1.elapsed().as_secs_f64()))
}
