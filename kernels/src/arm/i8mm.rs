//! `smmla` (i8mm) panel kernels. One `smmla` multiplies a 2 × 8 block of weights (two rows)
//! by an 8 × 2 block of activations (two tokens): 32 multiply-adds, the four results in one
//! vector. Weights are unpacked once per row pair to that interleaved layout; the panels of
//! 4 tokens are packed to it by [`pack_q8_0`] (32-value formats) and [`pack_q8_k`]
//! (K-quants).
//!
//! Panel layout per 32-value block (192 bytes): for each 8-value chunk `c` (4) and token
//! pair `tp` (tokens 0-1, 2-3): 8 quants of the first token then 8 of the second; then the
//! activation scales arranged as the `smmla` results are, `[d0, d1, d0, d1, d2, d3, d2, d3]`,
//! then Q8_1's `s` the same way (zeros for Q8_0).
//!
//! Panel layout per 256-value Q8_K block (1312 bytes): the quants as above for the 32 chunks
//! (1024 bytes), `d` as above (32 bytes), then for each 32-value sub-block `j` (8) the sums
//! of its quants (`bsum_2j + bsum_2j+1`) arranged the same way as `i32` (256 bytes): Q4_K's
//! and Q5_K's mins meet them.
//!
//! The kernels here read the weights in the file's layout (for Q4_0, Q8_0, Q4_K and Q6_K,
//! matrices that are not repacked; `interleaved.rs` has their kernels on repacked rows): a
//! K-quant's scales change every 16 or 32 values, so each sub-block's `smmla` sums are scaled
//! in integers before the super-block's float scales apply, as the reference does.
//!
//! # Safety
//! The `tile_*` functions need NEON and i8mm, and the sizes the wrappers check.

use core::arch::aarch64::*;
use core::arch::asm;
use std::cell::Cell;

use super::{f16_le, Unpacked, KV, PANEL, R};
use crate::quant::{BlockQ8_0, BlockQ8_1, BlockQ8_K};
use crate::spare::Spare;
use crate::GgmlType::{self, *};
use crate::QK_K;

/// Bytes of one Q8_0/Q8_1 panel block (see the module doc).
pub(super) const BLOCK: usize = 128 + 32 + 32;

pub(super) fn panel_bytes(cols: usize) -> usize {
    cols / 32 * BLOCK
}

fn pack(cols: usize, acts: &[u8], panel: &mut [u8], block: usize, qs: usize) {
    let row = cols / 32 * block;
    for (b, pb) in panel.chunks_exact_mut(BLOCK).enumerate() {
        for t in 0..PANEL {
            let blk = &acts[t * row + b * block..t * row + (b + 1) * block];
            let (tp, second) = (t / 2, t % 2);
            for c in 0..4 {
                let o = 32 * c + 16 * tp + 8 * second;
                pb[o..o + 8].copy_from_slice(&blk[qs + 8 * c..qs + 8 * c + 8]);
            }
            let d = f16_le(blk);
            let s = if qs == 4 { f16_le(&blk[2..]) } else { 0.0 };
            // Token t sits at lanes `second` and `second + 2` of its pair's vector.
            for lane in [second, second + 2] {
                let o = 128 + 16 * tp + 4 * lane;
                pb[o..o + 4].copy_from_slice(&d.to_le_bytes());
                pb[o + 32..o + 36].copy_from_slice(&s.to_le_bytes());
            }
        }
    }
}

pub(super) fn pack_q8_0(cols: usize, acts: &[u8], panel: &mut [u8]) {
    pack(cols, acts, panel, size_of::<BlockQ8_0>(), 2);
}

pub(super) fn pack_q8_1(cols: usize, acts: &[u8], panel: &mut [u8]) {
    pack(cols, acts, panel, size_of::<BlockQ8_1>(), 4);
}

/// `acc += a · bᵀ` for the 2 × 8 signed matrices `a` (weights) and `b` (activations).
#[inline]
#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY (of the asm): register-only arithmetic, available with i8mm.
    asm!(
        "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_q4_0(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
    tile(Q4_0, cols, w, p, out)
}

#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_q4_1(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
    tile(Q4_1, cols, w, p, out)
}

#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_q5_0(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
    tile(Q5_0, cols, w, p, out)
}

#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_q8_0(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
    tile(Q8_0, cols, w, p, out)
}

