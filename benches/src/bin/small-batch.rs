//! What a product over a few tokens costs against one token: the verification pass of
//! speculative decoding (2–8 tokens) and short prefills live here (issue 17). For each weight
//! type of the Qwen2.5-Coder files and each SIMD kernel set this CPU runs, times `matmul` of
//! Qwen2.5-Coder-1.5B's feed-forward shapes (8960 × 1536 and 1536 × 8960) over n tokens on
//! one thread, the sets taking turns within each repetition (so that a noisy machine slows
//! them alike), and prints the best time of each and its ratio to the set's one-token time.
//!
//! `cargo run --release -p tern-benches --bin small-batch [-- --reps N]`; `SB_TYPE=q4_K`
//! keeps one type.
use std::hint::black_box;
use std::time::Instant;
use tern_kernels::matmul::{matmul_with, QMatrix};
use tern_kernels::{GgmlType, KernelSet};

const TOKENS: [usize; 8] = [1, 2, 3, 4, 6, 8, 16, 64];

fn main() {
    let reps: usize = std::env::args()
        .skip_while(|a| a != "--reps")
        .nth(1)
        .map(|s| s.parse().expect("--reps N"))
        .unwrap_or(20);
    let sets: Vec<KernelSet> = KernelSet::available().into_iter().skip(1).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let keep = |ty: GgmlType| std::env::var("SB_TYPE").map_or(true, |v| v == ty.to_string());
    print!("{:5} {:10} {:>3}", "type", "shape", "n");
    for ks in &sets {
        print!(" {:>18}", format!("{} ms (× 1 token)", ks.name()));
    }
    println!();
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
    ] {
        if !keep(ty) {
            continue;
        }
        for (rows, cols) in [(8960usize, 1536usize), (1536, 8960)] {
            let data = tern_benches::weights(ty, rows, cols);
            let w = QMatrix::new(ty, rows, cols, &data).expect("whole blocks");
            let mut one = vec![0.0; sets.len()];
            for n in TOKENS {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i % 17) as f32 - 8.0) * 0.1)
                    .collect();
                let mut y = vec![0.0f32; n * rows];
                let mut scratch = Vec::new();
                let mut best = vec![f64::MAX; sets.len()];
                pool.install(|| {
                    for _ in 0..reps {
                        for (ks, b) in sets.iter().zip(best.iter_mut()) {
                            let t = Instant::now();
                            matmul_with(ks, &w, black_box(&x), &mut y, &mut scratch);
                            *b = b.min(t.elapsed().as_secs_f64());
                        }
                    }
                });
                if n == 1 {
                    one.clone_from(&best);
                }
                print!(
                    "{:5} {:10} {n:>3}",
                    ty.to_string(),
                    format!("{rows}x{cols}")
                );
                for (b, o) in best.iter().zip(&one) {
                    print!(" {:>18}", format!("{:.3} (× {:.2})", b * 1e3, b / o));
                }
                println!();
            }
        }
    }
}
