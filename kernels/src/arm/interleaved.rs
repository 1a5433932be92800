//! Row-interleaved weights for dotprod CPUs (Cortex-A76 class: Pi 5, many phones) and i8mm
//! CPUs, repacked once at load as llama.cpp's `repack.cpp` does.
//!
//! In the file's layout each row's block needs its own integer accumulator (zeroed per
//! block) and a horizontal gather of four rows' sums; with four rows interleaved four bytes at
//! a time, a 16-byte vector holds four values of each of four rows, and one indexed `sdot`
//! (`sdot vD.4s, vW.16b, vA.4b[i]`) adds four products into a lane per row. Decode runs eight
//! such `sdot`s per block of four rows into one accumulator; prefill runs them per token of a
//! panel (the token picked by the index), four accumulators a block. On i8mm CPUs the same
//! layout is decoded the same way, and prefill runs `smmla` on it (see `mm_tile`).
//!
//! Layouts, per block of the format for a group of [`X`] rows, exactly the bytes of the
//! four rows' blocks (`X × block_bytes`):
//! - Q4_0 (72 bytes): the rows' four `f16` scales, then four vectors of 16 bytes, vector `k`
//!   holding bytes `4k..4k+4` of each row's quants (row `r` at `4r`), xored with `0x88` so
//!   that a nibble shifted up (low) or masked in place (high) is `16 (q - 8)` as a signed
//!   byte. Low nibbles are values `4k..4k+4`, high ones `16 + 4k..`.
//! - Q8_0 (136 bytes): the four scales, then eight vectors, vector `k` holding values
//!   `4k..4k+4` of each row.
//! - Q4_K (576 bytes per super-block): the rows' four `d`, four `dmin` (`f16`); their 64
//!   six-bit scales and mins re-packed for vectors, index `i = 4j + r` (sub-block `j`, row
//!   `r`): 32 bytes of low four bits (scale `i` in the low nibble of byte `i`, min `i` in the
//!   high one), 16 bytes of high two bits (byte `i`: scale `i`, scale `i + 16`, min `i`, min
//!   `i + 16`, two bits each from the bottom); then for each 32-byte chunk `c` of quants
//!   (low nibbles: sub-block `2c`, high: `2c + 1`) eight vectors, vector `v` holding bytes
//!   `4v..4v+4` of the chunk of each row.
//! - Q6_K (840 bytes per super-block): the rows' four `d`; their sixteen scales as
//!   `[sub-block 16][row 4]` `i8`; then for each half of 128 values its `ql` (four 16-byte
//!   chunks of each row) and `qh` (two), each chunk interleaved as above: vector `v` of a
//!   chunk holds its bytes `4v..4v+4` of each row. The lane-wise decoding of the file's
//!   `ql`/`qh` then yields values `4v..4v+4` of a 16-value sub-block of each row.
//!
//! Rows that do not fill a group are not repacked (the matrix keeps the file's layout: see
//! `QMatrix::repack_with`).
//!
//! # Safety
//! The inner functions need dotprod (the `mm_*` ones i8mm too) and the sizes their safe
//! wrappers check.

use core::arch::aarch64::*;
use core::arch::asm;

use super::f16x4;
use super::{
    gdot4_dotprod, gemm_q8_0, gemm_q8_k, i8mm, i8mm_q8_0, i8mm_q8_k, load4, panel_bytes_q8,
    panel_bytes_q8_k, PANEL, Q8K_PANEL_BLOCK, Q8_PANEL_BLOCK,
};
use crate::kernel::RepackKernels;
use crate::quant::kquants::scale_min_k4;
use crate::quant::{Block, BlockQ4_0, BlockQ4_K, BlockQ6_K, BlockQ8_0, BlockQ8_K};
use crate::QK_K;

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