#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn tile(ty: GgmlType, cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    let bb = ty.block_bytes();
    let nb = cols / 32;
    let rb = nb * bb;
    let rows = w.len() / rb;
    let pb = nb * BLOCK;
    let np = panels.len() / pb;
    let mut spare = Unpacked::spare();
    let u = &mut *spare;
    let mut r0 = 0;
    while r0 < rows {
        let nr = (rows - r0).min(R);
        for b0 in (0..nb).step_by(KV / 32) {
            let nbc = (nb - b0).min(KV / 32);
            // Rows are taken in pairs; a last odd row is paired with itself.
            for r in 0..nr.next_multiple_of(2) {
                let src = r0 + r.min(nr - 1);
                u.legacy(ty, w.as_ptr().add(src * rb + b0 * bb), nbc, r);
            }
            for p in 0..np {
                let pan = panels.as_ptr().add(p * pb + b0 * BLOCK);
                let o = out.as_mut_ptr().add((p * rows + r0) * PANEL);
                for pair in 0..nr.div_ceil(2) {
                    let (ra, rb2) = (2 * pair, 2 * pair + 1);
                    // acc[tp]: [ra·t, ra·t', rb·t, rb·t'] for the tokens of pair tp.
                    let mut acc = [vdupq_n_f32(0.0); 2];
                    if b0 > 0 {
                        for (tp, acc) in acc.iter_mut().enumerate() {
                            let row = |r: usize| o.add(PANEL * r.min(nr - 1) + 2 * tp);
                            let v = [*row(ra), *row(ra).add(1), *row(rb2), *row(rb2).add(1)];
                            *acc = vld1q_f32(v.as_ptr());
                        }
                    }
                    for b in 0..nbc {
                        let blk = pan.add(b * BLOCK);
                        let qa = u.q[ra].as_ptr().add(32 * b);
                        let qb = u.q[rb2].as_ptr().add(32 * b);
                        let z = |o: usize| {
                            let a = vreinterpretq_s64_s8(vld1q_s8(qa.add(o)));
                            let b = vreinterpretq_s64_s8(vld1q_s8(qb.add(o)));
                            [vzip1q_s64(a, b), vzip2q_s64(a, b)].map(|v| vreinterpretq_s8_s64(v))
                        };
                        let [c0, c1] = z(0);
                        let [c2, c3] = z(16);
                        let dw = [u.d[ra][b], u.d[ra][b], u.d[rb2][b], u.d[rb2][b]];
                        let dw = vld1q_f32(dw.as_ptr());
                        for (tp, acc) in acc.iter_mut().enumerate() {
                            let act = |c: usize| vld1q_s8(blk.add(32 * c + 16 * tp).cast());
                            let mut s = vdupq_n_s32(0);
                            for (c, wc) in [c0, c1, c2, c3].into_iter().enumerate() {
                                s = smmla(s, wc, act(c));
                            }
                            let da = vld1q_f32(blk.add(128 + 16 * tp).cast());
                            *acc = vfmaq_f32(*acc, vcvtq_f32_s32(s), vmulq_f32(dw, da));
                            if ty == Q4_1 {
                                let m = [u.m[ra][b], u.m[ra][b], u.m[rb2][b], u.m[rb2][b]];
                                let sv = vld1q_f32(blk.add(160 + 16 * tp).cast());
                                *acc = vfmaq_f32(*acc, vld1q_f32(m.as_ptr()), sv);
                            }
                        }
                    }
                    for (tp, acc) in acc.iter().enumerate() {
                        let mut v = [0.0f32; 4];
                        vst1q_f32(v.as_mut_ptr(), *acc);
                        *o.add(PANEL * ra + 2 * tp) = v[0];
                        *o.add(PANEL * ra + 2 * tp + 1) = v[1];
                        if rb2 < nr {
                            *o.add(PANEL * rb2 + 2 * tp) = v[2];
                            *o.add(PANEL * rb2 + 2 * tp + 1) = v[3];
                        }
                    }
                }
            }
        }
        r0 += nr;
    }
}

/// Bytes of one Q8_K panel block (see the module doc).
pub(super) const K_BLOCK: usize = 1024 + 32 + 256;

pub(super) fn panel_bytes_k(cols: usize) -> usize {
    cols / QK_K * K_BLOCK
}

pub(super) fn pack_q8_k(cols: usize, acts: &[u8], panel: &mut [u8]) {
    const BB: usize = size_of::<BlockQ8_K>();
    let row = cols / QK_K * BB;
    for (b, pb) in panel.chunks_exact_mut(K_BLOCK).enumerate() {
        for t in 0..PANEL {
            let blk = &acts[t * row + b * BB..t * row + (b + 1) * BB];
            let (tp, second) = (t / 2, t % 2);
            for c in 0..QK_K / 8 {
                let o = 32 * c + 16 * tp + 8 * second;
                pb[o..o + 8].copy_from_slice(&blk[4 + 8 * c..12 + 8 * c]);
            }
            let bsum = |i: usize| i16::from_le_bytes([blk[260 + 2 * i], blk[261 + 2 * i]]) as i32;
            // Token t sits at lanes `second` and `second + 2` of its pair's vector.
            for lane in [second, second + 2] {
                let o = 1024 + 16 * tp + 4 * lane;
                pb[o..o + 4].copy_from_slice(&blk[..4]);
                for j in 0..8 {
                    let o = 1056 + 32 * j + 16 * tp + 4 * lane;
                    pb[o..o + 4].copy_from_slice(&(bsum(2 * j) + bsum(2 * j + 1)).to_le_bytes());
                }
            }
        }
    }
}

