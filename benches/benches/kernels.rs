//! Kernel throughput: the matrix product of each weight type with SIMD kernels, at
//! SmolLM2-135M's shapes, for one token (decode: GB/s of weights streamed is the figure to
//! hold against `bandwidth`) and for a 64-token panel run (prefill: GFLOP/s).
//!
//! `cargo bench -p tern-benches --bench kernels` (add `-- q4_1` to filter). The kernel set is
//! the one detected (`TERN_KERNELS=scalar` for the reference); threads are rayon's default
//! (`RAYON_NUM_THREADS=1` for one), and the products run inside the pool as the runtime's
//! do. Also measured: the cost of one parallel dispatch, which sets `matmul::PAR_MIN_WORK`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tern_kernels::matmul::{matmul, QMatrix};
use tern_kernels::GgmlType::{self, *};

/// (rows, cols): q/o projections, the feed-forward up and down, the classifier.
const SHAPES: [(usize, usize); 4] = [(576, 576), (1536, 576), (576, 1536), (49152, 576)];

/// Shapes for the k-quants, whose rows are whole 256-value super-blocks: small ones, then
/// Qwen2.5-Coder-1.5B's (q/o, k/v, feed-forward up and down), the files users run in K-quants.
const K_SHAPES: [(usize, usize); 7] = [
    (576, 1536),
    (1536, 768),
    (8192, 1536),
    (1536, 1536),
    (256, 1536),
    (8960, 1536),
    (1536, 8960),
];

const TYPES: [GgmlType; 9] = [Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, F32];

fn bench_type(c: &mut Criterion, ty: GgmlType) {
    let shapes: &[(usize, usize)] = if ty.block_len() == 256 {
        &K_SHAPES
    } else {
        &SHAPES
    };
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    let mut g = c.benchmark_group(format!("{}/{}", tern_kernels::kernels().name(), ty));
    g.sample_size(20);
    for &(rows, cols) in shapes {
        let data = tern_benches::weights(ty, rows, cols);
        let w = QMatrix::new(ty, rows, cols, &data).unwrap();
        for n in [1usize, 64] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i % 17) as f32 - 8.0) * 0.1)
                .collect();
            let mut y = vec![0.0f32; n * rows];
            let mut scratch = Vec::new();
            // Decode streams the weights once per token; prefill is counted in flops.
            if n == 1 {
                g.throughput(Throughput::Bytes(data.len() as u64));
            } else {
                g.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
            }
            let id = BenchmarkId::new(
                if n == 1 { "matvec" } else { "matmul64" },
                format!("{rows}x{cols}"),
            );
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    time_in(&pool, iters, || {
                        matmul(&w, black_box(&x), &mut y, &mut scratch)
                    })
                });
            });
        }
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    for ty in TYPES {
        bench_type(c, ty);
    }
}

/// Times `iters` calls of `f` on a thread of `pool`, as the runtime's forward pass runs:
/// the caller is one of the workers, so a split costs a wake-up, not a round trip.
fn time_in(pool: &rayon::ThreadPool, iters: u64, mut f: impl FnMut() + Send) -> Duration {
    pool.install(|| {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed()
    })
}

/// What one parallel dispatch over the pool costs, with nothing to do: the break-even point
/// for splitting a product over threads.
fn dispatch(c: &mut Criterion) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let empty = || {
        (0..2 * threads).into_par_iter().for_each(|i| {
            black_box(i);
        })
    };
    // From outside the pool (a round trip to the workers), and from inside it.
    c.bench_function(&format!("dispatch/outside_{threads}_threads"), |b| {
        b.iter(empty)
    });
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    c.bench_function(&format!("dispatch/inside_{threads}_threads"), |b| {
        b.iter_custom(|iters| time_in(&pool, iters, empty))
    });
}

criterion_group!(benches, dispatch, kernels);
criterion_main!(benches);
