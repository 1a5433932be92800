//! Tern's next-token distributions against llama.cpp's, teacher-forced over natural text.
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::Arc;
use tern::cache::CacheConfig;

use tern::model::Model;
use tern::session::{Session, DEFAULT_BATCH};
use tern_oracle::llama::OracleModel;

const N_TOKENS: usize = 600;

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

#[test]
fn smollm2_q4_1_logits_match_llama_cpp() {
    let path = common::smollm2();
    let model = Arc::new(Model::load(&path).unwrap());
    let tok = model.tokenizer();
    let text = common::natural_text();
    let mut tokens = tok.encode(&text, true, false).unwrap();
    tokens.truncate(N_TOKENS);
    assert_eq!(tokens.len(), N_TOKENS);
    let n_vocab = model.llama().config().n_vocab;

    let mut session = Session::for_scoring(model.clone(), CacheConfig::dense(N_TOKENS)).unwrap();
    let mut ours = Vec::with_capacity(N_TOKENS * n_vocab);
    for batch in tokens.chunks(DEFAULT_BATCH) {
        ours.extend_from_slice(session.feed_all_logits(batch).unwrap());
    }

    let mut oracle = OracleModel::load(&path, N_TOKENS, 2).unwrap();
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let theirs = oracle.logits_for(&ids).unwrap();
    assert_eq!(theirs.len(), N_TOKENS);

    let (mut agree, mut kl_sum, mut kl_max, mut max_abs) = (0usize, 0.0f64, 0.0f64, 0.0f32);
    for (pos, (a, b)) in ours.chunks_exact(n_vocab).zip(&theirs).enumerate() {
        assert_eq!(b.len(), n_vocab, "position {pos}");
        if argmax(a) == argmax(b) {
            agree += 1;
        }
        let (la, lb) = (log_softmax(a), log_softmax(b));
        // KL(llama.cpp ‖ Tern)
        let kl: f64 = lb.iter().zip(&la).map(|(&q, &p)| q.exp() * (q - p)).sum();
        kl_sum += kl;
        kl_max = kl_max.max(kl);
        for (x, y) in a.iter().zip(b) {
            max_abs = max_abs.max((x - y).abs());
        }
    }
    let top1 = agree as f64 / N_TOKENS as f64;
    let kl_mean = kl_sum / N_TOKENS as f64;
    println!(
        "logits parity, SmolLM2-135M Q4_1, {N_TOKENS} positions: top-1 agreement {:.2} %, \
         mean KL {kl_mean:.6}, max KL {kl_max:.6}, max |Δlogit| {max_abs:.4}",
        top1 * 100.0
    );
    assert!(top1 >= 0.99, "top-1 agreement {top1}");
    assert!(kl_mean <= 0.005, "mean KL {kl_mean}");
}
