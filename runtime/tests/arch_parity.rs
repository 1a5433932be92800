//! The real models of the other architectures (Qwen2.5-Coder 0.5B and 1.5B, `qwen2`; Gemma 3
//! 270M, `gemma3`) against llama.cpp on the same files: tokenization of mixed text,
//! teacher-forced next-token distributions, and perplexity as llama-perplexity computes it.
//!
//! The default tests are short enough for the test command (a few hundred positions, two
//! perplexity chunks). The full figures come from the `#[ignore]` tests:
//! `cargo test --release -p tern --test arch_parity -- --ignored --nocapture --test-threads 1`
//! (or one of them by name, e.g. `full_logits_gemma`).
#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern::cache::CacheConfig;
use tern::model::Model;
use tern::session::{Session, DEFAULT_BATCH};
use tern_oracle::llama::OracleModel;
use tern_testkit::log_softmax;

const QWEN_05B: &str = "qwen2.5-coder-0.5b";
const QWEN_15B: &str = "qwen2.5-coder-1.5b";
const GEMMA: &str = "gemma3-270m";

/// Threads for llama.cpp (the machine running the tests is shared).
const THREADS: usize = 2;

/// Mixed text: English prose (the GPL), this crate's Rust sources, and prose in other
/// scripts, numbers and emoji.
fn mixed_texts() -> Vec<String> {
    let mut texts = vec![tern_testkit::natural_text()];
    let mut files = Vec::new();
    collect_rust(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    texts.extend(files.iter().map(|f| std::fs::read_to_string(f).unwrap()));
    texts.push(
        "我爱自然语言处理。今天天气很好，我们去公园散步吧！\n\
         Привет, мир! Съешь же ещё этих мягких французских булок.\n\
         مرحبا بالعالم! كيف حالك اليوم؟ ١٢٣٤٥\n\
         こんにちは世界。カタカナとひらがな。안녕하세요 세계\n\
         Café naïve résumé façade — São Paulo, Straße, İstanbul 3.14159 1,000,000 \
         I ❤️ Rust 🦀🚀! 👍🏽 👨‍👩‍👧‍👦\n\t  \n\n   x"
            .to_string(),
    );
    texts
}

fn collect_rust(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_rust(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Tokenizes every text with Tern and with llama.cpp and returns the number of tokens,
/// failing at the first difference.
fn tokenization_matches(name: &str) -> usize {
    let path = tern_testkit::model(name);
    let model = Model::load(&path).unwrap();
    let oracle = OracleModel::load_vocab_only(&path).unwrap();
    let mut total = 0;
    for text in mixed_texts() {
        // Paragraph by paragraph, so a difference is reported where it is.
        for part in text.split_inclusive("\n\n") {
            let ours: Vec<i32> = model
                .tokenizer()
                .encode(part, false, false)
                .unwrap()
                .iter()
                .map(|&t| t as i32)
                .collect();
            let theirs = oracle.tokenize(part, false, false);
            assert_eq!(ours, theirs, "{name}: tokens differ for {part:?}");
            total += ours.len();
        }
    }
    println!("{name}: tokenization identical to llama.cpp's on {total} tokens of mixed text");
    total
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

/// Running agreement of some distributions with reference ones.
#[derive(Default)]
struct Agreement {
    n: usize,
    top1: usize,
    kl_sum: f64,
    kl_max: f64,
}

impl Agreement {
    /// Adds one position: `theirs` is the reference (KL(theirs ‖ ours)).
    fn add(&mut self, ours: &[f32], theirs: &[f32]) {
        self.n += 1;
        self.top1 += (argmax(ours) == argmax(theirs)) as usize;
        let (lo, lt) = (log_softmax(ours), log_softmax(theirs));
        let kl: f64 = lt.iter().zip(&lo).map(|(&q, &p)| q.exp() * (q - p)).sum();
        self.kl_sum += kl;
        self.kl_max = self.kl_max.max(kl);
    }
    fn top1(&self) -> f64 {
        self.top1 as f64 / self.n.max(1) as f64
    }
    fn kl_mean(&self) -> f64 {
        self.kl_sum / self.n.max(1) as f64
    }
    fn report(&self, what: &str) -> String {
        format!(
            "{what}: top-1 {:.2} %, mean KL {:.6}, max KL {:.6} ({} positions)",
            self.top1() * 100.0,
            self.kl_mean(),
            self.kl_max,
            self.n
        )
    }
}

/// Teacher-forces the first `n` tokens of the GPL through Tern and llama.cpp and compares
/// the distributions at every `stride`-th position (rows of large vocabularies are big).
/// Returns (Tern vs llama.cpp, llama.cpp flash attention off vs its default).
fn logits_agreement(name: &str, n: usize, stride: usize) -> (Agreement, Agreement) {
    let path = tern_testkit::model(name);
    let model = Arc::new(Model::load(&path).unwrap());
    let text = tern_testkit::natural_text();
    let mut tokens = model.tokenizer().encode(&text, true, false).unwrap();
    assert!(tokens.len() >= n, "{name}: text of {} tokens", tokens.len());
    tokens.truncate(n);
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let kept = |pos: usize| pos % stride == stride - 1;

    // llama.cpp's default rows are the reference.
    let mut theirs: Vec<Vec<f32>> = Vec::new();
    OracleModel::load(&path, n, THREADS)
        .unwrap()
        .logits_each(&ids, |pos, row| {
            if kept(pos) {
                theirs.push(row.to_vec());
            }
        })
        .unwrap();

    let mut tern = Agreement::default();
    let n_vocab = model.llama().config().n_vocab;
    let mut session = Session::for_scoring(model.clone(), CacheConfig::dense(n)).unwrap();
    let mut reference = theirs.iter();
    for (b, batch) in tokens.chunks(DEFAULT_BATCH).enumerate() {
        let rows = session.feed_all_logits(batch).unwrap();
        for (k, row) in rows.chunks_exact(n_vocab).enumerate() {
            if kept(b * DEFAULT_BATCH + k) {
                tern.add(row, reference.next().unwrap());
            }
        }
    }

    let mut floor = Agreement::default();
    let mut reference = theirs.iter();
    OracleModel::load_with(&path, n, THREADS, Some(false))
        .unwrap()
        .logits_each(&ids, |pos, row| {
            if kept(pos) {
                floor.add(row, reference.next().unwrap());
            }
        })
        .unwrap();
    println!("{name}, {n} tokens of GPL-3 text, every {stride} position(s), teacher-forced:");
    println!("  {}", tern.report("Tern vs llama.cpp"));
    println!("  {}", floor.report("llama.cpp flash-attn off vs default"));
    (tern, floor)
}

/// Checks the agreement: mean KL at most 0.005, or, where llama.cpp's two attention paths
/// already differ by more than that (Gemma 3 270M: about 0.007-0.010), at most 1.25 times
/// their difference; and top-1 agreement within `slack` of llama.cpp's agreement with itself
/// (short runs count few positions, so a little slack).
fn assert_agreement(name: &str, tern: &Agreement, floor: &Agreement, slack: f64) {
    let bound = 0.005f64.max(1.25 * floor.kl_mean());
    assert!(
        tern.kl_mean() <= bound,
        "{name}: mean KL {} (bound {bound})",
        tern.kl_mean()
    );
    assert!(
        tern.top1() >= floor.top1() - slack,
        "{name}: top-1 {} vs llama.cpp's own {}",
        tern.top1(),
        floor.top1()
    );
}

/// Perplexity of the first `chunks` chunks of `ctx` tokens of the GPL (all of it if `None`),
/// Tern's and llama.cpp's; returns their ratio.
fn perplexity_ratio(name: &str, ctx: usize, chunks: Option<usize>) -> f64 {
    perplexity_ratio_of(name, &tern_testkit::natural_text(), "GPL-3", ctx, chunks)
}

/// [`perplexity_ratio`] over `text`.
fn perplexity_ratio_of(
    name: &str,
    text: &str,
    what: &str,
    ctx: usize,
    chunks: Option<usize>,
) -> f64 {
    let path = tern_testkit::model(name);
    let model = Arc::new(Model::load(&path).unwrap());
    let mut tokens = model.tokenizer().encode(text, true, false).unwrap();
    if let Some(c) = chunks {
        tokens.truncate(c * ctx);
    }
    let tok = model.tokenizer();
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let ours = tern::perplexity::perplexity(&model, &tokens, ctx, bos, |_, _, _| {}).unwrap();
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let theirs = OracleModel::load(&path, ctx, THREADS)
        .unwrap()
        .perplexity(&ids, ctx)
        .unwrap();
    let ratio = ours.ppl / theirs.ppl;
    println!(
        "{name}: perplexity at ctx {ctx} over {} chunks of {what}: Tern {:.4} | llama.cpp {:.4} | ratio {ratio:.5}",
        theirs.chunks, ours.ppl, theirs.ppl
    );
    assert!((ratio - 1.0).abs() < 0.01, "{name}: ratio {ratio}");
    ratio
}

#[test]
fn qwen2_5_coder_0_5b_tokenization_matches_llama_cpp() {
    assert!(tokenization_matches(QWEN_05B) >= 50_000);
}

#[test]
fn gemma3_270m_tokenization_matches_llama_cpp() {
    assert!(tokenization_matches(GEMMA) >= 50_000);
}

#[test]
fn qwen2_5_coder_0_5b_logits_match_llama_cpp() {
    let (tern, floor) = logits_agreement(QWEN_05B, 128, 1);
    assert_agreement(QWEN_05B, &tern, &floor, 0.03);
}

#[test]
fn gemma3_270m_logits_match_llama_cpp() {
    let (tern, floor) = logits_agreement(GEMMA, 192, 1);
    assert_agreement(GEMMA, &tern, &floor, 0.03);
}

/// Past the sliding window of 512: local layers must forget the older tokens as llama.cpp's
/// do.
#[test]
fn gemma3_270m_logits_match_llama_cpp_past_the_window() {
    let (tern, floor) = logits_agreement(GEMMA, 640, 4);
    assert_agreement(GEMMA, &tern, &floor, 0.03);
}

#[test]
fn gemma3_270m_perplexity_matches_llama_cpp() {
    perplexity_ratio(GEMMA, 512, Some(2));
}

/// One window of 2 048 tokens, four times the local layers' window: global layers see the
/// whole chunk, local layers a ring of their last 512 tokens.
#[test]
fn gemma3_270m_perplexity_at_ctx_2048_matches_llama_cpp() {
    perplexity_ratio(GEMMA, 2048, Some(2));
}

#[test]
fn qwen2_5_coder_1_5b_logits_match_llama_cpp() {
    let (tern, floor) = logits_agreement(QWEN_15B, 64, 1);
    assert_agreement(QWEN_15B, &tern, &floor, 0.05);
}

// The full figures (minutes each). Top-1 is asked to be no lower than llama.cpp's agreement
// with itself, without slack.

#[test]
#[ignore]
fn full_qwen2_5_coder_1_5b_tokenization() {
    assert!(tokenization_matches(QWEN_15B) >= 50_000);
}

#[test]
#[ignore]
fn full_logits_qwen() {
    let runs: Vec<_> = [(QWEN_05B, 1024, 2), (QWEN_15B, 512, 1)]
        .into_iter()
        .map(|(name, n, stride)| (name, logits_agreement(name, n, stride)))
        .collect();
    for (name, (tern, floor)) in &runs {
        assert_agreement(name, tern, floor, 0.0);
    }
}

#[test]
#[ignore]
fn full_logits_gemma() {
    let runs: Vec<_> = [(2048, 4), (512, 1)]
        .into_iter()
        .map(|(n, stride)| logits_agreement(GEMMA, n, stride))
        .collect();
    for (tern, floor) in &runs {
        assert_agreement(GEMMA, tern, floor, 0.0);
    }
}

#[test]
#[ignore]
fn full_perplexity_gemma() {
    perplexity_ratio(GEMMA, 512, None);
    perplexity_ratio(GEMMA, 2048, None);
    gemma3_270m_perplexity_at_ctx_4096();
}

/// Debian's GPL-3, GPL-2 and LGPL-2.1 in a row (about 17 000 Gemma tokens): long enough for
/// chunks of 4 096 tokens, eight times the local layers' window.
#[test]
#[ignore]
fn gemma3_270m_perplexity_at_ctx_4096() {
    let text: String = ["GPL-3", "GPL-2", "LGPL-2.1"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("/usr/share/common-licenses/{f}")).unwrap())
        .collect::<Vec<_>>()
        .join("\n\n");
    perplexity_ratio_of(GEMMA, &text, "GPL-3 + GPL-2 + LGPL-2.1", 4096, None);
}

#[test]
#[ignore]
fn full_perplexity_qwen() {
    perplexity_ratio(QWEN_05B, 512, None);
    perplexity_ratio(QWEN_15B, 512, None);
}

/// Why Gemma 3's bound is llama.cpp's own noise and not 0.005: with keys and values cached
/// in f32 on both sides and llama.cpp's flash attention off (its most exact path), Tern is no
/// closer to llama.cpp than with the f16 defaults, and llama.cpp's exact path differs from
/// its default by about as much as Tern does. On Qwen2.5-Coder-0.5B the same comparison
/// stays under 0.005.
#[test]
#[ignore]
fn full_noise_floor_with_f32_caches() {
    use tern::cache::KvType;
    for (name, n) in [(GEMMA, 192), (QWEN_05B, 128)] {
        let path = tern_testkit::model(name);
        let model = Arc::new(Model::load(&path).unwrap());
        let mut tokens = model
            .tokenizer()
            .encode(&tern_testkit::natural_text(), true, false)
            .unwrap();
        tokens.truncate(n);
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let rows = |mut m: OracleModel| {
            let mut out = Vec::new();
            m.logits_each(&ids, |_, row| out.push(row.to_vec()))
                .unwrap();
            out
        };
        let exact = rows(OracleModel::load_exact(&path, n, THREADS).unwrap());
        let default = rows(OracleModel::load(&path, n, THREADS).unwrap());
        let agreement = |ours: &[Vec<f32>], theirs: &[Vec<f32>]| {
            let mut a = Agreement::default();
            ours.iter().zip(theirs).for_each(|(o, t)| a.add(o, t));
            a
        };
        let floor = agreement(&exact, &default);
        println!(
            "{name}: {}",
            floor.report("llama.cpp f32 cache, flash-attn off vs default")
        );
        let n_vocab = model.llama().config().n_vocab;
        for kv in [KvType::F32, KvType::F16] {
            let cfg = CacheConfig {
                kv_type: kv,
                ..CacheConfig::dense(n)
            };
            let mut session = Session::for_scoring(model.clone(), cfg).unwrap();
            let mut ours = Vec::new();
            for batch in tokens.chunks(DEFAULT_BATCH) {
                let logits = session.feed_all_logits(batch).unwrap();
                ours.extend(logits.chunks_exact(n_vocab).map(|r| r.to_vec()));
            }
            for (what, theirs) in [("f32 cache", &exact), ("default", &default)] {
                let a = agreement(&ours, theirs);
                println!(
                    "{name}: {}",
                    a.report(&format!("Tern {} vs llama.cpp {what}", kv.name()))
                );
                if kv == KvType::F32 && what == "f32 cache" {
                    assert_agreement(name, &a, &floor, 0.03);
                }
            }
        }
    }
}
