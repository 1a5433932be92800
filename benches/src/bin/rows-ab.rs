//! The multi-row decode kernels against the one-row dot of the same kernel set, at
//! Qwen2.5-Coder-1.5B's shapes (q/o, feed-forward up and down, k/v), for every weight type
//! that has both. One thread; the two alternate, and each is timed in the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), not wall time, so that on a loaded machine time spent waiting
//! for a core does not count: the ratio is the figure, the GB/s only roughly (the matrices
//! stay in the L2/L3 caches).
//!
//! `cargo run --release -p tern-benches --bin rows-ab` (Linux).

use tern_benches::weights;
use tern_kernels::GgmlType::*;

/// `struct timespec` of 64-bit Linux.
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// Seconds of CPU time this thread has run.
fn thread_cpu_time() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable `timespec`; the clock id is Linux's.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.sec as f64 + t.nsec as f64 / 1e9
}

fn main() {
    let ks = tern_kernels::kernels();
    println!("kernel set: {}", ks.name());
    for ty in [Q4_K, Q6_K, Q5_0, Q8_0, Q4_0, Q4_1] {
        let k = ks.get(ty);
        let Some(dot_rows) = k.dot_rows else { continue };
        for (rows, cols) in [(1536, 1536), (8960, 1536), (1536, 8960), (256, 1536)] {
            let w = weights(ty, rows, cols);
            let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
            let mut a = vec![0u8; k.act.bytes_for(cols as u64).unwrap() as usize];
            (k.quantize)(&x, &mut a);
            let rb = w.len() / rows;
            let mut out = vec![0f32; rows];
            let reps = (2_000_000_000 / w.len()).clamp(3, 200);
            let (mut one, mut many) = (f64::MAX, f64::MAX);
            for _ in 0..7 {
                let t = thread_cpu_time();
                for _ in 0..reps {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = (k.dot)(cols, &w[r * rb..(r + 1) * rb], &a);
                    }
                }
                one = one.min((thread_cpu_time() - t) / reps as f64);
                let t = thread_cpu_time();
                for _ in 0..reps {
                    // 16 rows a call, as `matmul` hands them out.
                    for r0 in (0..rows).step_by(16) {
                        let r1 = (r0 + 16).min(rows);
                        dot_rows(cols, &w[r0 * rb..r1 * rb], &a, &mut out[r0..r1]);
                    }
                }
                many = many.min((thread_cpu_time() - t) / reps as f64);
            }
            let gb = w.len() as f64 / 1e9;
            println!(
                "{ty:5} {rows:5}x{cols:<5}: dot {:5.1} GB/s, dot_rows {:5.1} GB/s, x{:.2}",
                gb / one,
                gb / many,
                one / many
            );
        }
    }
}
