//! Throwaway (not committed): per-row dot vs dot_rows, one thread, alternating.
#[repr(C)]
struct Ts {
    s: i64,
    ns: i64,
}
extern "C" {
    fn clock_gettime(clk: i32, tp: *mut Ts) -> i32;
}
fn cpu_time() -> f64 {
    let mut t = Ts { s: 0, ns: 0 };
    unsafe { clock_gettime(3, &mut t) };
    t.s as f64 + t.ns as f64 / 1e9
}
struct Instant(f64);
impl Instant {
    fn now() -> Self {
        Instant(cpu_time())
    }
    fn elapsed(&self) -> Dur {
        Dur(cpu_time() - self.0)
    }
}
struct Dur(f64);
impl Dur {
    fn as_secs_f64(&self) -> f64 {
        self.0
    }
}
use tern_kernels::GgmlType::{self, *};

fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut w: Vec<u8> = (0..ty.bytes_for((rows * cols) as u64).unwrap())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let offs: &[usize] = if ty == Q4_K { &[0, 2] } else { &[208] };
    for blk in w.chunks_exact_mut(ty.block_bytes()) {
        for &o in offs {
            blk[o..o + 2].copy_from_slice(&scale);
        }
    }
    w
}

fn main() {
    let ks = tern_kernels::kernels();
    for ty in [Q4_K, Q6_K] {
        for (rows, cols) in [(1536, 1536), (8960, 1536), (1536, 8960), (256, 1536)] {
            let w = weights(ty, rows, cols);
            let k = ks.get(ty);
            let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
            let mut a = vec![0u8; k.act.bytes_for(cols as u64).unwrap() as usize];
            (k.quantize)(&x, &mut a);
            let rb = w.len() / rows;
            let mut out = vec![0f32; rows];
            let (mut t1, mut t2) = (f64::MAX, f64::MAX);
            let reps = (2_000_000_000 / w.len()).clamp(3, 200);
            for _ in 0..7 {
                let t = Instant::now();
                for _ in 0..reps {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = (k.dot)(cols, &w[r * rb..(r + 1) * rb], &a);
                    }
                }
                t1 = t1.min(t.elapsed().as_secs_f64() / reps as f64);
                let t = Instant::now();
                for _ in 0..reps {
                    for r0 in (0..rows).step_by(16) {
                        let r1 = (r0 + 16).min(rows);
                        (k.dot_rows.unwrap())(cols, &w[r0 * rb..r1 * rb], &a, &mut out[r0..r1]);
                    }
                }
                t2 = t2.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            let gb = w.len() as f64 / 1e9;
            println!(
                "{ty} {rows}x{cols} ({:.1} MB): dot {:.1} GB/s, dot_rows {:.1} GB/s, x{:.2}",
                w.len() as f64 / 1e6,
                gb / t1,
                gb / t2,
                t1 / t2
            );
        }
    }
}
