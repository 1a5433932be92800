//! How close the decode products come to the memory's streaming-read bandwidth: a stack of
//! layers at Qwen2.5-Coder-1.5B's or SmolLM2-135M's shapes (q, k, v, o, gate, up, down),
//! far larger than the last-level cache, multiplied by one token as a decode step does
//! (`matmul_many` for q/k/v and gate/up, as the models call it), on a pool of `--threads`
//! threads. Weights and the read's buffer both lie on 2 MiB pages, as a model's map does.
//! Each round times one streaming read of `--mib` MiB and one pass over the layers,
//! alternating, so the ratio holds on a noisy host; the best of `--rounds` of each is kept.
//!
//! `cargo run --release -p tern-benches --bin decode-stream -- [--threads 2] [--mib 512]
//! [--rounds 7] [--shapes qwen2.5-1.5b|smollm2] [--types q4_k,q6_k,q8_0,q4_0,q4_1,q5_0]`

use std::time::Instant;

use tern_benches::bandwidth::{Huge, StreamRead};
use tern_benches::{arg, arg_str, weights};
use tern_kernels::matmul::{matmul_many, QMatrix};
use tern_kernels::GgmlType;

/// The matrices of one layer, `(rows, cols)`, grouped as the model multiplies them (one
/// `matmul_many` per group): q, k, v; o; gate, up; down.
type Layer = [&'static [(usize, usize)]; 4];

/// Qwen2.5-Coder-1.5B's layer.
const QWEN_1_5B: Layer = [
    &[(1536, 1536), (256, 1536), (256, 1536)],
    &[(1536, 1536)],
    &[(8960, 1536), (8960, 1536)],
    &[(1536, 8960)],
];

/// SmolLM2-135M's layer.
const SMOLLM2: Layer = [
    &[(576, 576), (192, 576), (192, 576)],
    &[(576, 576)],
    &[(1536, 576), (1536, 576)],
    &[(576, 1536)],
];

fn main() -> anyhow::Result<()> {
    let threads = arg("--threads", 2);
    let mib = arg("--mib", 512);
    let rounds = arg("--rounds", 7);
    let types = arg_str("--types", "q4_k,q6_k,q8_0,q4_0,q4_1,q5_0");
    let layer = match arg_str("--shapes", "qwen2.5-1.5b").as_str() {
        "qwen2.5-1.5b" => QWEN_1_5B,
        "smollm2" => SMOLLM2,
        other => anyhow::bail!("unknown shapes `{other}` (qwen2.5-1.5b, smollm2)"),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let read = StreamRead::new(mib);
    println!(
        "kernel set {}, {threads} threads, {mib} MiB per pass",
        tern_kernels::kernels().name()
    );
    for name in types.split(',') {
        let ty = GgmlType::ALL
            .into_iter()
            .find(|t| t.to_string().eq_ignore_ascii_case(name))
            .ok_or_else(|| anyhow::anyhow!("unknown type `{name}`"))?;
        let layer_bytes: usize = layer
            .iter()
            .flat_map(|g| g.iter())
            .map(|&(r, c)| ty.bytes_for((r * c) as u64).unwrap() as usize)
            .sum();
        let layers = ((mib << 20) / layer_bytes).max(1);
        let shapes: Vec<&[(usize, usize)]> = (0..layers).flat_map(|_| layer).collect();
        let mut store = Huge::new(layers * layer_bytes);
        let mut rest = store.bytes_mut();
        for &(r, c) in shapes.iter().flat_map(|g| g.iter()) {
            let w = weights(ty, r, c);
            let (dst, tail) = rest.split_at_mut(w.len());
            dst.copy_from_slice(&w);
            rest = tail;
        }
        let mut rest = store.bytes();
        let groups: Vec<Vec<QMatrix<'_>>> = shapes
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&(r, c)| {
                        let (w, tail) =
                            rest.split_at(ty.bytes_for((r * c) as u64).unwrap() as usize);
                        rest = tail;
                        QMatrix::new(ty, r, c, w).unwrap()
                    })
                    .collect()
            })
            .collect();
        let bytes = (layers * layer_bytes) as f64;
        let mut outs: Vec<Vec<Vec<f32>>> = groups
            .iter()
            .map(|g| g.iter().map(|w| vec![0f32; w.rows]).collect())
            .collect();
        let x: Vec<f32> = (0..8960).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
        let mut scratch = Vec::new();
        let (mut best_read, mut best_step) = (0f64, 0f64);
        for _ in 0..rounds {
            best_read = best_read.max(read.gbs(&pool) * 1e9);
            let t = Instant::now();
            pool.install(|| {
                for (g, out) in groups.iter().zip(outs.iter_mut()) {
                    let mut ys: Vec<&mut [f32]> = out.iter_mut().map(|o| &mut o[..]).collect();
                    matmul_many(g, &x[..g[0].cols], &mut ys, &mut scratch);
                }
            });
            best_step = best_step.max(bytes / t.elapsed().as_secs_f64());
        }
        println!(
            "{name:5}: read {:5.1} GB/s, decode {:5.1} GB/s = {:3.0} % ({layers} layers, {:.0} MiB)",
            best_read / 1e9,
            best_step / 1e9,
            100.0 * best_step / best_read,
            bytes / (1 << 20) as f64
        );
    }
    Ok(())
}
