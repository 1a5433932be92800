//! Row-interleaved weights for dotprod CPUs (Cortex-A76 class without i8mm: Pi 5, many
//! phones), repacked once at load as llama.cpp's `repack.cpp` does.
//!
//! In the file's layout each row's block needs its own integer accumulator (zeroed per
//! block) and a horizontal gather of four rows' sums; with four rows interleaved four bytes at
//! a time, a 16-byte vector holds four values of each of four rows, and one indexed `sdot`
//! (`sdot vD.4s, vW.16b, vA.4b[i]`) adds four products into a lane per row. Decode runs eight
//! such `sdot`s per block of four rows into one accumulator; prefill runs them per token of a
//! panel (the token picked by the index), four accumulators a block.
//!
//! Layouts, per block of the format for a group of [`X`] rows, exactly the bytes of the
//! four rows' blocks (`X × block_bytes`):
//! - Q4_0 (72 bytes): the rows' four `f16` scales, then four vectors of 16 bytes, vector `k`
//!   holding bytes `4k..4k+4` of each row's quants (row `r` at `4r`), xored with `0x88` so
//!   that a nibble shifted up (low) or masked in place (high) is `16 (q - 8)` as a signed
//!   byte. Low nibbles are values `4k..4k+4`, high ones `16 + 4k..`.
//! - Q8_0 (136 bytes): the four scales, then eight vectors, vector `k` holding values
//!   `4k..4k+4` of each row.
//!
//! Rows that do not fill a group are not repacked (the matrix keeps the file's layout: see
//! `QMatrix::repack_with`).
//!
//! # Safety
//! The inner functions need dotprod and the sizes their safe wrappers check.

use core::arch::aarch64::*;
use core::arch::asm;

use super::{gdot4_dotprod, gemm_q8_0, load4, panel_bytes_q8, PANEL, Q8_PANEL_BLOCK};
use crate::kernel::RepackKernels;
use crate::quant::{Block, BlockQ4_0, BlockQ8_0};

/// Rows interleaved in a group.
const X: usize = 4;

// The formats as const-generic codes, so each format's loops are compiled on their own.
const XQ4_0: u8 = 0;
const XQ8_0: u8 = 1;

/// Bytes of one interleaved block (four rows' blocks).
const fn group_block(code: u8) -> usize {
    X * match code {
        XQ4_0 => size_of::<BlockQ4_0>(),
        _ => size_of::<BlockQ8_0>(),
    }
}

/// Rewrites four file rows of a 32-value format as one group (see the module doc).
fn pack<const T: u8>(cols: usize, src: &[u8], dst: &mut [u8]) {
    let bb = group_block(T) / X;
    let nb = cols / 32;
    let rb = nb * bb;
    for (b, o) in dst.chunks_exact_mut(X * bb).enumerate() {
        for r in 0..X {
            let blk = &src[r * rb + b * bb..r * rb + (b + 1) * bb];
            o[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
            for (i, &q) in blk[2..].iter().enumerate() {
                let (k, j) = (i / 4, i % 4);
                o[2 * X + 16 * k + 4 * r + j] = if T == XQ4_0 { q ^ 0x88 } else { q };
            }
        }
    }
}

/// The eight weight vectors of an interleaved block at `x` (past its scales): vector `k`
/// holds values `4k..4k+4` of each row (low nibbles first for Q4_0, which come scaled by
/// 16: see [`factor`]).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn quants<const T: u8>(x: *const u8) -> [int8x16_t; 8] {
    if T == XQ4_0 {
        let v: [int8x16_t; 4] = core::array::from_fn(|k| vld1q_s8(x.add(16 * k).cast()));
        let lo = v.map(|v| vshlq_n_s8(v, 4));
        let hi = v.map(|v| vandq_s8(v, vdupq_n_s8(0xF0u8 as i8)));
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
    } else {
        core::array::from_fn(|k| vld1q_s8(x.add(16 * k).cast()))
    }
}

/// The factor the integer sums of [`quants`] take: `1/16` for Q4_0.
const fn factor<const T: u8>() -> f32 {
    if T == XQ4_0 {
        1.0 / 16.0
    } else {
        1.0
    }
}