/// Rewrites four file rows of Q4_K as one group (see the module doc).
fn pack_q4_k(cols: usize, src: &[u8], dst: &mut [u8]) {
    const BB: usize = size_of::<BlockQ4_K>();
    let rb = cols / QK_K * BB;
    for (b, o) in dst.chunks_exact_mut(X * BB).enumerate() {
        let mut sc = [0u8; 32];
        let mut mn = [0u8; 32];
        for r in 0..X {
            let blk = &src[r * rb + b * BB..r * rb + (b + 1) * BB];
            o[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
            o[8 + 2 * r..10 + 2 * r].copy_from_slice(&blk[2..4]);
            let scales: &[u8; 12] = blk[4..16].try_into().expect("12 bytes");
            for j in 0..8 {
                (sc[4 * j + r], mn[4 * j + r]) = scale_min_k4(j, scales);
            }
            for c in 0..4 {
                for v in 0..8 {
                    let at = 64 + 128 * c + 16 * v + 4 * r;
                    o[at..at + 4].copy_from_slice(&blk[16 + 32 * c + 4 * v..][..4]);
                }
            }
        }
        for i in 0..32 {
            o[16 + i] = (sc[i] & 15) | (mn[i] & 15) << 4;
        }
        for i in 0..16 {
            o[48 + i] =
                sc[i] >> 4 | (sc[i + 16] >> 4) << 2 | (mn[i] >> 4) << 4 | (mn[i + 16] >> 4) << 6;
        }
    }
}

/// A Q4_K group's scales (as `i32`, a vector per sub-block, a lane per row) and mins (as
/// `i16`, two sub-blocks per vector), from the re-packed six-bit values at `p`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k_scales(p: *const u8) -> ([int32x4_t; 8], [int16x8_t; 4]) {
    let (l0, l1, h) = (vld1q_u8(p), vld1q_u8(p.add(16)), vld1q_u8(p.add(32)));
    let (m4, m2) = (vdupq_n_u8(15), vdupq_n_u8(3));
    let top = |v: uint8x16_t| vshlq_n_u8(vandq_u8(v, m2), 4);
    let sc = [
        vorrq_u8(vandq_u8(l0, m4), top(h)),
        vorrq_u8(vandq_u8(l1, m4), top(vshrq_n_u8(h, 2))),
    ];
    let mn = [
        vorrq_u8(vshrq_n_u8(l0, 4), top(vshrq_n_u8(h, 4))),
        vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(h, 6), 4)),
    ];
    let wide = |v: uint16x8_t| {
        [
            vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(v))),
            vreinterpretq_s32_u32(vmovl_high_u16(v)),
        ]
    };
    let [a, b] = wide(vmovl_u8(vget_low_u8(sc[0])));
    let [c, d] = wide(vmovl_high_u8(sc[0]));
    let [e, f] = wide(vmovl_u8(vget_low_u8(sc[1])));
    let [g, hh] = wide(vmovl_high_u8(sc[1]));
    let m16 = |v: uint16x8_t| vreinterpretq_s16_u16(v);
    (
        [a, b, c, d, e, f, g, hh],
        [
            m16(vmovl_u8(vget_low_u8(mn[0]))),
            m16(vmovl_high_u8(mn[0])),
            m16(vmovl_u8(vget_low_u8(mn[1]))),
            m16(vmovl_high_u8(mn[1])),
        ],
    )
}

/// `Σ_j mins_j · bsums[j]` over the eight sub-blocks, a lane per row.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k_mins(m: &[int16x8_t; 4], bs: int16x8_t) -> int32x4_t {
    let s = vmull_laneq_s16::<0>(vget_low_s16(m[0]), bs);
    let s = vmlal_laneq_s16::<1>(s, vget_high_s16(m[0]), bs);
    let s = vmlal_laneq_s16::<2>(s, vget_low_s16(m[1]), bs);
    let s = vmlal_laneq_s16::<3>(s, vget_high_s16(m[1]), bs);
    let s = vmlal_laneq_s16::<4>(s, vget_low_s16(m[2]), bs);
    let s = vmlal_laneq_s16::<5>(s, vget_high_s16(m[2]), bs);
    let s = vmlal_laneq_s16::<6>(s, vget_low_s16(m[3]), bs);
    vmlal_laneq_s16::<7>(s, vget_high_s16(m[3]), bs)
}

/// The sixteen quant vectors of chunk `c` of a Q4_K group at `q`: low nibbles (sub-block
/// `2c`) then high ones (`2c + 1`), as signed bytes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k_chunk(q: *const u8) -> ([int8x16_t; 8], [int8x16_t; 8]) {
    let v: [uint8x16_t; 8] = core::array::from_fn(|k| vld1q_u8(q.add(16 * k)));
    let m4 = vdupq_n_u8(15);
    (
        v.map(|v| vreinterpretq_s8_u8(vandq_u8(v, m4))),
        v.map(|v| vreinterpretq_s8_u8(vshrq_n_u8(v, 4))),
    )
}

/// Four `f16`s at `p` as `f32` lanes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn f16x4_at(p: *const u8) -> float32x4_t {
    let h = |i: usize| p.add(2 * i).cast::<u16>().read_unaligned();
    f16x4([h(0), h(1), h(2), h(3)])
}

/// Decode: groups of four Q4_K rows times one row of Q8_K activations, a lane per row.
#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_q4_k(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    const GB: usize = X * size_of::<BlockQ4_K>();
    let nb = n / QK_K;
    for (g, o) in out.chunks_exact_mut(X).enumerate() {
        let x0 = w.as_ptr().add(g * nb * GB);
        let mut acc = vdupq_n_f32(0.0);
        for b in 0..nb {
            let (x, y) = (x0.add(GB * b), a.as_ptr().add(size_of::<BlockQ8_K>() * b));
            let (sc, mn) = q4k_scales(x.add(16));
            let mut isum = vdupq_n_s32(0);
            for c in 0..4 {
                let (lo, hi) = q4k_chunk(x.add(64 + 128 * c));
                let ya: [int8x16_t; 4] =
                    core::array::from_fn(|k| vld1q_s8(y.add(4 + 64 * c + 16 * k).cast()));
                let s = gdot4_dotprod(vdupq_n_s32(0), [lo[0], lo[1], lo[2], lo[3]], ya[0]);
                let s = gdot4_dotprod(s, [lo[4], lo[5], lo[6], lo[7]], ya[1]);
                isum = vmlaq_s32(isum, s, sc[2 * c]);
                let s = gdot4_dotprod(vdupq_n_s32(0), [hi[0], hi[1], hi[2], hi[3]], ya[2]);
                let s = gdot4_dotprod(s, [hi[4], hi[5], hi[6], hi[7]], ya[3]);
                isum = vmlaq_s32(isum, s, sc[2 * c + 1]);
            }
            let bs = y.add(260).cast::<i16>();
            let msum = q4k_mins(&mn, vpaddq_s16(vld1q_s16(bs), vld1q_s16(bs.add(8))));
            let yd = y.cast::<f32>().read_unaligned();
            let d = vmulq_n_f32(f16x4_at(x), yd);
            let dmin = vmulq_n_f32(f16x4_at(x.add(8)), yd);
            acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), d);
            acc = vfmsq_f32(acc, vcvtq_f32_s32(msum), dmin);
        }
        vst1q_f32(o.as_mut_ptr(), acc);
    }
}

