//! Activation quantizers, byte for byte the same as the scalar reference
//! (`quant::quantize`), which follows ggml's `quantize_row_*_ref`. A block holding a NaN or
//! an infinity, or values so small that the inverse scale overflows, goes through the
//! reference itself (where `cvtps2dq` would give `i32::MIN` for what Rust's `as` saturates),
//! so that even those bytes match.

use core::arch::x86_64::*;

use crate::quant::{f32_to_f16, legacy::QK, quantize};
use crate::quant::{BlockQ8_0, BlockQ8_1, BlockQ8_K};
use crate::{GgmlType, QK_K};

/// `round(x)` half away from zero (C's `roundf`), exactly: the truncation plus one step
/// toward the sign where the dropped fraction is at least one half.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round_away(x: __m256) -> __m256 {
    let t = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    let frac = _mm256_sub_ps(x, t); // exact: x and t share the exponent's range
    let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), frac);
    let step = _mm256_or_ps(
        _mm256_set1_ps(1.0),
        _mm256_and_ps(x, _mm256_set1_ps(-0.0)), // ±1 with x's sign
    );
    let half = _mm256_cmp_ps(abs, _mm256_set1_ps(0.5), _CMP_GE_OQ);
    _mm256_add_ps(t, _mm256_and_ps(half, step))
}

/// 32 integral floats in `-128..=127` (four vectors) as 32 bytes in order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pack_i8(v: [__m256; 4]) -> __m256i {
    let i = v.map(|x| _mm256_cvtps_epi32(x));
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let c = _mm256_packs_epi16(a, b);
    // The packs interleave 128-bit lanes: restore the order of the 32-bit groups.
    _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Whether any lane of `v` is a NaN (`max` drops them).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn any_nan(v: &[__m256]) -> bool {
    v.iter()
        .any(|&x| _mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)) != 0)
}

/// `max |x|` over 32 values (four vectors).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn amax32(v: &[__m256; 4]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let m = v
        .iter()
        .map(|&x| _mm256_andnot_ps(sign, x))
        .reduce(|a, b| _mm256_max_ps(a, b))
        .unwrap_or(_mm256_setzero_ps());
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Quantizes one 32-value block at `x` to its quants at `q`, returning `(d, sum of quants)`,
/// or `None` where the block or its inverse scale is not finite (the caller takes the
/// reference).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q8_block(x: *const f32, q: *mut u8) -> Option<(f32, i32)> {
    let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.add(o)));
    let d = amax32(&v) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() || !d.is_finite() || any_nan(&v) {
        return None;
    }
    let idv = _mm256_set1_ps(id);
    let r = v.map(|x| round_away(_mm256_mul_ps(x, idv)));
    let bytes = pack_i8(r);
    _mm256_storeu_si256(q.cast(), bytes);
    let sums = _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes),
        _mm256_set1_epi16(1),
    );
    Some((d, super::hsum_i32(sums)))
}

/// Q8_0: `d = amax / 127` as `f16`, quants `round(x / d)`.
///
/// # Safety
/// AVX2; `src.len()` a multiple of 32 and `dst.len() == src.len() / 32 * 34`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ8_0>()))
    {
        match q8_block(x.as_ptr(), out.as_mut_ptr().add(2)) {
            Some((d, _)) => out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes()),
            None => quantize(GgmlType::Q8_0, x, out),
        }
    }
}

/// Q8_1: as Q8_0, plus `s = f16(sum(q) * d)`.
///
/// # Safety
/// AVX2; `src.len()` a multiple of 32 and `dst.len() == src.len() / 32 * 36`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_1(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ8_1>()))
    {
        match q8_block(x.as_ptr(), out.as_mut_ptr().add(4)) {
            Some((d, sum)) => {
                out[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                out[2..4].copy_from_slice(&f32_to_f16(sum as f32 * d).to_le_bytes());
            }
            None => quantize(GgmlType::Q8_1, x, out),
        }
    }
}

