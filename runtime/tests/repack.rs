//! Weights repacked at load into the kernel set's interleaved rows (the dotprod and i8mm
//! sets: Q4_0, Q8_0 and Q4_K here), on a random-weight llama written to a file: the logits
//! are those of the same model left in the file's layout, bit for bit (the interleaved
//! kernels add the same exact integer block sums in the same order: dotprod's `sdot` tiles
//! as its file-layout kernels do, i8mm's `smmla` tiles as its file-layout panels do), and
//! memory does not double: the process's resident memory grows by at most the file's
//! size + 5 % when the model is loaded and run, because the map's pages of every repacked
//! matrix are released.
//!
//! Where the kernel set repacks nothing (x86-64, NEON) the same checks run on a model that
//! stays in the map. `scripts/test-cross.sh` runs this file under qemu as a Neoverse-N1
//! (dotprod without i8mm: a Cortex-A76, Pi 5 class) and as `max` (i8mm), where everything
//! is repacked.

use std::path::Path;

use tern::cache::CacheConfig;
use tern::gguf::{GgufFile, GgufWriter, Value};
use tern::model::{Llama, State};
use tern_kernels::GgmlType::{self, *};

const D: usize = 1024;
const HEADS: usize = 8;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = D / HEADS;
const FF: usize = 2816;
const LAYERS: usize = 4;
const VOCAB: usize = 256;

/// splitmix64, for the weights' bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `rows × cols` random quants of Q4_0, Q8_0 or Q4_K, each block scaled by about
    /// `scale` (Q4_K: its `d` and `dmin`, its six-bit scales and mins random).
    fn matrix(&mut self, ty: GgmlType, rows: usize, cols: usize, scale: f32) -> Vec<u8> {
        let bytes = ty.bytes_for((rows * cols) as u64).unwrap() as usize;
        let mut w: Vec<u8> = (0..bytes).map(|_| self.next() as u8).collect();
        let (halves, scale) = if ty == Q4_K {
            (2, scale / 32.0)
        } else {
            (1, scale)
        };
        for blk in w.chunks_exact_mut(ty.block_bytes()) {
            for h in blk[..2 * halves].chunks_exact_mut(2) {
                let jitter = 0.5 + (self.next() % 1000) as f32 / 1000.0;
                h.copy_from_slice(&half::f16::from_f32(scale * jitter).to_le_bytes());
            }
        }
        w
    }
}

/// Writes the model: Q4_0 attention and Q4_K feed-forward matrices, Q8_0 keys, values and
/// output (all repacked), Q8_0 embeddings (read by row, never repacked).
fn write_model(path: &Path) {
    let mut rng = Rng(18);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    for (k, v) in [
        ("embedding_length", D),
        ("attention.head_count", HEADS),
        ("attention.head_count_kv", KV_HEADS),
        ("feed_forward_length", FF),
        ("block_count", LAYERS),
        ("context_length", 256),
    ] {
        w.add_metadata(format!("llama.{k}"), Value::U32(v as u32));
    }
    let ones: Vec<u8> = (0..D).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    let mut matrix = |w: &mut GgufWriter, name: &str, ty, cols: usize, rows: usize| {
        let scale = 1.0 / (cols as f32).sqrt() / 8.0;
        let data = rng.matrix(ty, rows, cols, scale);
        w.add_tensor(name, ty, &[cols as u64, rows as u64], data);
    };
    matrix(&mut w, "token_embd.weight", Q8_0, D, VOCAB);
    matrix(&mut w, "output.weight", Q8_0, D, VOCAB);
    w.add_tensor("output_norm.weight", F32, &[D as u64], ones.clone());
    let kv = KV_HEADS * HEAD_DIM;
    for l in 0..LAYERS {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        w.add_tensor(t("attn_norm"), F32, &[D as u64], ones.clone());
        w.add_tensor(t("ffn_norm"), F32, &[D as u64], ones.clone());
        matrix(&mut w, &t("attn_q"), Q4_0, D, D);
        matrix(&mut w, &t("attn_k"), Q8_0, D, kv);
        matrix(&mut w, &t("attn_v"), Q8_0, D, kv);
        matrix(&mut w, &t("attn_output"), Q4_0, D, D);
        matrix(&mut w, &t("ffn_gate"), Q4_K, D, FF);
        matrix(&mut w, &t("ffn_up"), Q4_K, D, FF);
        matrix(&mut w, &t("ffn_down"), Q4_K, FF, D);
    }
    w.write_file(path).unwrap();
}

/// The bytes of the matrices the forward pass multiplies (all but the embeddings).
fn matrix_bytes() -> usize {
    let kv = KV_HEADS * HEAD_DIM;
    let q4 = |n: usize| Q4_0.bytes_for(n as u64).unwrap() as usize;
    let q8 = |n: usize| Q8_0.bytes_for(n as u64).unwrap() as usize;
    let q4k = |n: usize| Q4_K.bytes_for(n as u64).unwrap() as usize;
    q8(VOCAB * D) + LAYERS * (q4(2 * D * D) + q4k(3 * D * FF) + q8(2 * D * kv))
}