/// One token's sums of a Q4_K group's super-block against a Q8_K panel block `y`:
/// `(Σ_j sc_j Σ q a, Σ_j m_j bsum_j)`, a lane per row.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k_token<const T: i32>(
    x: *const u8,
    y: *const u8,
    sc: &[int32x4_t; 8],
    mn: &[int32x4_t; 8],
) -> (int32x4_t, int32x4_t) {
    let mut isum = vdupq_n_s32(0);
    let mut msum = vdupq_n_s32(0);
    let ag = |g: usize| vld1q_s8(y.add(16 * g).cast());
    for c in 0..4 {
        let (lo, hi) = q4k_chunk(x.add(64 + 128 * c));
        for (h, q) in [lo, hi].iter().enumerate() {
            let j = 2 * c + h;
            let g = 8 * j;
            let s = sdot4_at::<T>(
                vdupq_n_s32(0),
                [q[0], q[1], q[2], q[3]],
                [ag(g), ag(g + 1), ag(g + 2), ag(g + 3)],
            );
            let s = sdot4_at::<T>(
                s,
                [q[4], q[5], q[6], q[7]],
                [ag(g + 4), ag(g + 5), ag(g + 6), ag(g + 7)],
            );
            isum = vmlaq_s32(isum, s, sc[j]);
            let bs = vld1q_s32(y.add(1040 + 16 * j).cast());
            msum = vmlaq_laneq_s32::<T>(msum, mn[j], bs);
        }
    }
    (isum, msum)
}

/// Prefill: groups of four Q4_K rows times panels of four tokens of Q8_K activations (the
/// layout of `pack_q8_k`).
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_q4_k(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    const GB: usize = X * size_of::<BlockQ4_K>();
    let nb = cols / QK_K;
    let groups = w.len() / (nb * GB);
    let rows = groups * X;
    let pb = panel_bytes_q8_k(cols);
    let np = panels.len() / pb;
    for g in 0..groups {
        let x0 = w.as_ptr().add(g * nb * GB);
        for p in 0..np {
            let pan = panels.as_ptr().add(p * pb);
            let mut acc = [vdupq_n_f32(0.0); PANEL];
            for b in 0..nb {
                let (x, y) = (x0.add(GB * b), pan.add(Q8K_PANEL_BLOCK * b));
                let (sc, m16) = q4k_scales(x.add(16));
                let mn: [int32x4_t; 8] = core::array::from_fn(|j| {
                    let v = m16[j / 2];
                    vmovl_s16(if j % 2 == 0 {
                        vget_low_s16(v)
                    } else {
                        vget_high_s16(v)
                    })
                });
                let dw = f16x4_at(x);
                let mw = f16x4_at(x.add(8));
                let da = vld1q_f32(y.add(1024).cast());
                let s = [
                    q4k_token::<0>(x, y, &sc, &mn),
                    q4k_token::<1>(x, y, &sc, &mn),
                    q4k_token::<2>(x, y, &sc, &mn),
                    q4k_token::<3>(x, y, &sc, &mn),
                ];
                let d = [
                    vmulq_laneq_f32::<0>(dw, da),
                    vmulq_laneq_f32::<1>(dw, da),
                    vmulq_laneq_f32::<2>(dw, da),
                    vmulq_laneq_f32::<3>(dw, da),
                ];
                let dmin = [
                    vmulq_laneq_f32::<0>(mw, da),
                    vmulq_laneq_f32::<1>(mw, da),
                    vmulq_laneq_f32::<2>(mw, da),
                    vmulq_laneq_f32::<3>(mw, da),
                ];
                for t in 0..PANEL {
                    acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(s[t].0), d[t]);
                    acc[t] = vfmsq_f32(acc[t], vcvtq_f32_s32(s[t].1), dmin[t]);
                }
            }
            let mut t = [[0.0f32; PANEL]; PANEL];
            for (row, acc) in t.iter_mut().zip(acc) {
                vst1q_f32(row.as_mut_ptr(), acc);
            }
            for r in 0..X {
                for (tok, row) in t.iter().enumerate() {
                    out[(p * rows + g * X + r) * PANEL + tok] = row[r];
                }
            }
        }
    }
}