/// `x * s` rounded once to the nearest integer, ties to even, as if the product were exact
/// (the reference rounds the exact `f64` product): the rounded `f32` product decides but
/// where it is exactly halfway, the product's rounding error (from an FMA) breaks the tie.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn round_exact_product(x: __m256, s: __m256) -> __m256 {
    let hi = _mm256_mul_ps(x, s);
    let lo = _mm256_fmsub_ps(x, s, hi); // x * s - hi, exactly
    let ne = _mm256_round_ps(hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    let fl = _mm256_floor_ps(hi);
    let tie = _mm256_cmp_ps(_mm256_sub_ps(hi, fl), _mm256_set1_ps(0.5), _CMP_EQ_OQ);
    let zero = _mm256_setzero_ps();
    let up = _mm256_cmp_ps(lo, zero, _CMP_GT_OQ);
    let down = _mm256_cmp_ps(lo, zero, _CMP_LT_OQ);
    let dir = _mm256_blendv_ps(fl, _mm256_add_ps(fl, _mm256_set1_ps(1.0)), up);
    _mm256_blendv_ps(ne, dir, _mm256_and_ps(tie, _mm256_or_ps(up, down)))
}

/// Q8_K: the value of largest magnitude (the first, on ties) maps to -127; `d` is `f32`;
/// `bsums` sums each 16 quants.
///
/// # Safety
/// AVX2/FMA; `src.len()` a multiple of 256 and `dst.len() == src.len() / 256 * 292`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_k(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(size_of::<BlockQ8_K>()))
    {
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        let mut nan = false;
        for i in (0..QK_K).step_by(8) {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            nan |= any_nan(&[v]);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        if nan || amax == 0.0 || !amax.is_finite() || !iscale.is_finite() {
            quantize(GgmlType::Q8_K, x, out);
            continue;
        }
        let s = _mm256_set1_ps(iscale);
        let q = out.as_mut_ptr().add(4);
        for i in (0..QK_K).step_by(32) {
            let v = [0, 8, 16, 24].map(|o| {
                let r = round_exact_product(_mm256_loadu_ps(x.as_ptr().add(i + o)), s);
                _mm256_min_ps(r, _mm256_set1_ps(127.0))
            });
            let bytes = pack_i8(v);
            _mm256_storeu_si256(q.add(i).cast(), bytes);
            // Sums of each 16 quants: pairs, then quads, then the two halves of each lane.
            let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes);
            let s16 = _mm256_hadd_epi16(pairs, pairs); // per lane: 4 sums of 4, twice
            let s16 = _mm256_hadd_epi16(s16, s16); // per lane: 2 sums of 8
            let s16 = _mm256_hadd_epi16(s16, s16); // per lane: the sum of 16
            let lo = _mm256_extract_epi16(s16, 0) as i16;
            let hi = _mm256_extract_epi16(s16, 8) as i16;
            let b = 4 + QK_K + 2 * (i / 16);
            out[b..b + 2].copy_from_slice(&lo.to_le_bytes());
            out[b + 2..b + 4].copy_from_slice(&hi.to_le_bytes());
        }
        out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// `f16` rounding to nearest even (`vcvtps2ph`), as `quant::f32_to_f16` does for every
/// non-NaN value; NaNs go through the reference so their bits match.
///
/// # Safety
/// F16C; `dst.len() == 2 * src.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16(src: &[f32], dst: &mut [u8]) {
    let mut chunks = src.chunks_exact(8);
    let mut i = 0;
    for x in &mut chunks {
        let v = _mm256_loadu_ps(x.as_ptr());
        if _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0 {
            crate::quant::float::quantize_f16(x, &mut dst[2 * i..2 * i + 16]);
        } else {
            let h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
            _mm_storeu_si128(dst.as_mut_ptr().add(2 * i).cast(), h);
        }
        i += 8;
    }
    crate::quant::float::quantize_f16(chunks.remainder(), &mut dst[2 * i..]);
}
