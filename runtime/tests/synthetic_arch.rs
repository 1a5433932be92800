//! Architectures with no real file reachable here, checked on small random-weight models that
//! the project's GGUF writer makes (f32 weights, a few layers, the real models' shape ratios,
//! and SmolLM2's real tokenizer copied in): llama.cpp runs the same files, and Tern's
//! next-token distributions must match its own (mean KL ≤ 0.001).
#![cfg(target_arch = "x86_64")]

use std::path::Path;
use std::sync::Arc;

use tern::cache::CacheConfig;
use tern::gguf::{GgufFile, GgufWriter, Value};
use tern::model::Model;
use tern::session::{Session, DEFAULT_BATCH};
use tern_kernels::GgmlType;
use tern_oracle::llama::OracleModel;
use tern_testkit::log_softmax;

const N_TOKENS: usize = 96;

/// A small deterministic generator of weights in `[-scale, scale)`.
struct Lcg(u64);
impl Lcg {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

struct Shape {
    arch: &'static str,
    n_embd: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    n_ff: usize,
    n_layer: usize,
}

/// Writes a random model of `shape` to `path`, with the tokenizer of `tokenizer_from`.
fn write_model(shape: &Shape, tokenizer_from: &Path, path: &Path) {
    let src = GgufFile::open(tokenizer_from).unwrap();
    let n_vocab = src.tensor_info("token_embd.weight").unwrap().dims[1] as usize;
    let a = shape.arch;
    let (d, hd, ff) = (shape.n_embd, shape.head_dim, shape.n_ff);
    let (q_dim, kv) = (shape.n_head * hd, shape.n_head_kv * hd);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String(a.into()));
    for (k, v) in [
        ("context_length", 4096),
        ("embedding_length", d),
        ("block_count", shape.n_layer),
        ("feed_forward_length", ff),
        ("attention.head_count", shape.n_head),
        ("attention.head_count_kv", shape.n_head_kv),
        ("attention.key_length", hd),
        ("attention.value_length", hd),
    ] {
        w.add_metadata(format!("{a}.{k}"), Value::U32(v as u32));
    }
    w.add_metadata(format!("{a}.rope.freq_base"), Value::F32(100_000.0));
    w.add_metadata(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-6),
    );
    if a == "gemma3" {
        // A window shorter than the text, so the local layers forget.
        w.add_metadata(format!("{a}.attention.sliding_window"), Value::U32(8));
    }
    for (k, v) in src.metadata() {
        if k.starts_with("tokenizer.") {
            w.add_metadata(k.clone(), v.clone());
        }
    }
    let mut rng = Lcg(7);
    let mut tensor = |w: &mut GgufWriter, name: String, dims: &[usize], scale: f32, offset: f32| {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = rng.vec(n, scale).iter().map(|v| v + offset).collect();
        let dims: Vec<u64> = dims.iter().map(|&x| x as u64).collect();
        w.add_tensor(name, GgmlType::F32, &dims, bytemuck_bytes(&data));
    };
    tensor(&mut w, "token_embd.weight".into(), &[d, n_vocab], 0.5, 0.0);
    tensor(&mut w, "output_norm.weight".into(), &[d], 0.2, 1.0);
    for l in 0..shape.n_layer {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        let (sd, sq, sf) = (
            1.0 / (d as f32).sqrt(),
            1.0 / (q_dim as f32).sqrt(),
            1.0 / (ff as f32).sqrt(),
        );
        tensor(&mut w, t("attn_norm"), &[d], 0.2, 1.0);
        tensor(&mut w, t("attn_q"), &[d, q_dim], 2.0 * sd, 0.0);
        tensor(&mut w, t("attn_k"), &[d, kv], 2.0 * sd, 0.0);
        tensor(&mut w, t("attn_v"), &[d, kv], sd, 0.0);
        tensor(&mut w, t("attn_output"), &[q_dim, d], sq, 0.0);
        tensor(&mut w, t("ffn_norm"), &[d], 0.2, 1.0);
        tensor(&mut w, t("ffn_gate"), &[d, ff], sd, 0.0);
        tensor(&mut w, t("ffn_up"), &[d, ff], sd, 0.0);
        tensor(&mut w, t("ffn_down"), &[ff, d], sf, 0.0);
        if a == "qwen2" {
            for (n, len) in [("attn_q", q_dim), ("attn_k", kv), ("attn_v", kv)] {
                tensor(&mut w, format!("blk.{l}.{n}.bias"), &[len], 0.3, 0.0);
            }
        }
        if a == "qwen3" || a == "gemma3" {
            tensor(&mut w, t("attn_q_norm"), &[hd], 0.2, 1.0);
            tensor(&mut w, t("attn_k_norm"), &[hd], 0.2, 1.0);
        }
        if a == "gemma3" {
            tensor(&mut w, t("post_attention_norm"), &[d], 0.2, 1.0);
            tensor(&mut w, t("post_ffw_norm"), &[d], 0.2, 1.0);
        }
    }
    w.write_file(path).unwrap();
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Mean KL(llama.cpp ‖ Tern) over the first `N_TOKENS` tokens of the GPL.
fn mean_kl(shape: &Shape) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.gguf", shape.arch));
    write_model(shape, &tern_testkit::smollm2(), &path);
    let model = Arc::new(Model::load(&path).unwrap());
    let mut tokens = model
        .tokenizer()
        .encode(&tern_testkit::natural_text(), true, false)
        .unwrap();
    tokens.truncate(N_TOKENS);
    let n_vocab = model.llama().config().n_vocab;
    let mut session = Session::for_scoring(model.clone(), CacheConfig::dense(N_TOKENS)).unwrap();
    let mut ours = Vec::with_capacity(N_TOKENS * n_vocab);
    for batch in tokens.chunks(DEFAULT_BATCH) {
        ours.extend_from_slice(session.feed_all_logits(batch).unwrap());
    }
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let theirs = OracleModel::load(&path, N_TOKENS, 2)
        .unwrap()
        .logits_for(&ids)
        .unwrap();
    let mut kl_sum = 0.0;
    for (a, b) in ours.chunks_exact(n_vocab).zip(&theirs) {
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl_sum += lb
            .iter()
            .zip(&la)
            .map(|(&q, &p)| q.exp() * (q - p))
            .sum::<f64>();
    }
    let kl = kl_sum / theirs.len() as f64;
    let spread = theirs[N_TOKENS - 1]
        .iter()
        .map(|&v| v as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    println!(
        "{}: mean KL(llama.cpp ‖ Tern) {kl:.2e} over {N_TOKENS} positions (largest last logit {spread:.2})",
        shape.arch
    );
    kl
}

#[test]
fn qwen3_matches_llama_cpp() {
    // Qwen3-0.6B: 1024 wide, 16 heads of 128 (queries wider than the model), 8 KV heads.
    let kl = mean_kl(&Shape {
        arch: "qwen3",
        n_embd: 128,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 64,
        n_ff: 384,
        n_layer: 3,
    });
    assert!(kl <= 0.001, "{kl}");
}

#[test]
fn qwen2_matches_llama_cpp() {
    let kl = mean_kl(&Shape {
        arch: "qwen2",
        n_embd: 128,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 32,
        n_ff: 384,
        n_layer: 3,
    });
    assert!(kl <= 0.001, "{kl}");
}

#[test]
fn gemma3_sliding_window_matches_llama_cpp() {
    // Six layers: five local (window 8, much shorter than the text) and one global.
    let kl = mean_kl(&Shape {
        arch: "gemma3",
        n_embd: 128,
        n_head: 4,
        n_head_kv: 1,
        head_dim: 64,
        n_ff: 384,
        n_layer: 6,
    });
    assert!(kl <= 0.001, "{kl}");
}