#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_q4_k(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
    tile_k(Q4_K, cols, w, p, out)
}

#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_q5_k(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
    tile_k(Q5_K, cols, w, p, out)
}

#[target_feature(enable = "neon,i8mm")]
pub(super) unsafe fn tile_q6_k(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
    tile_k(Q6_K, cols, w, p, out)
}

/// Super-blocks unpacked at a time, per row.
const KB: usize = KV / QK_K;

/// Up to [`R`] rows of K-quant weights unpacked by pairs, as `smmla` takes them: each row
/// pair's 8-value chunks with the first row's 8 quants then the second's, and the pair's
/// sub-block scales, mins and super-block scales arranged as the results are,
/// `[a, a, b, b]` (rows `a`, `b`; a last odd row is paired with itself).
struct Pairs {
    q: [[i8; 2 * KV]; R / 2],
    sc: [[[[i32; 4]; 16]; KB]; R / 2],
    mins: [[[[i32; 4]; 8]; KB]; R / 2],
    d: [[[f32; 4]; KB]; R / 2],
    dmin: [[[f32; 4]; KB]; R / 2],
}

thread_local! {
    static SPARE_PAIRS: Cell<Option<Box<Pairs>>> = const { Cell::new(None) };
}

impl Pairs {
    /// This thread's buffer ([`crate::spare`]).
    fn spare() -> Spare<Pairs> {
        Spare::take(&SPARE_PAIRS, Pairs::new)
    }

    fn new() -> Box<Pairs> {
        Box::new(Pairs {
            q: [[0; 2 * KV]; R / 2],
            sc: [[[[0; 4]; 16]; KB]; R / 2],
            mins: [[[[0; 4]; 8]; KB]; R / 2],
            d: [[[0.0; 4]; KB]; R / 2],
            dmin: [[[0.0; 4]; KB]; R / 2],
        })
    }

    /// Pairs the `nr` rows of `nb` super-blocks unpacked in `u`; rows past `nr` repeat the
    /// last one, so that every pair holds rows (the kernel stores only the first `nr`).
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn fill(&mut self, u: &Unpacked, nr: usize, nb: usize) {
        for pair in 0..R / 2 {
            let (a, b) = ((2 * pair).min(nr - 1), (2 * pair + 1).min(nr - 1));
            let dst = self.q[pair].as_mut_ptr();
            for c in 0..nb * QK_K / 16 {
                let x = vreinterpretq_s64_s8(vld1q_s8(u.q[a].as_ptr().add(16 * c)));
                let y = vreinterpretq_s64_s8(vld1q_s8(u.q[b].as_ptr().add(16 * c)));
                vst1q_s8(dst.add(32 * c), vreinterpretq_s8_s64(vzip1q_s64(x, y)));
                vst1q_s8(dst.add(32 * c + 16), vreinterpretq_s8_s64(vzip2q_s64(x, y)));
            }
            for k in 0..nb {
                for j in 0..16 {
                    self.sc[pair][k][j] = by_pair(u.sc[a][k][j], u.sc[b][k][j]);
                }
                for j in 0..8 {
                    self.mins[pair][k][j] = by_pair(u.mins[a][k][j], u.mins[b][k][j]);
                }
                self.d[pair][k] = by_pair(u.d[a][k], u.d[b][k]);
                self.dmin[pair][k] = by_pair(u.m[a][k], u.m[b][k]);
            }
        }
    }
}

/// A value of rows `a` and `b` in the lanes of their `smmla` results.
fn by_pair<T: Copy>(a: T, b: T) -> [T; 4] {
    [a, a, b, b]
}

