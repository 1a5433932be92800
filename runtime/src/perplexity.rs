//! Perplexity, computed the way llama.cpp's `llama-perplexity` computes it, so the two can be
//! compared number for number.
//!
//! The text is cut into consecutive chunks of `n_ctx` tokens. Each chunk is evaluated from an
//! empty cache (its first token replaced by BOS when the vocabulary adds one), and only its
//! second half is scored: the logits at positions `n_ctx/2 .. n_ctx-1` against the token that
//! follows each. The log-softmax is taken in f64.

use crate::cache::CacheConfig;
use std::sync::Arc;

use crate::model::Model;
use crate::session::{Session, SessionError, DEFAULT_BATCH};

/// The result of a perplexity run.
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// The standard error of `ppl`, estimated as llama-perplexity does.
    pub error: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Chunks evaluated.
    pub chunks: usize,
}

/// Accumulates negative log-likelihoods.
#[derive(Default, Clone, Copy)]
struct Nll {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl Nll {
    fn add_logits(&mut self, logits: &[f32], next: u32) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum_exp: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let logprob = (logits[next as usize] - max) as f64 - sum_exp.ln();
        self.sum -= logprob;
        self.sum_sq += logprob * logprob;
        self.count += 1;
    }

    fn finish(self, chunks: usize) -> Perplexity {
        let n = self.count.max(1) as f64;
        let mean = self.sum / n;
        let ppl = mean.exp();
        let var = self.sum_sq / n - mean * mean;
        let error = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        Perplexity {
            ppl,
            error,
            tokens: self.count,
            chunks,
        }
    }
}

/// Why perplexity cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("the text has {tokens} tokens; at least 2 × ctx = {need} are needed")]
    TooShort { tokens: usize, need: usize },
    #[error("ctx must be an even number of at least 4 tokens (got {0})")]
    BadContext(usize),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Perplexity of `tokens` in chunks of `n_ctx`. `bos` replaces the first token of each chunk
/// when set. `progress` is called after each chunk with (chunks done, chunks in all, the
/// running perplexity).
pub fn perplexity(
    model: &Arc<Model>,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity, PerplexityError> {
    if n_ctx < 4 || !n_ctx.is_multiple_of(2) {
        return Err(PerplexityError::BadContext(n_ctx));
    }
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks < 2 {
        return Err(PerplexityError::TooShort {
            tokens: tokens.len(),
            need: 2 * n_ctx,
        });
    }
    let first = n_ctx / 2;
    let mut session = Session::for_scoring(model.clone(), CacheConfig::dense(n_ctx))?;
    let mut nll = Nll::default();
    let mut chunk_tokens = Vec::with_capacity(n_ctx);
    for c in 0..n_chunks {
        chunk_tokens.clear();
        chunk_tokens.extend_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk_tokens[0] = b;
        }
        session.reset()?;
        let n_vocab = model.llama().config().n_vocab;
        for (b, batch) in chunk_tokens.chunks(DEFAULT_BATCH).enumerate() {
            let logits = session.feed_all_logits(batch)?;
            for (i, row) in logits.chunks_exact(n_vocab).enumerate() {
                let pos = b * DEFAULT_BATCH + i;
                if pos >= first && pos + 1 < n_ctx {
                    // Score against the original text, not the BOS substitute.
                    nll.add_logits(row, tokens[c * n_ctx + pos + 1]);
                }
            }
        }
        progress(c + 1, n_chunks, (nll.sum / nll.count.max(1) as f64).exp());
    }
    Ok(nll.finish(n_chunks))
}

/// How a long text is streamed through one session (the paper's Table 1 baselines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCache {
    /// Every token kept: the cache grows with the text.
    Dense,
    /// A rolling window of `sinks + window` tokens, no sinks: the same memory as `Sinks`.
    Window,
    /// The attention-sink cache: `sinks` first tokens plus a rolling `window`.
    Sinks,
    /// For every token, the last `sinks + window` tokens re-computed from an empty cache.
    Recompute,
}

impl std::str::FromStr for StreamCache {
    type Err = String;
    fn from_str(s: &str) -> Result<StreamCache, String> {
        match s {
            "dense" => Ok(StreamCache::Dense),
            "window" => Ok(StreamCache::Window),
            "sinks" => Ok(StreamCache::Sinks),
            "recompute" => Ok(StreamCache::Recompute),
            _ => Err(format!(
                "unknown cache `{s}` (expected dense, window, sinks or recompute)"
            )),
        }
    }
}

/// Per-token negative log-likelihoods of a text streamed through one session.
#[derive(Clone, Debug)]
pub struct StreamScore {
    /// `nll[i]` is −log p(token i+1 | what the cache holds after token i).
    pub nll: Vec<f64>,
}

impl StreamScore {
    /// exp(mean NLL).
    pub fn ppl(&self) -> f64 {
        (self.nll.iter().sum::<f64>() / self.nll.len().max(1) as f64).exp()
    }
}

fn token_nll(logits: &[f32], next: u32) -> f64 {
    let mut n = Nll::default();
    n.add_logits(logits, next);
    n.sum
}

/// Streams `tokens` through a single session with the given cache and scores every token
/// after the first. `progress` gets (tokens scored, tokens in all).
pub fn stream_perplexity(
    model: &Arc<Model>,
    tokens: &[u32],
    mode: StreamCache,
    sinks: usize,
    window: usize,
    kv_type: crate::cache::KvType,
    mut progress: impl FnMut(usize, usize),
) -> Result<StreamScore, PerplexityError> {
    let n = tokens.len();
    if n < 2 {
        return Err(PerplexityError::TooShort { tokens: n, need: 2 });
    }
    let cfg = match mode {
        StreamCache::Dense => CacheConfig::dense(n),
        StreamCache::Window | StreamCache::Recompute => CacheConfig {
            sinks: 0,
            window: sinks + window,
            ..CacheConfig::default()
        },
        StreamCache::Sinks => CacheConfig {
            sinks,
            window,
            ..CacheConfig::default()
        },
    };
    let cfg = CacheConfig { kv_type, ..cfg };
    let mut session = Session::for_scoring(model.clone(), cfg)?;
    let n_vocab = model.llama().config().n_vocab;
    let mut nll = Vec::with_capacity(n - 1);
    if mode == StreamCache::Recompute {
        let span = sinks + window;
        for i in 1..n {
            session.reset()?;
            session.feed(&tokens[i.saturating_sub(span)..i])?;
            let (logits, _) = session.logits_and_history();
            nll.push(token_nll(logits, tokens[i]));
            if i % 16 == 0 || i + 1 == n {
                progress(i, n - 1);
            }
        }
    } else {
        let mut done = 0;
        for batch in tokens[..n - 1].chunks(DEFAULT_BATCH) {
            let logits = session.feed_all_logits(batch)?;
            for (i, row) in logits.chunks_exact(n_vocab).enumerate() {
                nll.push(token_nll(row, tokens[done + i + 1]));
            }
            done += batch.len();
            progress(done, n - 1);
        }
    }
    Ok(StreamScore { nll })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_vocab_size() {
        let mut nll = Nll::default();
        for t in 0..10 {
            nll.add_logits(&[0.5; 8], t % 8);
        }
        let p = nll.finish(1);
        assert!((p.ppl - 8.0).abs() < 1e-9);
        assert!(p.error < 1e-6);
        assert_eq!(p.tokens, 10);
    }
}