/// Rewrites four file rows of Q6_K as one group (see the module doc).
fn pack_q6_k(cols: usize, src: &[u8], dst: &mut [u8]) {
    const BB: usize = size_of::<BlockQ6_K>();
    let rb = cols / QK_K * BB;
    for (b, o) in dst.chunks_exact_mut(X * BB).enumerate() {
        for r in 0..X {
            let blk = &src[r * rb + b * BB..r * rb + (b + 1) * BB];
            o[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
            for j in 0..16 {
                o[8 + 4 * j + r] = blk[192 + j];
            }
            for h in 0..2 {
                let base = 72 + 384 * h;
                // `ql` chunks 0..4 then `qh` chunks 0..2 of this half, 64 bytes apart.
                let chunks = (0..4)
                    .map(|c| 64 * h + 16 * c)
                    .chain((0..2).map(|c| 128 + 32 * h + 16 * c));
                for (n, at) in chunks.enumerate() {
                    for v in 0..4 {
                        let o_at = base + 64 * n + 16 * v + 4 * r;
                        o[o_at..o_at + 4].copy_from_slice(&blk[at + 4 * v..at + 4 * v + 4]);
                    }
                }
            }
        }
    }
}

/// A Q6_K group's sixteen scales as `i32`, a vector per sub-block, a lane per row.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k_scales(p: *const u8) -> [int32x4_t; 16] {
    let mut out = [vdupq_n_s32(0); 16];
    for q in 0..4 {
        let v = vld1q_s8(p.add(16 * q).cast());
        let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
        out[4 * q] = vmovl_s16(vget_low_s16(lo));
        out[4 * q + 1] = vmovl_high_s16(lo);
        out[4 * q + 2] = vmovl_s16(vget_low_s16(hi));
        out[4 * q + 3] = vmovl_high_s16(hi);
    }
    out
}

/// Part `i` (0, 1) of half `h` of a Q6_K group at `x`, decoded: `w[k][v]` holds values
/// `4v..4v+4` of sub-block `8h + 2k + i` of each row: `q - 32` (`OFFSET`), or `q` (for a
/// caller that subtracts `32 Σ a` with the activations' block sums instead).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k_part<const OFFSET: bool>(x: *const u8, h: usize, i: usize) -> [[int8x16_t; 4]; 4] {
    let base = x.add(72 + 384 * h);
    let (m4, m2) = (vdupq_n_u8(15), vdupq_n_u8(3));
    // `per_v[v][k]`: values of sub-block `2k + i`, quads `v`.
    let per_v: [[int8x16_t; 4]; 4] = core::array::from_fn(|v| {
        let l0 = vld1q_u8(base.add(64 * i + 16 * v));
        let l1 = vld1q_u8(base.add(64 * (2 + i) + 16 * v));
        let qh = vld1q_u8(base.add(256 + 64 * i + 16 * v));
        let top = |v: uint8x16_t| vshlq_n_u8(vandq_u8(v, m2), 4);
        [
            vorrq_u8(vandq_u8(l0, m4), top(qh)),
            vorrq_u8(vandq_u8(l1, m4), top(vshrq_n_u8(qh, 2))),
            vorrq_u8(vshrq_n_u8(l0, 4), top(vshrq_n_u8(qh, 4))),
            vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4)),
        ]
        .map(|val| match OFFSET {
            true => vsubq_s8(vreinterpretq_s8_u8(val), vdupq_n_s8(32)),
            false => vreinterpretq_s8_u8(val),
        })
    });
    core::array::from_fn(|k| core::array::from_fn(|v| per_v[v][k]))
}

/// `Σ_j sc_j bsum_j` of a Q6_K group (scales `[sub-block][row]` `i8` at `p`; `bs` the Q8_K
/// block's sixteen sums of sixteen quants), a lane per row.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k_offsets(p: *const u8, bs: [int16x8_t; 2]) -> int32x4_t {
    let v: [int8x16_t; 4] = core::array::from_fn(|q| vld1q_s8(p.add(16 * q).cast()));
    // Scales of sub-blocks 4q..4q+4 as i16: [4q, 4q+1] in the low, [4q+2, 4q+3] in the high.
    let w: [int16x8_t; 8] = core::array::from_fn(|k| match k % 2 {
        0 => vmovl_s8(vget_low_s8(v[k / 2])),
        _ => vmovl_high_s8(v[k / 2]),
    });
    let (b0, b1) = (bs[0], bs[1]);
    let s = vmull_laneq_s16::<0>(vget_low_s16(w[0]), b0);
    let s = vmlal_laneq_s16::<1>(s, vget_high_s16(w[0]), b0);
    let s = vmlal_laneq_s16::<2>(s, vget_low_s16(w[1]), b0);
    let s = vmlal_laneq_s16::<3>(s, vget_high_s16(w[1]), b0);
    let s = vmlal_laneq_s16::<4>(s, vget_low_s16(w[2]), b0);
    let s = vmlal_laneq_s16::<5>(s, vget_high_s16(w[2]), b0);
    let s = vmlal_laneq_s16::<6>(s, vget_low_s16(w[3]), b0);
    let s = vmlal_laneq_s16::<7>(s, vget_high_s16(w[3]), b0);
    let s = vmlal_laneq_s16::<0>(s, vget_low_s16(w[4]), b1);
    let s = vmlal_laneq_s16::<1>(s, vget_high_s16(w[4]), b1);
    let s = vmlal_laneq_s16::<2>(s, vget_low_s16(w[5]), b1);
    let s = vmlal_laneq_s16::<3>(s, vget_high_s16(w[5]), b1);
    let s = vmlal_laneq_s16::<4>(s, vget_low_s16(w[6]), b1);
    let s = vmlal_laneq_s16::<5>(s, vget_high_s16(w[6]), b1);
    let s = vmlal_laneq_s16::<6>(s, vget_low_s16(w[7]), b1);
    vmlal_laneq_s16::<7>(s, vget_high_s16(w[7]), b1)
}

