//! x86-64 kernels: AVX2 + FMA, with F16C for the `f16` scales and weights.
//!
//! `quantize` holds the activation quantizers, `dot` the dot products of one row (decode),
//! `gemm` the panel kernels (prefill). Every kernel is an `unsafe fn` compiled for AVX2; the
//! safe wrappers below are the only way in, and the kernel table (`table.rs`) puts them only
//! in the avx2 set and the avxvnni set above it (which inherits them), which `cpu::levels`
//! offers only where the CPU has AVX2, FMA and F16C. The panel kernels named `vnni_*` use
//! AVX-VNNI's `vpdpbusd` and `vpdpwssd` as well, and are only in the avxvnni set, offered
//! only where the CPU also has AVX-VNNI.

use core::arch::x86_64::*;

use crate::kernel::{GemmKernels, OpKernels};

mod dot;
mod gemm;
mod ops;
mod quantize;

pub(crate) use w::*;

/// Panel kernels over Q8_0 activations.
pub(crate) const fn gemm_q8_0(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: gemm::PANEL,
        panel_bytes: gemm::panel_bytes_q8,
        pack: gemm::pack_q8_0,
        tile,
    }
}

/// Panel kernels over Q8_1 activations.
pub(crate) const fn gemm_q8_1(tile: TileFn) -> GemmKernels {
    GemmKernels {
        pack: gemm::pack_q8_1,
        ..gemm_q8_0(tile)
    }
}

/// Panel kernels over Q8_K activations.
pub(crate) const fn gemm_q8_k(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: gemm::PANEL,
        panel_bytes: gemm::panel_bytes_q8_k,
        pack: gemm::pack_q8_k,
        tile,
    }
}

/// Panel kernels over F32 activations.
pub(crate) const fn gemm_f32(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: gemm::PANEL,
        panel_bytes: gemm::panel_bytes_f32,
        pack: gemm::pack_f32,
        tile,
    }
}

/// Panel kernels over F16 activations (unpacked to `f32` in the panel).
pub(crate) const fn gemm_f16(tile: TileFn) -> GemmKernels {
    GemmKernels {
        pack: gemm::pack_f16,
        ..gemm_f32(tile)
    }
}

type TileFn = fn(usize, &[u8], &[u8], &mut [f32]);

/// The elementwise kernels: AVX2 intrinsics, but for GeGLU (`wide`'s four SSE2 lanes, which
/// beat the scalar version) and RoPE (scalar). `cargo bench -p tern-benches --bench ops`
/// compares them.
pub(crate) const OPS: OpKernels = OpKernels {
    rms_norm: w::rms_norm,
    softmax: w::softmax,
    swiglu: w::swiglu,
    dot_rows: w::dot_rows,
    axpy_rows: w::axpy_rows,
    exp_sum: w::exp_sum,
    geglu: crate::ops::portable::geglu,
    rope_norm: crate::ops::scalar::rope_norm,
    rope_neox: crate::ops::scalar::rope_neox,
};

/// Safe entry points. Each checks the sizes its kernel relies on, from the block types'
/// lengths and sizes; the CPU features were checked by `cpu::levels`, and the table hands
/// these out only in the avx2 set.
mod w {
    use super::{dot, gemm, quantize};
    use crate::quant::{Block, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_K, BlockQ6_K};
    use crate::quant::{BlockQ8_0, BlockQ8_1, BlockQ8_K};
    use half::f16;

    /// Whether `n` values fill whole blocks of `B` and `bytes` is their size.
    fn fits<B: Block>(n: usize, bytes: usize) -> bool {
        n.is_multiple_of(B::LEN) && bytes == n / B::LEN * size_of::<B>()
    }

    macro_rules! wrap_quantize {
        ($($name:ident: $inner:path, $b:ty;)*) => {$(
            pub(crate) fn $name(src: &[f32], dst: &mut [u8]) {
                assert!(fits::<$b>(src.len(), dst.len()), "{}: sizes", stringify!($name));
                // SAFETY: AVX2/FMA/F16C are present (see `cpu::levels`); sizes checked above.
                unsafe { $inner(src, dst) }
            }
        )*};
    }
    wrap_quantize! {
        quantize_q8_0: quantize::q8_0, BlockQ8_0;
        quantize_q8_1: quantize::q8_1, BlockQ8_1;
        quantize_q8_k: quantize::q8_k, BlockQ8_K;
    }

    pub(crate) fn quantize_f16(src: &[f32], dst: &mut [u8]) {
        assert!(
            dst.len() == src.len() * size_of::<f16>(),
            "quantize_f16: sizes"
        );
        // SAFETY: AVX2/FMA/F16C are present (see `cpu::levels`); sizes checked above.
        unsafe { quantize::f16(src, dst) }
    }

    pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        assert!(
            w.len() >= x.len() && out.len() >= x.len(),
            "rms_norm: sizes"
        );
        // SAFETY: AVX2/FMA are present (see `cpu::levels`); sizes checked above.
        unsafe { super::ops::rms_norm(x, w, eps, out) }
    }

    pub(crate) fn softmax(x: &mut [f32]) {
        // SAFETY: AVX2/FMA are present (see `cpu::levels`).
        unsafe { super::ops::softmax(x) }
    }

    pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
        assert!(up.len() >= gate.len(), "swiglu: sizes");
        // SAFETY: AVX2/FMA are present (see `cpu::levels`); sizes checked above.
        unsafe { super::ops::swiglu(gate, up) }
    }

    pub(crate) fn dot_rows(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
        // SAFETY: AVX2/FMA are present (see `cpu::levels`); `ops::dot_rows` checked that the
        // rows lie inside `rows`.
        unsafe { super::ops::dot_rows(q, rows, stride, out) }
    }

    pub(crate) fn axpy_rows(p: &[f32], rows: &[f32], stride: usize, y: &mut [f32]) {
        // SAFETY: as for `dot_rows`.
        unsafe { super::ops::axpy_rows(p, rows, stride, y) }
    }

    pub(crate) fn exp_sum(x: &mut [f32], max: f32) -> f32 {
        // SAFETY: AVX2/FMA are present (see `cpu::levels`); the kernel stays within the slice.
        unsafe { super::ops::exp_sum(x, max) }
    }

    macro_rules! wrap_dot {
        ($($name:ident: $inner:path, $w:ty, $a:ty;)*) => {$(
            pub(crate) fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
                assert!(
                    fits::<$w>(n, w.len()) && fits::<$a>(n, a.len()),
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: AVX2/FMA/F16C are present (see `cpu::levels`); sizes checked above.
                unsafe { $inner(n, w, a) }
            }
        )*};
    }
    wrap_dot! {
        dot_q4_0: dot::q4_0, BlockQ4_0, BlockQ8_0;
        dot_q4_1: dot::q4_1, BlockQ4_1, BlockQ8_1;
        dot_q5_0: dot::q5_0, BlockQ5_0, BlockQ8_0;
        dot_q8_0: dot::q8_0, BlockQ8_0, BlockQ8_0;
        dot_q4_k: dot::q4_k, BlockQ4_K, BlockQ8_K;
        dot_q5_k: dot::q5_k, BlockQ5_K, BlockQ8_K;
        dot_q6_k: dot::q6_k, BlockQ6_K, BlockQ8_K;
    }

    pub(crate) fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let bytes = n * size_of::<f16>();
        assert!(w.len() == bytes && a.len() == bytes, "dot_f16: sizes");
        // SAFETY: AVX2/FMA/F16C are present (see `cpu::levels`); sizes checked above.
        unsafe { dot::f16(n, w, a) }
    }

    pub(crate) fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let bytes = n * size_of::<f32>();
        assert!(w.len() == bytes && a.len() == bytes, "dot_f32: sizes");
        // SAFETY: AVX2/FMA are present (see `cpu::levels`); sizes checked above.
        unsafe { dot::f32(n, w, a) }
    }

    macro_rules! wrap_rows {
        ($($name:ident: $k:expr, $w:ty, $a:ty;)*) => {$(
            pub(crate) fn $name(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                let rb = cols / <$w>::LEN * size_of::<$w>();
                assert!(
                    cols.is_multiple_of(<$w>::LEN)
                        && w.len() == out.len() * rb
                        && fits::<$a>(cols, a.len()),
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: AVX2/FMA/F16C are present (see `cpu::levels`); sizes checked above.
                unsafe { $k(cols, w, a, out) }
            }
        )*};
    }
    wrap_rows! {
        rows_q4_0: dot::rows_legacy::<{ dot::Q4_0 }>, BlockQ4_0, BlockQ8_0;
        rows_q4_1: dot::rows_legacy::<{ dot::Q4_1 }>, BlockQ4_1, BlockQ8_1;
        rows_q5_0: dot::rows_legacy::<{ dot::Q5_0 }>, BlockQ5_0, BlockQ8_0;
        rows_q8_0: dot::rows_legacy::<{ dot::Q8_0 }>, BlockQ8_0, BlockQ8_0;
        rows_q4_k: dot::rows_q4_k, BlockQ4_K, BlockQ8_K;
        rows_q5_k: dot::rows_q5_k, BlockQ5_K, BlockQ8_K;
        rows_q6_k: dot::rows_q6_k, BlockQ6_K, BlockQ8_K;
    }

    /// Whether `w` is whole rows of `row_bytes` bytes, `panels` whole panels of
    /// `panel_bytes`, and `out` one result per row, panel and token.
    fn tile_fits(
        row_bytes: usize,
        panel_bytes: usize,
        w: &[u8],
        panels: &[u8],
        out: &[f32],
    ) -> bool {
        row_bytes > 0
            && panel_bytes > 0
            && w.len().is_multiple_of(row_bytes)
            && panels.len().is_multiple_of(panel_bytes)
            && out.len() == w.len() / row_bytes * (panels.len() / panel_bytes) * gemm::PANEL
    }

    macro_rules! wrap_tile {
        ($($name:ident: $inner:path, $w:ty, $pb:path;)*) => {$(
            pub(crate) fn $name(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
                let rb = cols / <$w>::LEN * size_of::<$w>();
                assert!(
                    cols.is_multiple_of(<$w>::LEN) && tile_fits(rb, $pb(cols), w, panels, out),
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: AVX2/FMA/F16C are present (see `cpu::levels`), and AVX-VNNI for
                // the `vnni_*` tiles (the table puts them only in the avxvnni set, offered
                // only where the CPU has it); sizes checked above.
                unsafe { $inner(cols, w, panels, out) }
            }
        )*};
    }
    wrap_tile! {
        tile_q4_0: gemm::tile_q4_0, BlockQ4_0, gemm::panel_bytes_q8;
        tile_q4_1: gemm::tile_q4_1, BlockQ4_1, gemm::panel_bytes_q8;
        tile_q5_0: gemm::tile_q5_0, BlockQ5_0, gemm::panel_bytes_q8;
        tile_q8_0: gemm::tile_q8_0, BlockQ8_0, gemm::panel_bytes_q8;
        tile_q4_k: gemm::tile_q4_k, BlockQ4_K, gemm::panel_bytes_q8_k;
        tile_q5_k: gemm::tile_q5_k, BlockQ5_K, gemm::panel_bytes_q8_k;
        tile_q6_k: gemm::tile_q6_k, BlockQ6_K, gemm::panel_bytes_q8_k;
        vnni_tile_q4_0: gemm::vnni_tile_q4_0, BlockQ4_0, gemm::panel_bytes_q8;
        vnni_tile_q4_1: gemm::vnni_tile_q4_1, BlockQ4_1, gemm::panel_bytes_q8;
        vnni_tile_q5_0: gemm::vnni_tile_q5_0, BlockQ5_0, gemm::panel_bytes_q8;
        vnni_tile_q8_0: gemm::vnni_tile_q8_0, BlockQ8_0, gemm::panel_bytes_q8;
        vnni_tile_q4_k: gemm::vnni_tile_q4_k, BlockQ4_K, gemm::panel_bytes_q8_k;
        vnni_tile_q5_k: gemm::vnni_tile_q5_k, BlockQ5_K, gemm::panel_bytes_q8_k;
        vnni_tile_q6_k: gemm::vnni_tile_q6_k, BlockQ6_K, gemm::panel_bytes_q8_k;
    }

    pub(crate) fn tile_f32(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
        let rb = cols * size_of::<f32>();
        assert!(
            tile_fits(rb, gemm::panel_bytes_f32(cols), w, panels, out),
            "tile_f32: sizes"
        );
        // SAFETY: AVX2/FMA are present (see `cpu::levels`); sizes checked above.
        unsafe { gemm::tile_f32(cols, w, panels, out) }
    }

    pub(crate) fn tile_f16(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
        let rb = cols * size_of::<f16>();
        assert!(
            tile_fits(rb, gemm::panel_bytes_f32(cols), w, panels, out),
            "tile_f16: sizes"
        );
        // SAFETY: AVX2/FMA/F16C are present (see `cpu::levels`); sizes checked above.
        unsafe { gemm::tile_f16(cols, w, panels, out) }
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

/// `acc` plus, in each `i32` lane, the four products of the lane's unsigned bytes of `u` with
/// the signed bytes of `s`: AVX-VNNI's `vpdpbusd`, exact (no `i16` step to saturate). Written
/// as assembly in its VEX form because its intrinsic needs the `avxvnni` target feature, which
/// Rust stabilised after this crate's minimum version; callers run only where
/// `cpu::levels` saw AVX-VNNI.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: a register-only instruction, on a CPU that has it (the caller's contract).
    core::arch::asm!(
        "{{vex}} vpdpbusd {acc}, {u}, {s}",
        acc = inout(ymm_reg) acc,
        u = in(ymm_reg) u,
        s = in(ymm_reg) s,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// `acc` plus, in each `i32` lane, the two products of the lane's `i16` pairs of `x` and `y`:
/// AVX-VNNI's `vpdpwssd`, `madd_epi16` and the add in one instruction (assembly, as
/// [`dpbusd`]).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dpwssd(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: a register-only instruction, on a CPU that has it (the caller's contract).
    core::arch::asm!(
        "{{vex}} vpdpwssd {acc}, {x}, {y}",
        acc = inout(ymm_reg) acc,
        x = in(ymm_reg) x,
        y = in(ymm_reg) y,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
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
