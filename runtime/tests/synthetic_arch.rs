//! Architectures with no real file reachable here, checked on small random-weight models that
//! the project's GGUF writer makes (f32 weights, a few layers, the real models' shape ratios,
//! and SmolLM2's real tokenizer copied in) — qwen3, qwen2, gemma3 (sliding window), phi3
//! (fused matrices) and llama with Llama 3.1's RoPE scaling and GQA: llama.cpp runs the
//! same files, and Tern's next-token distributions must match its own: mean KL ≤ [`MAX_KL`].
//!
//! llama.cpp runs on the x86-64 host only. There, `TERN_SYNTHETIC_RECORD=DIR` also writes
//! Tern's logits for each model to `DIR/{arch}.logits`; on other CPUs (aarch64 under qemu,
//! `scripts/test-cross.sh`) the same models are checked against those recorded host logits
//! (`TERN_SYNTHETIC_REFERENCE=DIR`), which they need: without them the tests fail and say so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern::cache::CacheConfig;
use tern::gguf::{GgufFile, GgufWriter, Value};
use tern::model::Model;
use tern::session::{Session, DEFAULT_BATCH};
use tern_kernels::GgmlType;
use tern_testkit::log_softmax;

const N_TOKENS: usize = 96;
/// At f32 weights the two implementations agree to about 1e-8 (the issue asks ≤ 0.001, which
/// is too loose to see a fault: leaving out Llama 3.1's RoPE factors costs only 8e-4 here).
const MAX_KL: f64 = 1e-5;

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
    if a == "llama" {
        let f = llama3_rope_factors(100_000.0, hd);
        w.add_tensor(
            "rope_freqs.weight",
            GgmlType::F32,
            &[f.len() as u64],
            bytemuck_bytes(&f),
        );
    }
    for l in 0..shape.n_layer {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        let (sd, sq, sf) = (
            1.0 / (d as f32).sqrt(),
            1.0 / (q_dim as f32).sqrt(),
            1.0 / (ff as f32).sqrt(),
        );
        tensor(&mut w, t("attn_norm"), &[d], 0.2, 1.0);
        if a == "phi3" {
            // Fused: q, k and v stacked in one matrix; gate then up in `ffn_up`.
            tensor(&mut w, t("attn_qkv"), &[d, q_dim + 2 * kv], 2.0 * sd, 0.0);
            tensor(&mut w, t("ffn_up"), &[d, 2 * ff], sd, 0.0);
        } else {
            tensor(&mut w, t("attn_q"), &[d, q_dim], 2.0 * sd, 0.0);
            tensor(&mut w, t("attn_k"), &[d, kv], 2.0 * sd, 0.0);
            tensor(&mut w, t("attn_v"), &[d, kv], sd, 0.0);
            tensor(&mut w, t("ffn_gate"), &[d, ff], sd, 0.0);
            tensor(&mut w, t("ffn_up"), &[d, ff], sd, 0.0);
        }
        tensor(&mut w, t("attn_output"), &[q_dim, d], sq, 0.0);
        tensor(&mut w, t("ffn_norm"), &[d], 0.2, 1.0);
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

/// Llama 3.1's RoPE scaling as its converter stores it (`rope_freqs`: one divisor per
/// frequency: 1 for short wavelengths, `factor` for long ones, a blend between), with its
/// factor 8 and low/high frequency factors 1 and 4, but for an original context of 32
/// tokens instead of 8 192, so that the factors change the angles within the test's text.
fn llama3_rope_factors(base: f32, dims: usize) -> Vec<f32> {
    let (factor, low, high, context) = (8.0f32, 1.0f32, 4.0f32, 32.0f32);
    let (low_wavelen, high_wavelen) = (context / low, context / high);
    (0..dims / 2)
        .map(|i| {
            let freq = 1.0 / base.powf(2.0 * i as f32 / dims as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Mean KL(reference ‖ Tern) of next-token distributions, rows of `n_vocab` logits.
fn mean_kl(ours: &[f32], reference: &[f32], n_vocab: usize) -> f64 {
    let mut kl_sum = 0.0;
    for (a, b) in ours
        .chunks_exact(n_vocab)
        .zip(reference.chunks_exact(n_vocab))
    {
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl_sum += lb
            .iter()
            .zip(&la)
            .map(|(&q, &p)| q.exp() * (q - p))
            .sum::<f64>();
    }
    kl_sum / (reference.len() / n_vocab) as f64
}

/// Writes the model of `shape`, runs the first `N_TOKENS` tokens of the GPL through Tern and
/// checks the distributions against llama.cpp (x86-64) or the recorded host logits (other
/// CPUs). Returns the mean KL.
fn check(shape: &Shape) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.gguf", shape.arch));
    write_model(shape, &tern_testkit::smollm2(), &path);
    let model = Arc::new(Model::load(&path).unwrap());
    let mut tokens = model
        .tokenizer()
        .encode(&tern_testkit::natural_text(), true, false)
        .unwrap();
    // Under emulation, a prefix of what the host recorded.
    let n_tokens = if cfg!(target_arch = "x86_64") {
        N_TOKENS
    } else {
        N_TOKENS / 3
    };
    tokens.truncate(n_tokens);
    let n_vocab = model.llama().config().n_vocab;
    let mut session = Session::for_scoring(model.clone(), CacheConfig::dense(n_tokens)).unwrap();
    let mut ours = Vec::with_capacity(n_tokens * n_vocab);
    for batch in tokens.chunks(DEFAULT_BATCH) {
        ours.extend_from_slice(session.feed_all_logits(batch).unwrap());
    }
    last_token_passes_agree(&model, &tokens, &ours);
    let file = |var: &str| {
        std::env::var_os(var).map(|d| PathBuf::from(d).join(format!("{}.logits", shape.arch)))
    };
    if let Some(f) = file("TERN_SYNTHETIC_RECORD") {
        let bytes: Vec<u8> = ours.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&f, bytes).unwrap();
    }
    let (reference, what) = match file("TERN_SYNTHETIC_REFERENCE") {
        Some(f) => {
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let rows: Vec<f32> = bytes
                .chunks_exact(4)
                .take(ours.len())
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (rows, "the host's recorded logits")
        }
        None => (oracle_logits(&path, &tokens), "llama.cpp"),
    };
    assert_eq!(reference.len(), ours.len(), "reference rows");
    let kl = mean_kl(&ours, &reference, n_vocab);
    println!(
        "{} on {}: mean KL({what} ‖ Tern) {kl:.2e} over {n_tokens} positions",
        shape.arch,
        tern_kernels::kernels().name()
    );
    kl
}

/// A pass that wants only the last token's logits runs the last layer past its keys and
/// values for that token alone: its logits must be those of the pass that runs every token
/// through (`all`, row after row), within the rounding of a product over one row rather than
/// a panel. A wrong row taken in the last layer would be off by the logits' own size.
fn last_token_passes_agree(model: &Arc<Model>, tokens: &[u32], all: &[f32]) {
    let n_vocab = model.llama().config().n_vocab;
    let mut session =
        Session::for_scoring(model.clone(), CacheConfig::dense(tokens.len())).unwrap();
    let mut fed = 0;
    for batch in tokens.chunks(DEFAULT_BATCH) {
        session.feed(batch).unwrap();
        fed += batch.len();
        let want = &all[(fed - 1) * n_vocab..fed * n_vocab];
        let (got, _) = session.logits_and_history();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "last-token pass after {fed} tokens: off by {worst} (logits up to {scale})"
        );
    }
}

/// llama.cpp's logits for `tokens` on the file at `path`, row after row.
#[cfg(target_arch = "x86_64")]
fn oracle_logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    tern_oracle::llama::OracleModel::load(path, N_TOKENS, 2)
        .unwrap()
        .logits_for(&ids)
        .unwrap()
        .concat()
}

#[cfg(not(target_arch = "x86_64"))]
fn oracle_logits(_: &Path, _: &[u32]) -> Vec<f32> {
    panic!(
        "llama.cpp runs on the x86-64 host only: set TERN_SYNTHETIC_REFERENCE to the logits \
         the host recorded (TERN_SYNTHETIC_RECORD; scripts/test-cross.sh does both)"
    )
}

#[test]
fn qwen3_matches_llama_cpp() {
    // Qwen3-0.6B: 1024 wide, 16 heads of 128 (queries wider than the model), 8 KV heads.
    let kl = check(&Shape {
        arch: "qwen3",
        n_embd: 128,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 64,
        n_ff: 384,
        n_layer: 3,
    });
    assert!(kl <= MAX_KL, "{kl}");
}

#[test]
fn qwen2_matches_llama_cpp() {
    let kl = check(&Shape {
        arch: "qwen2",
        n_embd: 128,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 32,
        n_ff: 384,
        n_layer: 3,
    });
    assert!(kl <= MAX_KL, "{kl}");
}

#[test]
fn gemma3_sliding_window_matches_llama_cpp() {
    // Six layers: five local (window 8, much shorter than the text) and one global.
    let kl = check(&Shape {
        arch: "gemma3",
        n_embd: 128,
        n_head: 4,
        n_head_kv: 1,
        head_dim: 64,
        n_ff: 384,
        n_layer: 6,
    });
    assert!(kl <= MAX_KL, "{kl}");
}

#[test]
fn phi3_fused_matrices_match_llama_cpp() {
    // Phi-3-mini: 3072 wide, 32 heads of 96, no GQA, feed-forward 8192 (gate and up fused).
    let kl = check(&Shape {
        arch: "phi3",
        n_embd: 192,
        n_head: 4,
        n_head_kv: 4,
        head_dim: 48,
        n_ff: 512,
        n_layer: 3,
    });
    assert!(kl <= MAX_KL, "{kl}");
}

#[test]
fn llama3_rope_scaling_and_gqa_match_llama_cpp() {
    // Llama-3.2-1B: 2048 wide, 32 heads of 64, 8 KV heads (GQA 4:1), `rope_freqs` factors.
    let kl = check(&Shape {
        arch: "llama",
        n_embd: 128,
        n_head: 8,
        n_head_kv: 2,
        head_dim: 32,
        n_ff: 384,
        n_layer: 3,
    });
    assert!(kl <= MAX_KL, "{kl}");
}
