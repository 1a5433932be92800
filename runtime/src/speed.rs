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
/// The cache is dense, just large enough: its bytes are [`generation_kv_bytes`].
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

/// The first token after `prompt`, fed from an empty cache: what `tern run` prints first,
/// before the pass that enters the token in the cache (which only the second one waits for).
pub fn first_token(model: &Arc<Model>, prompt: &[u32]) -> Result<u32, SessionError> {
    let mut s = Session::for_scoring(model.clone(), CacheConfig::dense(prompt.len() + 1))?;
    s.feed(prompt)?;
    Ok(s.sample())
}

/// Bytes of the KV cache [`time_generation`] allocates for `tokens` prompt and generated
/// tokens (its room for a batch included).
pub fn generation_kv_bytes(model: &Arc<Model>, tokens: usize) -> Result<u64, SessionError> {
    let s = Session::for_scoring(model.clone(), CacheConfig::dense(tokens + 1))?;
    Ok(s.cache().memory_bytes() as u64)
}

/// Peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), KiB;
/// `None` where the kernel does not say (not Linux).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_grows_with_a_touched_allocation() {
        let Some(before) = peak_rss_kib() else {
            panic!("no VmHWM in /proc/self/status (Linux reports it)");
        };
        // 64 MiB written page by page must be resident at once.
        let mut big = vec![0u8; 64 << 20];
        for page in big.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&big);
        let after = peak_rss_kib().unwrap();
        assert!(
            after >= before.max(64 << 10),
            "{before} KiB, then {after} KiB"
        );
    }
}
