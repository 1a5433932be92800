//! x86-64 kernels: AVX2 + FMA, with F16C for the `f16` scales and weights.
//!
//! `quantize` holds the activation quantizers, `dot` the dot products of one row (decode),
//! `gemm` the panel kernels (prefill). Every kernel is an `unsafe fn` compiled for AVX2; the
//! safe wrappers below are the only way in, and they are only put in a [`KernelSet`] after
//! the CPU has been seen to have AVX2, FMA and F16C.

use core::arch::x86_64::*;

use crate::table::{GemmKernels, KernelSet, TypeKernels};
use crate::GgmlType::{self, *};

mod dot;
mod gemm;
mod ops;
mod quantize;

/// The x86 kernel sets this CPU runs, best last.
pub(crate) fn sets() -> Vec<KernelSet> {
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        return Vec::new();
    }
    let mut ks = KernelSet::derived(KernelSet::scalar(), "avx2");
    let q80 = w::quantize_q8_0 as fn(&[f32], &mut [u8]);
    let q81 = w::quantize_q8_1 as fn(&[f32], &mut [u8]);
    let q8k = w::quantize_q8_k as fn(&[f32], &mut [u8]);
    let entry = |ty: GgmlType, quantize, dot, gemm| TypeKernels {
        act: ty.vec_dot_type(),
        quantize,
        dot,
        dot_rows: None,
        gemm,
    };
    let g8 = |tile| {
        Some(GemmKernels {
            panel: gemm::PANEL,
            panel_bytes: gemm::panel_bytes_q8,
            pack: gemm::pack_q8_0,
            tile,
        })
    };
    ks.set(Q4_0, entry(Q4_0, q80, w::dot_q4_0, g8(w::tile_q4_0)));
    ks.set(Q5_0, entry(Q5_0, q80, w::dot_q5_0, g8(w::tile_q5_0)));
    ks.set(Q8_0, entry(Q8_0, q80, w::dot_q8_0, g8(w::tile_q8_0)));
    let g81 = Some(GemmKernels {
        panel: gemm::PANEL,
        panel_bytes: gemm::panel_bytes_q8,
        pack: gemm::pack_q8_1,
        tile: w::tile_q4_1,
    });
    ks.set(Q4_1, entry(Q4_1, q81, w::dot_q4_1, g81));
    let gk = |tile| {
        Some(GemmKernels {
            panel: gemm::PANEL,
            panel_bytes: gemm::panel_bytes_q8_k,
            pack: gemm::pack_q8_k,
            tile,
        })
    };
    ks.set(Q4_K, entry(Q4_K, q8k, w::dot_q4_k, gk(w::tile_q4_k)));
    ks.set(Q6_K, entry(Q6_K, q8k, w::dot_q6_k, gk(w::tile_q6_k)));
    let gf = |pack, tile| {
        Some(GemmKernels {
            panel: gemm::PANEL,
            panel_bytes: gemm::panel_bytes_f32,
            pack,
            tile,
        })
    };
    ks.set(
        F32,
        entry(
            F32,
            crate::quant::float::quantize_f32,
            w::dot_f32,
            gf(gemm::pack_f32, w::tile_f32),
        ),
    );
    ks.set(
        F16,
        entry(
            F16,
            w::quantize_f16,
            w::dot_f16,
            gf(gemm::pack_f16, w::tile_f16),
        ),
    );
    for (ty, f) in [
        (Q4_0, w::rows_q4_0 as crate::table::DotRowsFn),
        (Q4_1, w::rows_q4_1),
        (Q5_0, w::rows_q5_0),
        (Q8_0, w::rows_q8_0),
    ] {
        let mut k = *ks.get(ty);
        k.dot_rows = Some(f);
        ks.set(ty, k);
    }
    ks.set_ops(crate::ops::OpKernels {
        rms_norm: w::rms_norm,
        softmax: w::softmax,
        swiglu: w::swiglu,
        dot_rows: w::dot_rows,
        axpy_rows: w::axpy_rows,
        exp_sum: w::exp_sum,
    });
    // Q8_K pairs with itself; its quantizer serves the k-quants that keep scalar dots.
    for ty in [Q2_K, Q3_K, Q5_K] {
        let mut k = *ks.get(ty);
        k.quantize = q8k;
        ks.set(ty, k);
    }
    vec![ks]
}