/// The `f16` at `p` as `f32`, exactly: loaded straight into a vector register and widened
/// (`ldr h`, `fcvt`), without the move from a general register that costs a vector-pipe µop.
#[inline]
unsafe fn f16_load(p: *const u8) -> f32 {
    let out: f32;
    // SAFETY (of the asm): reads the two bytes at `p`, which the caller owns; plain ARMv8.
    asm!(
        "ldr {t:h}, [{p}]",
        "fcvt {o:s}, {t:h}",
        p = in(reg) p, t = out(vreg) _, o = out(vreg) out,
        options(pure, readonly, nostack, preserves_flags)
    );
    out
}

/// Decode: groups of four rows times one row of Q8_0 activations, a lane per row.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn rows<const T: u8>(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let gb = group_block(T);
    let nb = n / 32;
    for (g, o) in out.chunks_exact_mut(X).enumerate() {
        let x0 = w.as_ptr().add(g * nb * gb);
        let mut acc = vdupq_n_f32(0.0);
        for b in 0..nb {
            let (x, y) = (x0.add(gb * b), a.as_ptr().add(size_of::<BlockQ8_0>() * b));
            let q = quants::<T>(x.add(2 * X));
            let a0 = vld1q_s8(y.add(2).cast());
            let a1 = vld1q_s8(y.add(18).cast());
            let s = gdot4_dotprod(vdupq_n_s32(0), [q[0], q[1], q[2], q[3]], a0);
            let s = gdot4_dotprod(s, [q[4], q[5], q[6], q[7]], a1);
            let d = vmulq_n_f32(load4::<true>(x, 0), f16_load(y));
            acc = vfmaq_f32(acc, vcvtq_f32_s32(s), d);
        }
        // The factor of the sums, once per row: a power of two, so the result is the same
        // as scaling every block's.
        vst1q_f32(o.as_mut_ptr(), vmulq_n_f32(acc, factor::<T>()));
    }
}

/// `acc[r] += Σ_k Σ_i w_k[4r+i] a_k[4T+i]`: four indexed `sdot`s, each weight vector against
/// token `T`'s four quants in its activation vector.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot4_at<const T: i32>(
    mut acc: int32x4_t,
    w: [int8x16_t; 4],
    a: [int8x16_t; 4],
) -> int32x4_t {
    // SAFETY (of the asm): register-only arithmetic, available with dotprod.
    asm!(
        "sdot {acc:v}.4s, {w0:v}.16b, {a0:v}.4b[{t}]",
        "sdot {acc:v}.4s, {w1:v}.16b, {a1:v}.4b[{t}]",
        "sdot {acc:v}.4s, {w2:v}.16b, {a2:v}.4b[{t}]",
        "sdot {acc:v}.4s, {w3:v}.16b, {a3:v}.4b[{t}]",
        acc = inout(vreg) acc,
        w0 = in(vreg) w[0], w1 = in(vreg) w[1], w2 = in(vreg) w[2], w3 = in(vreg) w[3],
        a0 = in(vreg) a[0], a1 = in(vreg) a[1], a2 = in(vreg) a[2], a3 = in(vreg) a[3],
        t = const T,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// One token's sums of an interleaved block: the eight weight vectors against the panel's
/// eight activation vectors at lane `T`, scaled by the rows' scales times the token's.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn token<const T: i32>(
    acc: float32x4_t,
    q: &[int8x16_t; 8],
    a: &[int8x16_t; 8],
    dw: float32x4_t,
    da: float32x4_t,
) -> float32x4_t {
    let s = sdot4_at::<T>(
        vdupq_n_s32(0),
        [q[0], q[1], q[2], q[3]],
        [a[0], a[1], a[2], a[3]],
    );
    let s = sdot4_at::<T>(s, [q[4], q[5], q[6], q[7]], [a[4], a[5], a[6], a[7]]);
    vfmaq_f32(acc, vcvtq_f32_s32(s), vmulq_laneq_f32::<T>(dw, da))
}

/// Prefill: groups of four rows times panels of four tokens of Q8_0 activations (the
/// layout of `pack_q8_0`: quants `[group 8][token 4][4]`, then the tokens' scales).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const T: u8>(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    let gb = group_block(T);
    let nb = cols / 32;
    let groups = w.len() / (nb * gb);
    let rows = groups * X;
    let pb = panel_bytes_q8(cols);
    let np = panels.len() / pb;
    for g in 0..groups {
        let x0 = w.as_ptr().add(g * nb * gb);
        for p in 0..np {
            let pan = panels.as_ptr().add(p * pb);
            let mut acc = [vdupq_n_f32(0.0); PANEL];
            for b in 0..nb {
                let (x, y) = (x0.add(gb * b), pan.add(Q8_PANEL_BLOCK * b));
                let q = quants::<T>(x.add(2 * X));
                let a: [int8x16_t; 8] = core::array::from_fn(|j| vld1q_s8(y.add(16 * j).cast()));
                let dw = load4::<true>(x, 0);
                let da = vld1q_f32(y.add(128).cast());
                acc[0] = token::<0>(acc[0], &q, &a, dw, da);
                acc[1] = token::<1>(acc[1], &q, &a, dw, da);
                acc[2] = token::<2>(acc[2], &q, &a, dw, da);
                acc[3] = token::<3>(acc[3], &q, &a, dw, da);
            }
            // acc[t] holds the four rows of token t; out wants the tokens of each row.
            let mut t = [[0.0f32; PANEL]; PANEL];
            for (row, acc) in t.iter_mut().zip(acc) {
                vst1q_f32(row.as_mut_ptr(), vmulq_n_f32(acc, factor::<T>()));
            }
            for r in 0..X {
                for (tok, row) in t.iter().enumerate() {
                    out[(p * rows + g * X + r) * PANEL + tok] = row[r];
                }
            }
        }
    }
}