/// Half `h` of a Q6_K group's super-block against one Q8_K block `y`, added to `isum`
/// with the scales (decode).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k_half_rows(
    mut isum: int32x4_t,
    x: *const u8,
    y: *const u8,
    h: usize,
    sc: &[int32x4_t; 16],
) -> int32x4_t {
    for i in 0..2 {
        let wq = q6k_part::<false>(x, h, i);
        for (k, wk) in wq.iter().enumerate() {
            let j = 2 * k + i;
            let ya = vld1q_s8(y.add(4 + 128 * h + 16 * j).cast());
            let s = gdot4_dotprod(vdupq_n_s32(0), *wk, ya);
            isum = vmlaq_s32(isum, s, sc[8 * h + j]);
        }
    }
    isum
}

/// Decode: groups of four Q6_K rows times one row of Q8_K activations, a lane per row.
#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_q6_k(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    const GB: usize = X * size_of::<BlockQ6_K>();
    let nb = n / QK_K;
    for (g, o) in out.chunks_exact_mut(X).enumerate() {
        let x0 = w.as_ptr().add(g * nb * GB);
        let mut acc = vdupq_n_f32(0.0);
        for b in 0..nb {
            let (x, y) = (x0.add(GB * b), a.as_ptr().add(size_of::<BlockQ8_K>() * b));
            let sc = q6k_scales(x.add(8));
            // The two halves written out: a loop over them stays a loop (so `arm-cost`
            // would see a half's loop, not the super-block's).
            let isum = q6k_half_rows(vdupq_n_s32(0), x, y, 0, &sc);
            let isum = q6k_half_rows(isum, x, y, 1, &sc);
            // The quants were taken as `q`, not `q - 32`: take `32 Σ_j sc_j bsum_j` off.
            let bs = y.add(260).cast::<i16>();
            let off = q6k_offsets(x.add(8), [vld1q_s16(bs), vld1q_s16(bs.add(8))]);
            let isum = vsubq_s32(isum, vshlq_n_s32(off, 5));
            let d = vmulq_n_f32(f16x4_at(x), y.cast::<f32>().read_unaligned());
            acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), d);
        }
        vst1q_f32(o.as_mut_ptr(), acc);
    }
}

/// Token `T`'s sums of part `i` of half `h` of a Q6_K group (`wq`, from [`q6k_part`])
/// against a Q8_K panel block `y`, added to `isum` with the scales.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k_token<const T: i32>(
    mut isum: int32x4_t,
    wq: &[[int8x16_t; 4]; 4],
    y: *const u8,
    h: usize,
    i: usize,
    sc: &[int32x4_t; 16],
) -> int32x4_t {
    for (k, wk) in wq.iter().enumerate() {
        let j = 2 * k + i;
        let g = 32 * h + 4 * j;
        let ag: [int8x16_t; 4] = core::array::from_fn(|v| vld1q_s8(y.add(16 * (g + v)).cast()));
        let s = sdot4_at::<T>(vdupq_n_s32(0), *wk, ag);
        isum = vmlaq_s32(isum, s, sc[8 * h + j]);
    }
    isum
}

/// Prefill: groups of four Q6_K rows times panels of four tokens of Q8_K activations.
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_q6_k(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    const GB: usize = X * size_of::<BlockQ6_K>();
    let nb = cols / QK_K;
    let groups = w.len() / (nb * GB);
    let rows = groups * X;
    let pb = panel_bytes_q8_k(cols);
    let np = panels.len() / pb;
    for g in 0..groups {
        let x0 = w.as_ptr().add(g * nb * GB);
        for p in 0..np {
            let pan = panels.as_ptr().add(p * pb);
            let mut acc = [vdupq_n_f32(0.0); PANEL];
            for b in 0..nb {
                let (x, y) = (x0.add(GB * b), pan.add(Q8K_PANEL_BLOCK * b));
                let sc = q6k_scales(x.add(8));
                let mut isum = [vdupq_n_s32(0); PANEL];
                for h in 0..2 {
                    for i in 0..2 {
                        let wq = q6k_part::<true>(x, h, i);
                        isum[0] = q6k_token::<0>(isum[0], &wq, y, h, i, &sc);
                        isum[1] = q6k_token::<1>(isum[1], &wq, y, h, i, &sc);
                        isum[2] = q6k_token::<2>(isum[2], &wq, y, h, i, &sc);
                        isum[3] = q6k_token::<3>(isum[3], &wq, y, h, i, &sc);
                    }
                }
                let dw = f16x4_at(x);
                let da = vld1q_f32(y.add(1024).cast());
                let d = [
                    vmulq_laneq_f32::<0>(dw, da),
                    vmulq_laneq_f32::<1>(dw, da),
                    vmulq_laneq_f32::<2>(dw, da),
                    vmulq_laneq_f32::<3>(dw, da),
                ];
                for t in 0..PANEL {
                    acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(isum[t]), d[t]);
                }
            }
            let mut t = [[0.0f32; PANEL]; PANEL];
            for (row, acc) in t.iter_mut().zip(acc) {
                vst1q_f32(row.as_mut_ptr(), acc);
            }
            for r in 0..X {
                for (tok, row) in t.iter().enumerate() {
                    out[(p * rows + g * X + r) * PANEL + tok] = row[r];
                }
            }
        }
    }
}