/// Safe entry points. Each checks the sizes its kernel relies on; the CPU features were
/// checked by [`sets`], the only code that hands these out.
mod w {
    use super::{dot, gemm, quantize};

    macro_rules! wrap {
        ($($name:ident: $inner:path, $check:expr;)*) => {$(
            pub(super) fn $name(src: &[f32], dst: &mut [u8]) {
                assert!($check(src.len(), dst.len()), "{}: sizes", stringify!($name));
                // SAFETY: AVX2/FMA/F16C are present (see `sets`); sizes checked above.
                unsafe { $inner(src, dst) }
            }
        )*};
    }
    wrap! {
        quantize_q8_0: quantize::q8_0, |n: usize, b: usize| n.is_multiple_of(32) && b == n / 32 * 34;
        quantize_q8_1: quantize::q8_1, |n: usize, b: usize| n.is_multiple_of(32) && b == n / 32 * 36;
        quantize_q8_k: quantize::q8_k, |n: usize, b: usize| n.is_multiple_of(256) && b == n / 256 * 292;
        quantize_f16: quantize::f16, |n: usize, b: usize| b == 2 * n;
    }

    pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        assert!(
            w.len() >= x.len() && out.len() >= x.len(),
            "rms_norm: sizes"
        );
        // SAFETY: AVX2/FMA are present (see `sets`); sizes checked above.
        unsafe { super::ops::rms_norm(x, w, eps, out) }
    }

    pub(super) fn softmax(x: &mut [f32]) {
        // SAFETY: AVX2/FMA are present (see `sets`).
        unsafe { super::ops::softmax(x) }
    }

    pub(super) fn swiglu(gate: &mut [f32], up: &[f32]) {
        assert!(up.len() >= gate.len(), "swiglu: sizes");
        // SAFETY: AVX2/FMA are present (see `sets`); sizes checked above.
        unsafe { super::ops::swiglu(gate, up) }
    }

    pub(super) fn dot_rows(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
        // SAFETY: AVX2/FMA are present (see `sets`); `ops::dot_rows` checked that the rows
        // lie inside `rows`.
        unsafe { super::ops::dot_rows(q, rows, stride, out) }
    }

    pub(super) fn axpy_rows(p: &[f32], rows: &[f32], stride: usize, y: &mut [f32]) {
        // SAFETY: as for `dot_rows`.
        unsafe { super::ops::axpy_rows(p, rows, stride, y) }
    }

    pub(super) fn exp_sum(x: &mut [f32], max: f32) -> f32 {
        // SAFETY: AVX2/FMA are present (see `sets`); the kernel stays within the slice.
        unsafe { super::ops::exp_sum(x, max) }
    }

    macro_rules! wrap_dot {
        ($($name:ident: $inner:path, $bl:expr, $wb:expr, $ab:expr;)*) => {$(
            pub(super) fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
                assert!(
                    n.is_multiple_of($bl) && w.len() == n / $bl * $wb && a.len() == n / $bl * $ab,
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: AVX2/FMA/F16C are present (see `sets`); sizes checked above.
                unsafe { $inner(n, w, a) }
            }
        )*};
    }
    wrap_dot! {
        dot_q4_0: dot::q4_0, 32, 18, 34;
        dot_q4_1: dot::q4_1, 32, 20, 36;
        dot_q5_0: dot::q5_0, 32, 22, 34;
        dot_q8_0: dot::q8_0, 32, 34, 34;
        dot_q4_k: dot::q4_k, 256, 144, 292;
        dot_q6_k: dot::q6_k, 256, 210, 292;
        dot_f16: dot::f16, 1, 2, 2;
        dot_f32: dot::f32, 1, 4, 4;
    }

    macro_rules! wrap_rows {
        ($($name:ident: $k:path, $wb:expr, $ab:expr;)*) => {$(
            pub(super) fn $name(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                assert!(
                    cols.is_multiple_of(32)
                        && w.len() == out.len() * cols / 32 * $wb
                        && a.len() == cols / 32 * $ab,
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: AVX2/FMA/F16C are present (see `sets`); sizes checked above.
                unsafe { dot::rows_legacy::<{ $k }>(cols, w, a, out) }
            }
        )*};
    }
    wrap_rows! {
        rows_q4_0: dot::Q4_0, 18, 34;
        rows_q4_1: dot::Q4_1, 20, 36;
        rows_q5_0: dot::Q5_0, 22, 34;
        rows_q8_0: dot::Q8_0, 34, 34;
    }

    macro_rules! wrap_tile {
        ($($name:ident: $inner:path, $bl:expr, $wb:expr, $pb:path;)*) => {$(
            pub(super) fn $name(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
                let (rb, pb) = (cols / $bl * $wb, $pb(cols));
                assert!(
                    cols.is_multiple_of($bl) && rb > 0 && w.len().is_multiple_of(rb) && panels.len().is_multiple_of(pb)
                        && out.len() == w.len() / rb * panels.len() / pb * gemm::PANEL,
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: AVX2/FMA/F16C are present (see `sets`); sizes checked above.
                unsafe { $inner(cols, w, panels, out) }
            }
        )*};
    }
    wrap_tile! {
        tile_q4_0: gemm::tile_q4_0, 32, 18, gemm::panel_bytes_q8;
        tile_q4_1: gemm::tile_q4_1, 32, 20, gemm::panel_bytes_q8;
        tile_q5_0: gemm::tile_q5_0, 32, 22, gemm::panel_bytes_q8;
        tile_q8_0: gemm::tile_q8_0, 32, 34, gemm::panel_bytes_q8;
        tile_q4_k: gemm::tile_q4_k, 256, 144, gemm::panel_bytes_q8_k;
        tile_q6_k: gemm::tile_q6_k, 256, 210, gemm::panel_bytes_q8_k;
        tile_f32: gemm::tile_f32, 1, 4, gemm::panel_bytes_f32;
        tile_f16: gemm::tile_f16, 1, 2, gemm::panel_bytes_f32;
    }
}

// Small helpers shared by the kernels. All are `#[inline]` AVX2 functions, so they inline
// into the kernels that call them.

/// 32 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// 16 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p.cast())
}

