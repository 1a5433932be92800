//! NEON activation quantizers, byte for byte the same as the scalar reference
//! (`quant::quantize`, which follows ggml's `quantize_row_*_ref`). A block holding a NaN or
//! an infinity goes through the reference itself, so that even those bytes match.
//!
//! # Safety
//! Every function needs NEON (every aarch64 CPU) and the sizes the wrappers in `arm/mod.rs`
//! check: whole blocks in, the matching number of bytes out.

use core::arch::aarch64::*;

use crate::quant::{f32_to_f16, quantize};
use crate::quant::{BlockQ8_0, BlockQ8_1, BlockQ8_K};
use crate::GgmlType;
use crate::QK_K;

/// Sixteen integral values (four vectors, in `-128..=127` or saturated to it) as bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn narrow16(v: [int32x4_t; 4]) -> int8x16_t {
    let lo = vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]));
    let hi = vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3]));
    vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
}

/// `max |x|` over `n` values at `x` (`n` a multiple of 4); NaN if any value is NaN.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn amax(x: *const f32, n: usize) -> f32 {
    let mut m = vdupq_n_f32(0.0);
    for i in (0..n).step_by(4) {
        m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x.add(i))));
    }
    vmaxvq_f32(m)
}

/// One 32-value block at `x` as Q8_0 quants at `q`: `round(x / d)` half away from zero
/// (`fcvtas`, C's `roundf`) with `d = amax / 127`. Returns `(d, Σ q)`, or `None` where the
/// block is not finite (the caller takes the reference).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q8_block(x: *const f32, q: *mut i8) -> Option<(f32, i32)> {
    let m = amax(x, 32);
    if !m.is_finite() {
        return None;
    }
    let d = m / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // `fcvtas` saturates like Rust's `as` (an infinite `x * id` where `d` is subnormal), and
    // the saturating narrows keep it so.
    let r: [int32x4_t; 8] =
        core::array::from_fn(|i| vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(x.add(4 * i)), id)));
    let lo = narrow16([r[0], r[1], r[2], r[3]]);
    let hi = narrow16([r[4], r[5], r[6], r[7]]);
    vst1q_s8(q, lo);
    vst1q_s8(q.add(16), hi);
    Some((d, vaddlvq_s8(lo) as i32 + vaddlvq_s8(hi) as i32))
}

/// Q8_0: `d` as `f16`, then 32 quants.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_0(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(32)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ8_0>()))
    {
        match q8_block(x.as_ptr(), out.as_mut_ptr().add(2).cast()) {
            Some((d, _)) => out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes()),
            None => quantize(GgmlType::Q8_0, x, out),
        }
    }
}

/// Q8_1: as Q8_0, plus `s = f16(Σ q · d)` with the `f32` `d`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_1(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(32)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ8_1>()))
    {
        match q8_block(x.as_ptr(), out.as_mut_ptr().add(4).cast()) {
            Some((d, sum)) => {
                out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                out[2..4].copy_from_slice(&f32_to_f16(sum as f32 * d).to_le_bytes());
            }
            None => quantize(GgmlType::Q8_1, x, out),
        }
    }
}

/// `x · s` rounded once to the nearest integer, ties to even, as if the product were exact
/// (the reference rounds the exact `f64` product): the rounded `f32` product decides, but
/// where it is exactly halfway the product's rounding error (from an FMA) breaks the tie.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn round_exact_product(x: float32x4_t, s: float32x4_t) -> float32x4_t {
    let hi = vmulq_f32(x, s);
    let err = vfmsq_f32(hi, x, s); // hi - x·s, exactly
    let fl = vrndmq_f32(hi);
    let tie = vceqq_f32(vsubq_f32(hi, fl), vdupq_n_f32(0.5));
    let above = vcltq_f32(err, vdupq_n_f32(0.0)); // the exact product is above `hi`
    let below = vcgtq_f32(err, vdupq_n_f32(0.0));
    let dir = vbslq_f32(above, vaddq_f32(fl, vdupq_n_f32(1.0)), fl);
    vbslq_f32(vandq_u32(tie, vorrq_u32(above, below)), dir, vrndnq_f32(hi))
}

/// Q8_K: the value of largest magnitude (the first, on ties) maps to -127; `d` is `f32`;
/// `bsums` sums each 16 quants.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_k(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ8_K>()))
    {
        let m = amax(x.as_ptr(), QK_K);
        if !m.is_finite() || m == 0.0 {
            quantize(GgmlType::Q8_K, x, out);
            continue;
        }
        let max = x.iter().copied().find(|v| v.abs() == m).unwrap_or(m);
        let iscale = -127.0 / max;
        let s = vdupq_n_f32(iscale);
        let q = out.as_mut_ptr().add(4).cast::<i8>();
        for g in 0..QK_K / 16 {
            let v: [int32x4_t; 4] = core::array::from_fn(|i| {
                let r = round_exact_product(vld1q_f32(x.as_ptr().add(16 * g + 4 * i)), s);
                vcvtnq_s32_f32(vminq_f32(r, vdupq_n_f32(127.0)))
            });
            let bytes = narrow16(v);
            vst1q_s8(q.add(16 * g), bytes);
            let o = 4 + QK_K + 2 * g;
            out[o..o + 2].copy_from_slice(&vaddlvq_s8(bytes).to_le_bytes());
        }
        out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
