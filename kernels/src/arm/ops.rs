//! aarch64's elementwise kernels: those written once with `wide` (`ops::portable`, NEON here)
//! and RoPE, which needs what `wide` lacks: `ld2`/`st2`, the loads and stores that split
//! interleaved pairs into two vectors.
//!
//! RoPE rounds as `ops::scalar` does (each product, then the sum: no fused multiply-add), so
//! the rotated queries and keys equal the scalar ones bit for bit.

use core::arch::aarch64::*;

use crate::kernel::OpKernels;
use crate::ops::portable;

/// The elementwise kernels of every aarch64 level (NEON is all they need).
pub(crate) const OPS: OpKernels = OpKernels {
    rope_norm,
    rope_neox,
    ..portable::OPS
};

/// The cosines and sines of pairs `i..i + 4`, as two vectors. (Built from the tuples, whose
/// layout Rust does not fix; the compiler turns it into one `ld2`.)
#[inline(always)]
fn angles(cos_sin: &[(f32, f32)], i: usize) -> (float32x4_t, float32x4_t) {
    let t: &[(f32, f32); 4] = cos_sin[i..i + 4].try_into().expect("four pairs");
    let c = [t[0].0, t[1].0, t[2].0, t[3].0];
    let s = [t[0].1, t[1].1, t[2].1, t[3].1];
    // SAFETY: each load reads one array of four f32s.
    unsafe { (vld1q_f32(c.as_ptr()), vld1q_f32(s.as_ptr())) }
}

/// `(a c - b s, a s + b c)`, each product rounded, as the scalar RoPE computes it.
#[inline(always)]
fn rotate(
    a: float32x4_t,
    b: float32x4_t,
    c: float32x4_t,
    s: float32x4_t,
) -> (float32x4_t, float32x4_t) {
    // SAFETY: plain NEON arithmetic (NEON is baseline on aarch64).
    unsafe {
        (
            vsubq_f32(vmulq_f32(a, c), vmulq_f32(b, s)),
            vaddq_f32(vmulq_f32(a, s), vmulq_f32(b, c)),
        )
    }
}

/// `ops::rope_norm`: four pairs at a time, `ld2` splitting `(x[2i], x[2i+1])`.
fn rope_norm(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    let pairs = cos_sin.len();
    assert!(head_dim >= 2 * pairs, "rope_norm: sizes");
    let main = pairs / 4 * 4;
    for head in x.chunks_exact_mut(head_dim) {
        let h = head.as_mut_ptr();
        for i in (0..main).step_by(4) {
            let (c, s) = angles(cos_sin, i);
            // SAFETY: pairs i..i + 4 lie inside the head (i + 4 ≤ pairs, 2 · pairs ≤
            // head_dim).
            unsafe {
                let v = vld2q_f32(h.add(2 * i));
                let (a, b) = rotate(v.0, v.1, c, s);
                vst2q_f32(h.add(2 * i), float32x4x2_t(a, b));
            }
        }
        for (i, &(c, s)) in cos_sin.iter().enumerate().skip(main) {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * c - b * s;
            head[2 * i + 1] = a * s + b * c;
        }
    }
}

/// `ops::rope_neox`: four pairs `(x[i], x[i + n])` at a time.
fn rope_neox(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    let half = cos_sin.len();
    assert!(head_dim >= 2 * half, "rope_neox: sizes");
    let main = half / 4 * 4;
    for head in x.chunks_exact_mut(head_dim) {
        let h = head.as_mut_ptr();
        for i in (0..main).step_by(4) {
            let (c, s) = angles(cos_sin, i);
            // SAFETY: i + 4 ≤ half, so both x[i..i + 4] and x[i + half..i + half + 4] lie in
            // the head (2 · half ≤ head_dim).
            unsafe {
                let (a, b) = (vld1q_f32(h.add(i)), vld1q_f32(h.add(i + half)));
                let (a, b) = rotate(a, b, c, s);
                vst1q_f32(h.add(i), a);
                vst1q_f32(h.add(i + half), b);
            }
        }
        for (i, &(c, s)) in cos_sin.iter().enumerate().skip(main) {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * c - b * s;
            head[i + half] = a * s + b * c;
        }
    }
}