/// Rows of Q4_K, Q5_K or Q6_K times panels of Q8_K activations: per super-block, row pair
/// and token pair, `d Σ_j sc_j Σ q q8 (- dmin Σ_j m_j bsum_j)` in one vector. The [`R`] rows
/// go as two pairs that share each activation load: four independent `smmla` chains.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn tile_k(ty: GgmlType, cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    const PAIRS: usize = R / 2;
    let bb = ty.block_bytes();
    let nb = cols / QK_K;
    let rb = nb * bb;
    let rows = w.len() / rb;
    let pb = nb * K_BLOCK;
    let np = panels.len() / pb;
    // Chunks of 8 values per sub-block: 16 values for Q6_K's scales, 32 for the others'.
    let chunks = if ty == Q6_K { 2 } else { 4 };
    let mut spare = Unpacked::spare();
    let u = &mut *spare;
    let mut pairs_spare = Pairs::spare();
    let pairs = &mut *pairs_spare;
    let mut r0 = 0;
    while r0 < rows {
        let nr = (rows - r0).min(R);
        for b0 in (0..nb).step_by(KB) {
            let nbc = (nb - b0).min(KB);
            for r in 0..nr {
                u.kquant(ty, w.as_ptr().add((r0 + r) * rb + b0 * bb), nbc, r);
            }
            pairs.fill(u, nr, nbc);
            for p in 0..np {
                let pan = panels.as_ptr().add(p * pb + b0 * K_BLOCK);
                let o = out.as_mut_ptr().add((p * rows + r0) * PANEL);
                // acc[pair][tp]: [a·t, a·t', b·t, b·t'] for rows a, b of the pair and the
                // tokens t, t' of token pair tp.
                let mut acc = [[vdupq_n_f32(0.0); 2]; PAIRS];
                if b0 > 0 {
                    for (pair, acc) in acc.iter_mut().enumerate() {
                        for (tp, acc) in acc.iter_mut().enumerate() {
                            let row = |r: usize| o.add(PANEL * r.min(nr - 1) + 2 * tp);
                            let (ra, rb2) = (row(2 * pair), row(2 * pair + 1));
                            let v = [*ra, *ra.add(1), *rb2, *rb2.add(1)];
                            *acc = vld1q_f32(v.as_ptr());
                        }
                    }
                }
                for b in 0..nbc {
                    let blk = pan.add(b * K_BLOCK);
                    let q = |pair: usize, c: usize| {
                        vld1q_s8(pairs.q[pair].as_ptr().add(2 * QK_K * b + 16 * c))
                    };
                    let act = |c: usize, tp: usize| vld1q_s8(blk.add(32 * c + 16 * tp).cast());
                    let mut isum = [[vdupq_n_s32(0); 2]; PAIRS];
                    for j in 0..QK_K / 8 / chunks {
                        let mut s = [[vdupq_n_s32(0); 2]; PAIRS];
                        for c in chunks * j..chunks * (j + 1) {
                            let a = [act(c, 0), act(c, 1)];
                            for (pair, s) in s.iter_mut().enumerate() {
                                let wq = q(pair, c);
                                s[0] = smmla(s[0], wq, a[0]);
                                s[1] = smmla(s[1], wq, a[1]);
                            }
                        }
                        for (pair, (isum, s)) in isum.iter_mut().zip(s).enumerate() {
                            let sc = vld1q_s32(pairs.sc[pair][b][j].as_ptr());
                            isum[0] = vmlaq_s32(isum[0], s[0], sc);
                            isum[1] = vmlaq_s32(isum[1], s[1], sc);
                        }
                    }
                    let da = [0, 1].map(|tp| vld1q_f32(blk.add(1024 + 16 * tp).cast()));
                    for (pair, acc) in acc.iter_mut().enumerate() {
                        let dw = vld1q_f32(pairs.d[pair][b].as_ptr());
                        let dmin = vld1q_f32(pairs.dmin[pair][b].as_ptr());
                        for (tp, acc) in acc.iter_mut().enumerate() {
                            let isum = vcvtq_f32_s32(isum[pair][tp]);
                            *acc = vfmaq_f32(*acc, isum, vmulq_f32(dw, da[tp]));
                            if ty != Q6_K {
                                let mut msum = vdupq_n_s32(0);
                                for j in 0..8 {
                                    let m = vld1q_s32(pairs.mins[pair][b][j].as_ptr());
                                    let bs = vld1q_s32(blk.add(1056 + 32 * j + 16 * tp).cast());
                                    msum = vmlaq_s32(msum, bs, m);
                                }
                                let dm = vmulq_f32(dmin, da[tp]);
                                *acc = vfmsq_f32(*acc, vcvtq_f32_s32(msum), dm);
                            }
                        }
                    }
                }
                for (pair, acc) in acc.iter().enumerate() {
                    for (tp, acc) in acc.iter().enumerate() {
                        let mut v = [0.0f32; 4];
                        vst1q_f32(v.as_mut_ptr(), *acc);
                        for (k, r) in [2 * pair, 2 * pair + 1].into_iter().enumerate() {
                            if r < nr {
                                *o.add(PANEL * r + 2 * tp) = v[2 * k];
                                *o.add(PANEL * r + 2 * tp + 1) = v[2 * k + 1];
                            }
                        }
                    }
                }
            }
        }
        r0 += nr;
    }
}
