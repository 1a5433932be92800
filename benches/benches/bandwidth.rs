//! Memory read bandwidth: a plain streaming read (a sum of `u64`s) over a buffer far larger
//! than the last-level cache, on one thread and on every thread of the pool. Decode reads
//! every weight once per token, so this bandwidth divided by the bytes of weights is the
//! ceiling on decode tokens per second.
//!
//! `cargo bench -p tern-benches --bench bandwidth`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;

/// 512 MiB: much larger than any last-level cache here, so every read comes from DRAM.
const BYTES: usize = 512 << 20;

/// Sum of the words, in four independent chains so the loop is limited by loads alone.
fn read(words: &[u64]) -> u64 {
    let mut s = [0u64; 4];
    for c in words.chunks_exact(4) {
        for (a, &v) in s.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    s.iter().fold(0, |a, &b| a.wrapping_add(b))
}

fn bandwidth(c: &mut Criterion) {
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("bandwidth");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.bench_function("read/1_thread", |b| b.iter(|| read(black_box(&words))));
    let threads = rayon::current_num_threads();
    g.bench_function(format!("read/{threads}_threads"), |b| {
        b.iter(|| {
            words
                .par_chunks(words.len().div_ceil(threads))
                .map(read)
                .reduce(|| 0, u64::wrapping_add)
        })
    });
    g.finish();
}

criterion_group!(benches, bandwidth);
criterion_main!(benches);
