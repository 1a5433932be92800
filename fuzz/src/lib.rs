//! What the fuzz targets share: a tiny model, written once per process, so a target that
//! needs a model spends its executions on the fuzzed input, not on a real model's size.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tern::gguf::{GgufFile, GgufWriter, Value};
use tern_kernels::GgmlType;

/// A llama with one layer, 8-wide embeddings and two heads of 4, random f32 weights, SmolLM2's
/// chat template and its tokenizer cut to the first [`TINY_VOCAB`] tokens: every code path
/// of a session (tokenizer, template, forward, cache, sampler) at a few microseconds per
/// token.
pub fn tiny_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = scratch_dir().join(format!("tern-fuzz-tiny-{}.gguf", std::process::id()));
        write_tiny_model(&tern_testkit::smollm2(), &path);
        path
    })
}

/// Where the targets write their files: `TERN_FUZZ_SCRATCH` (scripts/fuzz.sh makes one in
/// /dev/shm and removes it after each target), else `/dev/shm`, else the temporary
/// directory. A session save ends with an fsync, which costs nothing on tmpfs: the C ABI
/// target ran 26 executions a second with its files on this machine's disk, 37 on tmpfs
/// (20 s each, same seed, a loaded machine).
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        match std::env::var_os("TERN_FUZZ_SCRATCH") {
            Some(d) => PathBuf::from(d),
            None if shm.is_dir() => shm.to_path_buf(),
            None => std::env::temp_dir(),
        }
    })
}

/// Tokens of the tiny model: SmolLM2's 17 special tokens (`<|im_start|>` is 1), its 256
/// byte tokens (so any text encodes) and its first 239 merged ones, with the merges that
/// make them. With the whole vocabulary (49 152) the output matrix was most of a C ABI
/// execution (6 a second under the fuzzer's instrumentation, 38 with 512), and the logits
/// a session file holds (192 KiB) were beyond any fuzzed input.
pub const TINY_VOCAB: usize = 512;

fn write_tiny_model(tokenizer_from: &Path, path: &Path) {
    let src = GgufFile::open(tokenizer_from).expect("SmolLM2 opens");
    let n_vocab = TINY_VOCAB;
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
    let first_n = |key: &str| {
        let all = src.get(key).and_then(Value::as_array).expect("an array");
        Value::array(all.iter().take(n_vocab).collect())
    };
    let tokens = first_n("tokenizer.ggml.tokens");
    let kept: std::collections::HashSet<String> = tokens
        .as_array()
        .and_then(|a| a.strs())
        .expect("strings")
        .map(str::to_string)
        .collect();
    let merges = src
        .get("tokenizer.ggml.merges")
        .and_then(Value::as_array)
        .and_then(|a| a.strs())
        .expect("strings")
        .filter(|m| {
            let (l, r) = m.split_once(' ').expect("a merge is two tokens");
            kept.contains(l) && kept.contains(r) && kept.contains(&format!("{l}{r}"))
        })
        .map(|m| Value::String(m.to_string()))
        .collect();
    w.add_metadata("tokenizer.ggml.merges", Value::array(merges));
    w.add_metadata(
        "tokenizer.ggml.token_type",
        first_n("tokenizer.ggml.token_type"),
    );
    w.add_metadata("tokenizer.ggml.tokens", tokens);
    for (k, v) in src.metadata() {
        let vocab = ["tokens", "token_type", "merges"].map(|a| format!("tokenizer.ggml.{a}"));
        if k.starts_with("tokenizer.") && !vocab.contains(k) {
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