// i8mm: `smmla` panels on the same layout. A group's two vectors of values `8m..8m+4` and
// `8m+4..8m+8` hold, zipped by 32-bit lanes, eight consecutive values of rows 0 and 1 (and
// of rows 2 and 3): each one `smmla` weight operand (two rows by eight values), against the
// i8mm panels (`i8mm::pack_q8_0`, `i8mm::pack_q8_k`). The integer sums, their scaling and
// the order of the float operations are those of the file-layout `smmla` kernels, so the
// results are the same bit for bit.

/// The `smmla` weight operands of values `8m..8m+8` of a group, rows 0-1 and rows 2-3,
/// from its vectors of values `8m..8m+4` (`lo`) and `8m+4..8m+8` (`hi`).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mm_pairs(lo: int8x16_t, hi: int8x16_t) -> [int8x16_t; 2] {
    let (l, h) = (vreinterpretq_s32_s8(lo), vreinterpretq_s32_s8(hi));
    [vzip1q_s32(l, h), vzip2q_s32(l, h)].map(|v| vreinterpretq_s8_s32(v))
}

/// A value per row (`[r0, r1, r2, r3]`) in the lanes of the two row pairs' `smmla`
/// results: `[r0, r0, r1, r1]`, `[r2, r2, r3, r3]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mm_rows_f32(v: float32x4_t) -> [float32x4_t; 2] {
    [vzip1q_f32(v, v), vzip2q_f32(v, v)]
}

/// [`mm_rows_f32`] for integers.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mm_rows_s32(v: int32x4_t) -> [int32x4_t; 2] {
    [vzip1q_s32(v, v), vzip2q_s32(v, v)]
}

/// `s + Σ_m smmla(w_m, a_m)`: two rows by two tokens over `8 × N` values.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn mm_sum<const N: usize>(
    mut s: int32x4_t,
    w: &[[int8x16_t; 2]; N],
    pair: usize,
    a: &[int8x16_t; N],
) -> int32x4_t {
    for (w, a) in w.iter().zip(a) {
        s = i8mm::smmla(s, w[pair], *a);
    }
    s
}

/// Writes a group's results for one panel, times `f`: `acc[pair][tp]` holds
/// `[a·t, a·t', b·t, b·t']` for rows `a = 2 pair`, `b = a + 1` and tokens `t = 2 tp`,
/// `t' = t + 1`; `out` is the group's four rows of [`PANEL`] tokens.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mm_store(acc: &[[float32x4_t; 2]; 2], f: f32, out: &mut [f32]) {
    for (pair, acc) in acc.iter().enumerate() {
        for (tp, acc) in acc.iter().enumerate() {
            let mut v = [0.0f32; 4];
            vst1q_f32(v.as_mut_ptr(), vmulq_n_f32(*acc, f));
            let at = |r: usize| PANEL * (2 * pair + r) + 2 * tp;
            out[at(0)..at(0) + 2].copy_from_slice(&v[..2]);
            out[at(1)..at(1) + 2].copy_from_slice(&v[2..]);
        }
    }
}

/// Prefill with i8mm: groups of four rows of a 32-value format times panels of four tokens
/// of Q8_0 activations.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn mm_tile<const T: u8>(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    let gb = group_block(T);
    let nb = cols / 32;
    let groups = w.len() / (nb * gb);
    let rows = groups * X;
    let pb = i8mm::panel_bytes(cols);
    let np = panels.len() / pb;
    for g in 0..groups {
        let x0 = w.as_ptr().add(g * nb * gb);
        for p in 0..np {
            let pan = panels.as_ptr().add(p * pb);
            let mut acc = [[vdupq_n_f32(0.0); 2]; 2];
            for b in 0..nb {
                let (x, y) = (x0.add(gb * b), pan.add(i8mm::BLOCK * b));
                let q = quants::<T>(x.add(2 * X));
                let wq: [[int8x16_t; 2]; 4] =
                    core::array::from_fn(|m| mm_pairs(q[2 * m], q[2 * m + 1]));
                let dw = mm_rows_f32(load4::<true>(x, 0));
                for tp in 0..2 {
                    let a: [int8x16_t; 4] =
                        core::array::from_fn(|m| vld1q_s8(y.add(32 * m + 16 * tp).cast()));
                    let da = vld1q_f32(y.add(128 + 16 * tp).cast());
                    for (pair, acc) in acc.iter_mut().enumerate() {
                        let s = mm_sum(vdupq_n_s32(0), &wq, pair, &a);
                        let d = vmulq_f32(dw[pair], da);
                        acc[tp] = vfmaq_f32(acc[tp], vcvtq_f32_s32(s), d);
                    }
                }
            }
            let o = (p * rows + g * X) * PANEL;
            mm_store(&acc, factor::<T>(), &mut out[o..o + X * PANEL]);
        }
    }
}

