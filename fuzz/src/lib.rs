//! What the fuzz targets share: a tiny model, written once per process, so a target that
//! needs a model spends its executions on the fuzzed input, not on a real model's size.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tern::gguf::{GgufFile, GgufWriter, Value};
use tern_kernels::GgmlType;

/// A llama with one layer, 8-wide embeddings and two heads of 4, random f32 weights and
/// SmolLM2's real tokenizer and chat template copied in: every code path of a session
/// (tokenizer, template, forward, cache, sampler) at a few microseconds per token.
pub fn tiny_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("tern-fuzz-tiny-{}.gguf", std::process::id()));
        write_tiny_model(&tern_testkit::smollm2(), &path);
        path
    })
}

fn write_tiny_model(tokenizer_from: &Path, path: &Path) {
    let src = GgufFile::open(tokenizer_from).expect("SmolLM2 opens");
    let n_vocab = src
        .tensor_info("token_embd.weight")
        .expect("embeddings")
        .dims[1] as usize;
    let (d, heads, hd, ff) = (8usize, 2usize, 4usize, 16usize);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    for (k, v) in [
        ("context_length", 2048),
        ("embedding_length", d),
        ("block_count", 1),
        ("feed_forward_length", ff),
        ("attention.head_count", heads),
        ("attention.head_count_kv", heads),
        ("attention.key_length", hd),
        ("attention.value_length", hd),
        ("rope.dimension_count", hd),
    ] {
        w.add_metadata(format!("llama.{k}"), Value::U32(v as u32));
    }
    w.add_metadata("llama.rope.freq_base", Value::F32(10_000.0));
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    for (k, v) in src.metadata() {
        if k.starts_with("tokenizer.") {
            w.add_metadata(k.clone(), v.clone());
        }
    }
    let mut seed = 7u64;
    let mut tensor = |w: &mut GgufWriter, name: &str, dims: &[usize]| {
        let n: usize = dims.iter().product();
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5).to_le_bytes()
            })
            .collect();
        let dims: Vec<u64> = dims.iter().map(|&x| x as u64).collect();
        w.add_tensor(name, GgmlType::F32, &dims, bytes);
    };
    tensor(&mut w, "token_embd.weight", &[d, n_vocab]);
    tensor(&mut w, "output_norm.weight", &[d]);
    for (name, dims) in [
        ("attn_norm", vec![d]),
        ("attn_q", vec![d, heads * hd]),
        ("attn_k", vec![d, heads * hd]),
        ("attn_v", vec![d, heads * hd]),
        ("attn_output", vec![heads * hd, d]),
        ("ffn_norm", vec![d]),
        ("ffn_gate", vec![d, ff]),
        ("ffn_up", vec![d, ff]),
        ("ffn_down", vec![ff, d]),
    ] {
        tensor(&mut w, &format!("blk.0.{name}.weight"), &dims);
    }
    w.write_file(path).expect("the tiny model is written");
}
