//! The elementwise kernels (`tern_kernels::ops`) at the shapes of the catalog's models: the
//! plain versions (`scalar`), the ones written once with `wide` (`wide`, four lanes: what
//! aarch64 runs as NEON, here compiled as x86-64's baseline SSE2) and the kernel sets this CPU
//! runs (`avx2`: AVX2 intrinsics, but GeGLU from `wide` and RoPE scalar). Every variant of an
//! op runs in the same process, one after the other, so their ratio is the figure to read on
//! a shared machine.
//!
//! `cargo bench -p tern-benches --bench ops` (add `-- swiglu` to filter); then
//! `python3 benches/ops-table.py` prints the fastest sample of each and their ratios from
//! `target/criterion`. RoPE runs the same scalar function in all three variants on x86-64:
//! their spread is the noise of the run.
//!
//! Shapes: hidden sizes 576 (SmolLM2-135M), 640 (Gemma 3 270M), 896 (Qwen2.5-Coder-0.5B), 1536
//! (Qwen2.5-Coder-1.5B); feed-forward 1536, 2048 (Gemma), 4864, 8960; heads of 64 and 128 (and
//! Gemma's 256) values; blocks of 32 keys (the attention's tile).

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use tern_kernels::kernel::OpKernels;
use tern_kernels::ops::portable;
use tern_kernels::KernelSet;

/// Keys in one attention block (`TILE_KEYS` in the runtime's `cache/attend.rs`).
const KEYS: usize = 32;

/// Deterministic values in about -3..3 (xorshift).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
        })
        .collect()
}

/// `scalar`, `wide`, then each SIMD kernel set this CPU runs.
fn variants() -> Vec<(String, OpKernels)> {
    let mut v = vec![
        ("scalar".to_string(), *KernelSet::scalar().ops()),
        ("wide".to_string(), portable::OPS),
    ];
    for ks in KernelSet::available() {
        if ks.name() != "scalar" {
            v.push((ks.name().to_string(), *ks.ops()));
        }
    }
    v
}

fn elementwise(c: &mut Criterion) {
    let vars = variants();
    let mut g = c.benchmark_group("ops");
    // 63 measurements, each op's variants one after the other; many short samples, of which
    // `benches/ops-table.py` takes the fastest (see there).
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(60);

    for n in [576, 640, 896, 1536] {
        let (x, w) = (values(n, 1), values(n, 2));
        g.throughput(Throughput::Elements(n as u64));
        for (name, ops) in &vars {
            let mut out = vec![0.0; n];
            g.bench_function(BenchmarkId::new(format!("rms_norm/{n}"), name), |b| {
                b.iter(|| (ops.rms_norm)(black_box(&x), &w, 1e-5, &mut out))
            });
        }
    }

    /// A gate's name, its kernel in a set, and its sizes.
    type Gate = (
        &'static str,
        fn(&OpKernels) -> fn(&mut [f32], &[f32]),
        &'static [usize],
    );
    let gates: [Gate; 2] = [
        ("swiglu", |o| o.swiglu, &[1536, 4864, 8960]),
        ("geglu", |o| o.geglu, &[2048]),
    ];
    for (op, pick, sizes) in gates {
        for &n in sizes {
            let (gate, up) = (values(n, 3), values(n, 4));
            g.throughput(Throughput::Elements(n as u64));
            for (name, ops) in &vars {
                let f = pick(ops);
                g.bench_function(BenchmarkId::new(format!("{op}/{n}"), name), |b| {
                    b.iter_batched_ref(|| gate.clone(), |x| f(x, &up), BatchSize::SmallInput)
                });
            }
        }
    }

    for n in [KEYS, 4096] {
        let x = values(n, 5);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        g.throughput(Throughput::Elements(n as u64));
        for (name, ops) in &vars {
            g.bench_function(BenchmarkId::new(format!("softmax/{n}"), name), |b| {
                b.iter_batched_ref(|| x.clone(), |x| (ops.softmax)(x), BatchSize::SmallInput)
            });
        }
        if n == KEYS {
            for (name, ops) in &vars {
                g.bench_function(BenchmarkId::new(format!("exp_sum/{n}"), name), |b| {
                    b.iter_batched_ref(
                        || x.clone(),
                        |x| (ops.exp_sum)(x, max),
                        BatchSize::SmallInput,
                    )
                });
            }
        }
    }

    for dim in [64, 128] {
        let (q, keys, p) = (values(dim, 6), values(KEYS * dim, 7), values(KEYS, 8));
        g.throughput(Throughput::Elements((KEYS * dim) as u64));
        for (name, ops) in &vars {
            let mut out = vec![0.0; KEYS];
            g.bench_function(
                BenchmarkId::new(format!("dot_rows/{KEYS}x{dim}"), name),
                |b| b.iter(|| (ops.dot_rows)(black_box(&q), &keys, dim, &mut out)),
            );
        }
        for (name, ops) in &vars {
            let mut y = vec![0.0; dim];
            g.bench_function(
                BenchmarkId::new(format!("axpy_rows/{KEYS}x{dim}"), name),
                |b| b.iter(|| (ops.axpy_rows)(black_box(&p), &keys, dim, &mut y)),
            );
        }
    }

    // A token's queries: 9 heads of 64 (SmolLM2), 12 of 128 (Qwen2.5-Coder-1.5B), 4 of 256
    // (Gemma 3 270M).
    for (heads, dim) in [(9, 64), (12, 128), (4, 256)] {
        let x = values(heads * dim, 9);
        let cs: Vec<(f32, f32)> = (0..dim / 2)
            .map(|i| (i as f32 * 0.1).sin_cos())
            .map(|(s, c)| (c, s))
            .collect();
        g.throughput(Throughput::Elements((heads * dim) as u64));
        for (style, neox) in [("rope_norm", false), ("rope_neox", true)] {
            for (name, ops) in &vars {
                let f = if neox { ops.rope_neox } else { ops.rope_norm };
                let id = BenchmarkId::new(format!("{style}/{heads}x{dim}"), name);
                g.bench_function(id, |b| {
                    b.iter_batched_ref(|| x.clone(), |x| f(x, dim, &cs), BatchSize::SmallInput)
                });
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = elementwise
}
criterion_main!(benches);