/// The process's resident memory (`VmRSS`), in bytes. Under qemu-user it is the emulator's
/// process, which holds the guest's memory.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Loads the model (repacking or not), runs a prompt of 9 tokens (panels) and 3 decode steps,
/// and returns every logit, the bytes repacked and the growth of resident memory.
fn run(path: &Path, repack: bool) -> (Vec<f32>, usize, usize) {
    let before = rss();
    let llama = Llama::load_with(GgufFile::open(path).unwrap(), repack).unwrap();
    let mut cache = llama.new_cache(CacheConfig::dense(32), 16, 16).unwrap();
    let mut st = State::new(llama.config(), 16);
    let mut logits = Vec::new();
    llama
        .forward(
            &[1, 7, 42, 99, 3, 200, 17, 5, 64],
            &mut cache,
            &mut st,
            true,
        )
        .unwrap();
    logits.extend_from_slice(st.logits());
    for t in [11, 250, 0] {
        llama.forward(&[t], &mut cache, &mut st, false).unwrap();
        logits.extend_from_slice(st.logits());
    }
    let grown = rss().saturating_sub(before);
    (logits, llama.repacked_bytes(), grown)
}

#[test]
fn repacked_model_gives_the_same_logits_in_no_more_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q4_0.gguf");
    write_model(&path);
    let file_size = std::fs::metadata(&path).unwrap().len() as usize;
    let mb = |b: usize| b as f64 / (1 << 20) as f64;

    // A first run pays the process's one-time costs (the thread pool; under qemu, the
    // translation of the code), which are not the model's.
    let (mapped, none, _) = run(&path, false);
    assert_eq!(none, 0);
    let (packed, repacked, grown) = run(&path, true);
    let (_, _, grown_mapped) = run(&path, false);
    let ks = tern_kernels::kernels();
    let repacks = [Q4_0, Q8_0, Q4_K].map(|t| ks.get(t).repack.is_some());
    assert!(
        repacks.iter().all(|&r| r == repacks[0]),
        "a kernel set repacks all of this model's types or none"
    );
    let repacks = repacks[0];
    println!(
        "{} kernels: {:.1} MiB repacked of a {:.1} MiB file; resident memory grew {:.1} MiB \
         (in the map: {:.1} MiB); the process's resident memory is {:.1} MiB",
        ks.name(),
        mb(repacked),
        mb(file_size),
        mb(grown),
        mb(grown_mapped),
        mb(rss())
    );
    assert_eq!(repacked, if repacks { matrix_bytes() } else { 0 });
    assert!(
        grown as f64 <= file_size as f64 * 1.05,
        "resident memory grew {grown} bytes for a file of {file_size}"
    );
    assert_eq!(packed.len(), mapped.len());
    assert!(packed.iter().all(|v| v.is_finite()));
    if let Some(i) = (0..packed.len()).find(|&i| packed[i].to_bits() != mapped[i].to_bits()) {
        panic!(
            "logit {i} (token {}, entry {}): repacked {}, in the map {}",
            i / VOCAB,
            i % VOCAB,
            packed[i],
            mapped[i]
        );
    }
}

/// A catalog model (`TERN_REPACK_MODEL`, Qwen2.5-Coder-1.5B by default: Q4_K and Q6_K)
/// loaded repacked and in the map, one after the other, each run on a 4-token prompt: the
/// bytes repacked, load times, and resident memory against the file's size. On demand (a
/// measurement for the README, minutes under qemu):
/// `QEMU_CPU=neoverse-n1 qemu-aarch64 -L /usr/aarch64-linux-gnu <repack test binary>
/// --ignored --nocapture`.
#[test]
#[ignore]
fn catalog_model_resident_memory() {
    let name = std::env::var("TERN_REPACK_MODEL").unwrap_or("qwen2.5-coder-1.5b".into());
    let path = tern_testkit::model(&name);
    let file_size = std::fs::metadata(&path).unwrap().len() as usize;
    let mb = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "{name}: file {:.1} MiB, {} kernels",
        mb(file_size),
        tern_kernels::kernels().name()
    );
    let mut grown = Vec::new();
    for repack in [false, true, false] {
        let before = rss();
        let t = std::time::Instant::now();
        let llama = Llama::load_with(GgufFile::open(&path).unwrap(), repack).unwrap();
        let load = t.elapsed();
        let mut cache = llama.new_cache(CacheConfig::dense(16), 4, 4).unwrap();
        let mut st = State::new(llama.config(), 4);
        llama
            .forward(&[1, 2, 3, 4], &mut cache, &mut st, false)
            .unwrap();
        assert!(st.logits().iter().all(|v| v.is_finite()));
        let after = rss();
        println!(
            "repack {repack}: {:.1} MiB repacked, load {:.2} s; resident {:.1} MiB after the \
             prompt, grew {:.1} MiB",
            mb(llama.repacked_bytes()),
            load.as_secs_f64(),
            mb(after),
            mb(after.saturating_sub(before))
        );
        grown.push((llama.repacked_bytes(), after.saturating_sub(before)));
    }
    let (repacked, grown_packed) = grown[1];
    if repacked > 0 {
        assert!(
            grown_packed as f64 <= file_size as f64 * 1.05,
            "resident memory grew {grown_packed} bytes for a file of {file_size}"
        );
    }
}
