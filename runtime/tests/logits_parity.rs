//! Tern's next-token distributions against llama.cpp's, teacher-forced over natural text.
//!
//! SmolLM2-135M in Q4_1 is numerically touchy: llama.cpp with flash attention on and off
//! (two code paths of the same program) already disagree on the top token at ~5 % of the
//! positions of this text. So the test measures that floor in the same run, and asks of Tern:
//! mean KL at most 0.005; top-1 agreement within 3 points of llama.cpp's agreement with
//! itself; and at least 99 % top-1 agreement where llama.cpp's choice is clear (its top two
//! logits at least 1.0 apart).
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::Arc;

use tern::cache::CacheConfig;
use tern::model::Model;
use tern::session::{Session, DEFAULT_BATCH};
use tern_oracle::llama::OracleModel;
use tern_testkit::log_softmax;

const N_TOKENS: usize = 600;
const CLEAR_MARGIN: f32 = 1.0;

/// Index of the largest value, and its margin over the second largest.
fn top2(x: &[f32]) -> (usize, f32) {
    let (mut best, mut second) = (0, f32::NEG_INFINITY);
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            second = x[best];
            best = i;
        } else if i != best && v > second {
            second = v;
        }
    }
    (best, x[best] - second)
}

struct Agreement {
    top1: f64,
    clear_top1: f64,
    clear_positions: usize,
    kl_mean: f64,
    kl_max: f64,
}

/// Compares `ours` against the reference rows `theirs` (KL(theirs ‖ ours)).
fn compare<'a>(ours: impl Iterator<Item = &'a [f32]>, theirs: &[Vec<f32>]) -> Agreement {
    let (mut agree, mut clear, mut clear_agree, mut kl_sum, mut kl_max) = (0, 0, 0, 0.0, 0.0f64);
    let mut n = 0;
    for (a, b) in ours.zip(theirs) {
        n += 1;
        let (ta, _) = top2(a);
        let (tb, margin) = top2(b);
        agree += (ta == tb) as usize;
        if margin >= CLEAR_MARGIN {
            clear += 1;
            clear_agree += (ta == tb) as usize;
        }
        let (la, lb) = (log_softmax(a), log_softmax(b));
        let kl: f64 = lb.iter().zip(&la).map(|(&q, &p)| q.exp() * (q - p)).sum();
        kl_sum += kl;
        kl_max = kl_max.max(kl);
    }
    Agreement {
        top1: agree as f64 / n as f64,
        clear_top1: clear_agree as f64 / clear.max(1) as f64,
        clear_positions: clear,
        kl_mean: kl_sum / n as f64,
        kl_max,
    }
}

fn report(what: &str, a: &Agreement) {
    println!(
        "{what}: top-1 {:.2} %, top-1 where clear {:.2} % ({} positions), mean KL {:.6}, max KL {:.6}",
        a.top1 * 100.0,
        a.clear_top1 * 100.0,
        a.clear_positions,
        a.kl_mean,
        a.kl_max
    );
}

#[test]
fn smollm2_q4_1_logits_match_llama_cpp() {
    let path = common::smollm2();
    let model = Arc::new(Model::load(&path).unwrap());
    let text = common::natural_text();
    let mut tokens = model.tokenizer().encode(&text, true, false).unwrap();
    tokens.truncate(N_TOKENS);
    assert_eq!(tokens.len(), N_TOKENS);
    let n_vocab = model.llama().config().n_vocab;

    let mut session = Session::for_scoring(model.clone(), CacheConfig::dense(N_TOKENS)).unwrap();
    let mut ours = Vec::with_capacity(N_TOKENS * n_vocab);
    for batch in tokens.chunks(DEFAULT_BATCH) {
        ours.extend_from_slice(session.feed_all_logits(batch).unwrap());
    }

    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let llama = |fa| {
        let mut m = OracleModel::load_with(&path, N_TOKENS, 2, fa).unwrap();
        m.logits_for(&ids).unwrap()
    };
    let theirs = llama(None);
    let theirs_other = llama(Some(false));
    let theirs_fa = llama(Some(true));
    assert_eq!(theirs.len(), N_TOKENS);

    let tern = compare(ours.chunks_exact(n_vocab), &theirs);
    let floor = compare(theirs_other.iter().map(|r| &r[..]), &theirs_fa);
    println!("SmolLM2-135M Q4_1, {N_TOKENS} positions of GPL-3 text, teacher-forced:");
    report("  Tern vs llama.cpp (default)", &tern);
    report("  llama.cpp flash-attn off vs on", &floor);

    assert!(tern.kl_mean <= 0.005, "mean KL {}", tern.kl_mean);
    assert!(
        tern.clear_top1 >= 0.99,
        "top-1 where clear {}",
        tern.clear_top1
    );
    assert!(
        tern.top1 >= floor.top1 - 0.03,
        "top-1 {} vs llama.cpp's own {}",
        tern.top1,
        floor.top1
    );
}