/// Prefill with i8mm: groups of four Q4_K rows times panels of four tokens of Q8_K
/// activations.
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn mm_tile_q4_k(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    const GB: usize = X * size_of::<BlockQ4_K>();
    let nb = cols / QK_K;
    let groups = w.len() / (nb * GB);
    let rows = groups * X;
    let pb = i8mm::panel_bytes_k(cols);
    let np = panels.len() / pb;
    for g in 0..groups {
        let x0 = w.as_ptr().add(g * nb * GB);
        for p in 0..np {
            let pan = panels.as_ptr().add(p * pb);
            let mut acc = [[vdupq_n_f32(0.0); 2]; 2];
            for b in 0..nb {
                let (x, y) = (x0.add(GB * b), pan.add(i8mm::K_BLOCK * b));
                let (sc, m16) = q4k_scales(x.add(16));
                // isum[pair][tp]: Σ_j sc_j Σ q a, in the lanes of the `smmla` results.
                let mut isum = [[vdupq_n_s32(0); 2]; 2];
                for c in 0..4 {
                    let (lo, hi) = q4k_chunk(x.add(64 + 128 * c));
                    for (h, q) in [lo, hi].iter().enumerate() {
                        let j = 2 * c + h;
                        let wq: [[int8x16_t; 2]; 4] =
                            core::array::from_fn(|m| mm_pairs(q[2 * m], q[2 * m + 1]));
                        let sc = mm_rows_s32(sc[j]);
                        for tp in 0..2 {
                            let a: [int8x16_t; 4] = core::array::from_fn(|m| {
                                vld1q_s8(y.add(32 * (4 * j + m) + 16 * tp).cast())
                            });
                            for (pair, isum) in isum.iter_mut().enumerate() {
                                let s = mm_sum(vdupq_n_s32(0), &wq, pair, &a);
                                isum[tp] = vmlaq_s32(isum[tp], s, sc[pair]);
                            }
                        }
                    }
                }
                let mn: [[int32x4_t; 2]; 8] = core::array::from_fn(|j| {
                    let v = m16[j / 2];
                    mm_rows_s32(vmovl_s16(if j % 2 == 0 {
                        vget_low_s16(v)
                    } else {
                        vget_high_s16(v)
                    }))
                });
                let dw = mm_rows_f32(f16x4_at(x));
                let mw = mm_rows_f32(f16x4_at(x.add(8)));
                for tp in 0..2 {
                    let da = vld1q_f32(y.add(1024 + 16 * tp).cast());
                    for (pair, acc) in acc.iter_mut().enumerate() {
                        let d = vmulq_f32(dw[pair], da);
                        acc[tp] = vfmaq_f32(acc[tp], vcvtq_f32_s32(isum[pair][tp]), d);
                        let mut msum = vdupq_n_s32(0);
                        for (j, mn) in mn.iter().enumerate() {
                            let bs = vld1q_s32(y.add(1056 + 32 * j + 16 * tp).cast());
                            msum = vmlaq_s32(msum, bs, mn[pair]);
                        }
                        let dmin = vmulq_f32(mw[pair], da);
                        acc[tp] = vfmsq_f32(acc[tp], vcvtq_f32_s32(msum), dmin);
                    }
                }
            }
            let o = (p * rows + g * X) * PANEL;
            mm_store(&acc, 1.0, &mut out[o..o + X * PANEL]);
        }
    }
}

/// Prefill with i8mm: groups of four Q6_K rows times panels of four tokens of Q8_K
/// activations.
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn mm_tile_q6_k(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    const GB: usize = X * size_of::<BlockQ6_K>();
    let nb = cols / QK_K;
    let groups = w.len() / (nb * GB);
    let rows = groups * X;
    let pb = i8mm::panel_bytes_k(cols);
    let np = panels.len() / pb;
    for g in 0..groups {
        let x0 = w.as_ptr().add(g * nb * GB);
        for p in 0..np {
            let pan = panels.as_ptr().add(p * pb);
            let mut acc = [[vdupq_n_f32(0.0); 2]; 2];
            for b in 0..nb {
                let (x, y) = (x0.add(GB * b), pan.add(i8mm::K_BLOCK * b));
                let sc = q6k_scales(x.add(8));
                let mut isum = [[vdupq_n_s32(0); 2]; 2];
                for h in 0..2 {
                    for i in 0..2 {
                        let wq = q6k_part::<true>(x, h, i);
                        for (k, wk) in wq.iter().enumerate() {
                            // Sub-block j: values 16j..16j+16, the panel's chunks 2j, 2j+1.
                            let j = 8 * h + 2 * k + i;
                            let w2 = [mm_pairs(wk[0], wk[1]), mm_pairs(wk[2], wk[3])];
                            let sc = mm_rows_s32(sc[j]);
                            for tp in 0..2 {
                                let a: [int8x16_t; 2] = core::array::from_fn(|m| {
                                    vld1q_s8(y.add(32 * (2 * j + m) + 16 * tp).cast())
                                });
                                for (pair, isum) in isum.iter_mut().enumerate() {
                                    let s = mm_sum(vdupq_n_s32(0), &w2, pair, &a);
                                    isum[tp] = vmlaq_s32(isum[tp], s, sc[pair]);
                                }
                            }
                        }
                    }
                }
                let dw = mm_rows_f32(f16x4_at(x));
                for tp in 0..2 {
                    let da = vld1q_f32(y.add(1024 + 16 * tp).cast());
                    for (pair, acc) in acc.iter_mut().enumerate() {
                        let d = vmulq_f32(dw[pair], da);
                        acc[tp] = vfmaq_f32(acc[tp], vcvtq_f32_s32(isum[pair][tp]), d);
                    }
                }
            }
            let o = (p * rows + g * X) * PANEL;
            mm_store(&acc, 1.0, &mut out[o..o + X * PANEL]);
        }
    }
}

#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn mm_tile_q4_0(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    mm_tile::<XQ4_0>(cols, w, panels, out)
}

#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn mm_tile_q8_0(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    mm_tile::<XQ8_0>(cols, w, panels, out)
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