/// The `f16` at `p` as `f32`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = p.cast::<u16>().read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 16 packed nibbles as 32 bytes: the low nibbles first, then the high ones (ggml's
/// order for Q4_0/Q4_1/Q5_0, where byte `j` holds values `j` and `j + 16`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let x = load128(p);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(x, m);
    let hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
    _mm256_set_m128i(hi, lo)
}

/// The 32 bits at `p` as 32 bytes, `0xFF` where the bit is set (bit `i` to byte `i`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
    let bits = p.cast::<u32>().read_unaligned() as i32;
    // Byte i takes the byte of `bits` that holds bit i, then tests that bit.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
}

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The sum of the eight `i32` lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// Sum of `x[i] * y[i]` over 32 signed bytes, in eight `i32` lanes (ggml's sign trick:
/// `maddubs` wants an unsigned left side, so `|x|` times `y` with `x`'s sign).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// Sum of `x[i] * y[i]` with `x` unsigned and `y` signed, in eight `i32` lanes; `x` small
/// enough that no pair sum saturates `i16` (4-bit quants).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_u8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// The six-bit scales and mins of a Q4_K block: `(scales, mins)`, eight bytes each (see
/// `quant::kquants::scale_min_k4` for the layout).
#[inline]
fn q4k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    let top = |x: u32| ((x >> 6) & 0x0303_0303) << 4;
    let sc_lo = a & 0x3F3F_3F3F;
    let sc_hi = (c & 0x0F0F_0F0F) | top(a);
    let m_lo = b & 0x3F3F_3F3F;
    let m_hi = ((c >> 4) & 0x0F0F_0F0F) | top(b);
    let join = |lo: u32, hi: u32| (lo as u64 | (hi as u64) << 32).to_le_bytes();
    (join(sc_lo, sc_hi), join(m_lo, m_hi))
}