// Each format's kernels by name (the loops `arm-cost` measures: `interleaved::rows_q4_0` …).

#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_q4_0(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    rows::<XQ4_0>(n, w, a, out)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_q8_0(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    rows::<XQ8_0>(n, w, a, out)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_q4_0(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    tile::<XQ4_0>(cols, w, panels, out)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_q8_0(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    tile::<XQ8_0>(cols, w, panels, out)
}

/// Safe entry points: each checks the sizes its kernel relies on (the dotprod feature was
/// checked by `cpu::levels`; the table hands these out only in the dotprod set).
mod w {
    use super::*;

    /// Bytes of one group of four rows of `cols` values of a format with blocks `B`.
    fn group_bytes<B: Block>(cols: usize) -> Option<usize> {
        cols.is_multiple_of(B::LEN)
            .then(|| X * cols / B::LEN * size_of::<B>())
    }

    macro_rules! interleaved {
        ($($ctor:ident: $code:expr, $b:ty, $rows:ident, $tile:ident;)*) => {$(
            /// The interleaved layout of four rows and its kernels.
            pub(crate) const fn $ctor() -> RepackKernels {
                fn pack_checked(cols: usize, src: &[u8], dst: &mut [u8]) {
                    let g = group_bytes::<$b>(cols);
                    assert!(
                        g == Some(src.len()) && src.len() == dst.len(),
                        "{}: pack sizes", stringify!($ctor)
                    );
                    pack::<{ $code }>(cols, src, dst)
                }

                fn rows_checked(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                    let g = group_bytes::<$b>(n);
                    assert!(
                        g.is_some_and(|g| {
                            out.len().is_multiple_of(X) && w.len() == out.len() / X * g
                        }) && a.len() == n / 32 * size_of::<BlockQ8_0>(),
                        "{}: dot_rows sizes", stringify!($ctor)
                    );
                    // SAFETY: dotprod is present (see `cpu::levels`); sizes checked above.
                    unsafe { $rows(n, w, a, out) }
                }

                fn tile_checked(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
                    let g = group_bytes::<$b>(cols).filter(|&g| g > 0);
                    let pb = panel_bytes_q8(cols);
                    assert!(
                        g.is_some_and(|g| {
                            w.len().is_multiple_of(g)
                                && panels.len().is_multiple_of(pb)
                                && out.len() == w.len() / g * X * (panels.len() / pb) * PANEL
                        }),
                        "{}: tile sizes", stringify!($ctor)
                    );
                    // SAFETY: dotprod is present (see `cpu::levels`); sizes checked above.
                    unsafe { $tile(cols, w, panels, out) }
                }

                RepackKernels {
                    rows: X,
                    pack: pack_checked,
                    dot_rows: rows_checked,
                    gemm: gemm_q8_0(tile_checked),
                }
            }
        )*};
    }
    interleaved! {
        x4_q4_0: XQ4_0, BlockQ4_0, rows_q4_0, tile_q4_0;
        x4_q8_0: XQ8_0, BlockQ8_0, rows_q8_0, tile_q8_0;
    }
}

pub(crate) use w::{x4_q4_0, x4_q8_0};