/// Safe entry points: each checks the sizes its kernel relies on (the features were checked
/// by `cpu::levels`; the table hands the `x4_*` kernels out only in the dotprod set, and the
/// `mm4_*` ones, whose decode is dotprod's and whose panels need i8mm, only in the i8mm set).
mod w {
    use super::*;

    /// Bytes of one group of four rows of `cols` values of a format with blocks `B`.
    fn group_bytes<B: Block>(cols: usize) -> Option<usize> {
        cols.is_multiple_of(B::LEN)
            .then(|| X * cols / B::LEN * size_of::<B>())
    }

    /// Whether `w` is whole groups of `group` bytes (some), `panels` whole panels of
    /// `panel_bytes`, and `out` one result per row, panel and token.
    fn tile_fits(
        group: Option<usize>,
        panel_bytes: usize,
        w: &[u8],
        panels: &[u8],
        out: &[f32],
    ) -> bool {
        group.filter(|&g| g > 0).is_some_and(|g| {
            panel_bytes > 0
                && w.len().is_multiple_of(g)
                && panels.len().is_multiple_of(panel_bytes)
                && out.len() == w.len() / g * X * (panels.len() / panel_bytes) * PANEL
        })
    }

    /// `ctor, i8mm ctor: weight block, activation block, pack, rows, tile, panel kernels,
    /// panel bytes, i8mm tile, i8mm panel kernels, i8mm panel bytes`.
    macro_rules! interleaved {
        ($($ctor:ident, $mm_ctor:ident: $b:ty, $a:ty, $pack:expr, $rows:ident, $tile:ident,
           $gemm:ident, $pb:path, $mm_tile:ident, $mm_gemm:ident, $mm_pb:path;)*) => {$(
            /// The interleaved layout of four rows and its dotprod kernels.
            pub(crate) const fn $ctor() -> RepackKernels {
                fn pack_checked(cols: usize, src: &[u8], dst: &mut [u8]) {
                    let g = group_bytes::<$b>(cols);
                    assert!(
                        g == Some(src.len()) && src.len() == dst.len(),
                        "{}: pack sizes", stringify!($ctor)
                    );
                    $pack(cols, src, dst)
                }

                fn rows_checked(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                    let g = group_bytes::<$b>(n);
                    assert!(
                        g.is_some_and(|g| {
                            out.len().is_multiple_of(X) && w.len() == out.len() / X * g
                        }) && a.len() == n / <$a>::LEN * size_of::<$a>(),
                        "{}: dot_rows sizes", stringify!($ctor)
                    );
                    // SAFETY: dotprod is present (see `cpu::levels`: i8mm CPUs have it too);
                    // sizes checked above.
                    unsafe { $rows(n, w, a, out) }
                }

                fn tile_checked(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
                    assert!(
                        tile_fits(group_bytes::<$b>(cols), $pb(cols), w, panels, out),
                        "{}: tile sizes", stringify!($ctor)
                    );
                    // SAFETY: dotprod is present (see `cpu::levels`); sizes checked above.
                    unsafe { $tile(cols, w, panels, out) }
                }

                RepackKernels {
                    rows: X,
                    pack: pack_checked,
                    dot_rows: rows_checked,
                    gemm: $gemm(tile_checked),
                }
            }

            /// The same layout with dotprod's decode and `smmla` panels.
            pub(crate) const fn $mm_ctor() -> RepackKernels {
                fn tile_checked(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
                    assert!(
                        tile_fits(group_bytes::<$b>(cols), $mm_pb(cols), w, panels, out),
                        "{}: tile sizes", stringify!($mm_ctor)
                    );
                    // SAFETY: dotprod and i8mm are present (see `cpu::levels`); sizes
                    // checked above.
                    unsafe { $mm_tile(cols, w, panels, out) }
                }

                RepackKernels {
                    gemm: $mm_gemm(tile_checked),
                    ..$ctor()
                }
            }
        )*};
    }
    interleaved! {
        x4_q4_0, mm4_q4_0: BlockQ4_0, BlockQ8_0, pack::<XQ4_0>, rows_q4_0, tile_q4_0,
            gemm_q8_0, panel_bytes_q8, mm_tile_q4_0, i8mm_q8_0, i8mm::panel_bytes;
        x4_q8_0, mm4_q8_0: BlockQ8_0, BlockQ8_0, pack::<XQ8_0>, rows_q8_0, tile_q8_0,
            gemm_q8_0, panel_bytes_q8, mm_tile_q8_0, i8mm_q8_0, i8mm::panel_bytes;
        x4_q4_k, mm4_q4_k: BlockQ4_K, BlockQ8_K, pack_q4_k, rows_q4_k, tile_q4_k,
            gemm_q8_k, panel_bytes_q8_k, mm_tile_q4_k, i8mm_q8_k, i8mm::panel_bytes_k;
        x4_q6_k, mm4_q6_k: BlockQ6_K, BlockQ8_K, pack_q6_k, rows_q6_k, tile_q6_k,
            gemm_q8_k, panel_bytes_q8_k, mm_tile_q6_k, i8mm_q8_k, i8mm::panel_bytes_k;
    }
}

pub(crate) use w::{mm4_q4_0, mm4_q4_k, mm4_q6_k, mm4_q8_0, x4_q4_0, x4_q4_k, x4_q6_k, x4_q8_0};
