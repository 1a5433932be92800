//! Panel kernels for prefill: the weights stay in ggml's layout, in place; the activations
//! of [`PANEL`] tokens are interleaved so that one 32-byte vector holds four consecutive
//! quants of each of the eight tokens. A weight row's four quants are broadcast against it
//! (`maddubs`, weights unsigned on the left), leaving one token per `i32` lane: no
//! horizontal sums, and each weight block, unpacked once, serves every panel.
//!
//! Panel layouts (per block of the activation type):
//! - Q8_0/Q8_1 (32 values, 320 bytes): quants `[group 8][token 8][4]`, then `d` as 8 `f32`,
//!   then 8 × 4 bytes of extra: the `i32` sum of the quants (Q8_0) or `s` as `f32` (Q8_1).
//! - Q8_K (256 values, 2336 bytes): quants `[group 64][token 8][4]`, `d` as 8 `f32`, then
//!   the `bsums` as `[pair 8][token 8][2 × i16]`.
//! - F32 (for F32 and F16 weights): the 8 tokens' values one token after the other.
//!
//! With AVX-VNNI (the `vnni_*` tiles), one `vpdpbusd` takes the place of `maddubs` and the
//! adds that widen its `i16` sums, and the sums stay in `i32` from the start.
//!
//! Integer sums are exact, as in the reference; where weights are stored with an offset
//! (Q4_0: `q - 8`, Q5_0: `q - 16`, Q6_K: `q - 32`) the offset times the activation sums is
//! subtracted in integers, so every block's integer dot equals the reference's.
//!
//! # Safety
//! The `tile_*` functions need AVX2, FMA and F16C (the `vnni_tile_*` ones AVX-VNNI as well)
//! and the sizes the wrappers in `x86/mod.rs` check: whole rows in `w`, whole panels in `panels`, and `out` holding
//! `rows × panels × PANEL` values.

// Register tiles are indexed by row, token and group together; index loops say it best.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;
use std::cell::Cell;

use super::dot::{q45k_bytes, q45k_group, q6k_half};
use super::{bits_to_bytes, dpbusd, dpwssd, f16_at, hsum, load256, nibbles, q4k_scales};
use crate::quant::f16_to_f32;
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ6_K, BlockQ8_0};
use crate::quant::{BlockQ8_1, BlockQ8_K};
use crate::spare::Spare;
use crate::QK_K;

/// Tokens per panel: one per `i32` lane of a 256-bit vector.
pub(crate) const PANEL: usize = 8;

/// Weight rows multiplied together (their accumulators stay in registers).
const R: usize = 4;

/// Weight values unpacked at a time, per row.
const KV: usize = 1024;

const Q8_PANEL_BLOCK: usize = 8 * 32 + 32 + 32;
const Q8K_PANEL_BLOCK: usize = 64 * 32 + 32 + 256;

pub(crate) fn panel_bytes_q8(cols: usize) -> usize {
    cols / 32 * Q8_PANEL_BLOCK
}

pub(crate) fn panel_bytes_q8_k(cols: usize) -> usize {
    cols / QK_K * Q8K_PANEL_BLOCK
}

pub(crate) fn panel_bytes_f32(cols: usize) -> usize {
    cols * PANEL * 4
}

/// Packs 8 tokens of Q8_0 blocks (34 bytes: `f16` d, 32 quants).
pub(crate) fn pack_q8_0(cols: usize, acts: &[u8], panel: &mut [u8]) {
    pack_q8(cols, acts, panel, size_of::<BlockQ8_0>(), 2, |blk| {
        let sum: i32 = blk[2..].iter().map(|&q| q as i8 as i32).sum();
        sum.to_le_bytes()
    });
}

/// Packs 8 tokens of Q8_1 blocks (36 bytes: `f16` d, `f16` s, 32 quants).
pub(crate) fn pack_q8_1(cols: usize, acts: &[u8], panel: &mut [u8]) {
    pack_q8(cols, acts, panel, size_of::<BlockQ8_1>(), 4, |blk| {
        f16_to_f32(half::f16::from_le_bytes([blk[2], blk[3]])).to_le_bytes()
    });
}

fn pack_q8(
    cols: usize,
    acts: &[u8],
    panel: &mut [u8],
    block: usize,
    qs: usize,
    extra: impl Fn(&[u8]) -> [u8; 4],
) {
    let nb = cols / 32;
    let row = nb * block;
    for (b, pb) in panel.chunks_exact_mut(Q8_PANEL_BLOCK).enumerate().take(nb) {
        for t in 0..PANEL {
            let blk = &acts[t * row + b * block..t * row + (b + 1) * block];
            for g in 0..8 {
                let o = g * 32 + t * 4;
                pb[o..o + 4].copy_from_slice(&blk[qs + 4 * g..qs + 4 * g + 4]);
            }
            let d = f16_to_f32(half::f16::from_le_bytes([blk[0], blk[1]]));
            pb[256 + 4 * t..260 + 4 * t].copy_from_slice(&d.to_le_bytes());
            pb[288 + 4 * t..292 + 4 * t].copy_from_slice(&extra(blk));
        }
    }
}

/// Packs 8 tokens of Q8_K blocks (292 bytes: `f32` d, 256 quants, 16 `i16` bsums).
pub(crate) fn pack_q8_k(cols: usize, acts: &[u8], panel: &mut [u8]) {
    let nb = cols / QK_K;
    const BB: usize = size_of::<BlockQ8_K>();
    let row = nb * BB;
    for (b, pb) in panel.chunks_exact_mut(Q8K_PANEL_BLOCK).enumerate().take(nb) {
        for t in 0..PANEL {
            let blk = &acts[t * row + b * BB..t * row + (b + 1) * BB];
            for g in 0..64 {
                let o = g * 32 + t * 4;
                pb[o..o + 4].copy_from_slice(&blk[4 + 4 * g..8 + 4 * g]);
            }
            pb[2048 + 4 * t..2052 + 4 * t].copy_from_slice(&blk[..4]);
            for p in 0..8 {
                let o = 2080 + 32 * p + 4 * t;
                pb[o..o + 4].copy_from_slice(&blk[260 + 4 * p..264 + 4 * p]);
            }
        }
    }
}

/// Packs 8 tokens of `f32` values (as they are).
pub(crate) fn pack_f32(_cols: usize, acts: &[u8], panel: &mut [u8]) {
    panel.copy_from_slice(acts);
}

/// Packs 8 tokens of `f16` values, widened to `f32` (exactly).
pub(crate) fn pack_f16(_cols: usize, acts: &[u8], panel: &mut [u8]) {
    for (out, h) in panel.chunks_exact_mut(4).zip(acts.chunks_exact(2)) {
        out.copy_from_slice(&f16_to_f32(half::f16::from_le_bytes([h[0], h[1]])).to_le_bytes());
    }
}

/// Asks for the bytes `cols` of the [`R`] rows from `row` on (those of `w` that exist) to be
/// brought into the cache while this group's rows are multiplied: with the weights streamed
/// from memory, waiting for each group's lines at its unpacking left the panels at half the
/// speed they have on cached weights.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn prefetch_next(w: &[u8], row_bytes: usize, row: usize, bytes: core::ops::Range<usize>) {
    if bytes.is_empty() {
        return;
    }
    for r in row..(row + R).min(w.len() / row_bytes) {
        // Every 64 bytes from the start, and the last byte: a range that starts inside a
        // cache line ends in one that the steps can miss.
        let last = bytes.end - 1;
        for at in bytes.clone().step_by(64).chain(core::iter::once(last)) {
            // In bounds: `r` is a row of `w` and `at` a byte of it.
            _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().add(r * row_bytes + at).cast());
        }
    }
}

/// The four bytes at `p` broadcast to every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bcast4(p: *const u8) -> __m256i {
    _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// Unpacked weights of up to [`R`] rows and [`KV`] values: quants one byte per value in
/// value order, and the per-block scales.
struct Unpacked {
    /// Quants (unsigned, but for the magnitudes of Q8_0).
    q: [[u8; KV]; R],
    /// Q8_0 only: the signed quants, whose signs go onto the activations.
    s: [[u8; KV]; R],
    /// Per 32-value block (legacy) or super-block (k-quants): `d`.
    d: [[f32; KV / 32]; R],
    /// Q4_1: `m` per block; Q4_K, Q5_K: `dmin` per super-block.
    m: [[f32; KV / 32]; R],
    /// K-quants, per super-block: the sub-block scales (Q4_K, Q5_K: 8, Q6_K: 16), as `i32` so
    /// that a vector broadcast reads one straight from memory.
    sc: [[[i32; 16]; KV / QK_K]; R],
    /// K-quants, per super-block: `i16` pairs multiplying the bsum pairs (Q4_K: the mins
    /// `(m_j, m_j)`, as Q5_K's; Q6_K: the scales `(sc_2p, sc_2p+1)`).
    pairs: [[[u32; 8]; KV / QK_K]; R],
}

thread_local! {
    static SPARE: Cell<Option<Box<Unpacked>>> = const { Cell::new(None) };
}

impl Unpacked {
    /// This thread's buffer ([`crate::spare`]).
    fn spare() -> Spare<Unpacked> {
        Spare::take(&SPARE, Unpacked::new)
    }

    fn new() -> Box<Unpacked> {
        Box::new(Unpacked {
            q: [[0; KV]; R],
            s: [[0; KV]; R],
            d: [[0.0; KV / 32]; R],
            m: [[0.0; KV / 32]; R],
            sc: [[[0; 16]; KV / QK_K]; R],
            pairs: [[[0; 8]; KV / QK_K]; R],
        })
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q8_0: u8 = 3;

const fn legacy_bytes(k: u8) -> usize {
    match k {
        Q4_0 => size_of::<BlockQ4_0>(),
        Q4_1 => size_of::<BlockQ4_1>(),
        Q5_0 => size_of::<BlockQ5_0>(),
        _ => size_of::<BlockQ8_0>(),
    }
}

/// The panel kernels' entry points: `name: body::<format, vnni>`. The AVX-VNNI ones are the
/// same tiles with each `maddubs` and the adds that widen its sums replaced by one `vpdpbusd`.
macro_rules! tiles {
    ($($name:ident: $body:ident::<$k:ident, $vnni:literal>;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
            $body::<$k, $vnni>(cols, w, panels, out)
        }
    )*};
}
tiles! {
    tile_q4_0: tile_legacy::<Q4_0, false>;
    tile_q4_1: tile_legacy::<Q4_1, false>;
    tile_q5_0: tile_legacy::<Q5_0, false>;
    tile_q8_0: tile_legacy::<Q8_0, false>;
    tile_q4_k: tile_kquant::<Q4_K, false>;
    tile_q5_k: tile_kquant::<Q5_K, false>;
    tile_q6_k: tile_kquant::<Q6_K, false>;
    vnni_tile_q4_0: tile_legacy::<Q4_0, true>;
    vnni_tile_q4_1: tile_legacy::<Q4_1, true>;
    vnni_tile_q5_0: tile_legacy::<Q5_0, true>;
    vnni_tile_q8_0: tile_legacy::<Q8_0, true>;
    vnni_tile_q4_k: tile_kquant::<Q4_K, true>;
    vnni_tile_q5_k: tile_kquant::<Q5_K, true>;
    vnni_tile_q6_k: tile_kquant::<Q6_K, true>;
}

/// The 32-value formats, `K` one of the constants above; `VNNI`: with `vpdpbusd`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_legacy<const K: u8, const VNNI: bool>(
    cols: usize,
    w: &[u8],
    panels: &[u8],
    out: &mut [f32],
) {
    let bb = legacy_bytes(K);
    let nb = cols / 32;
    let rb = nb * bb;
    let rows = w.len() / rb;
    let pb = nb * Q8_PANEL_BLOCK;
    let np = panels.len() / pb;
    let mut spare = Unpacked::spare();
    let u = &mut *spare;
    let mut r0 = 0;
    while r0 < rows {
        let nr = if rows - r0 >= R { R } else { 1 };
        for b0 in (0..nb).step_by(KV / 32) {
            let nbc = (nb - b0).min(KV / 32);
            for r in 0..nr {
                unpack_legacy::<K>(w.as_ptr().add((r0 + r) * rb + b0 * bb), nbc, u, r);
            }
            prefetch_next(w, rb, r0 + nr, b0 * bb..(b0 + nbc) * bb);
            for p in 0..np {
                let pan = panels.as_ptr().add(p * pb + b0 * Q8_PANEL_BLOCK);
                let o = out.as_mut_ptr().add((p * rows + r0) * PANEL);
                if nr == R {
                    legacy_blocks::<K, R, VNNI>(u, nbc, pan, o, b0 == 0);
                } else {
                    legacy_blocks::<K, 1, VNNI>(u, nbc, pan, o, b0 == 0);
                }
            }
        }
        r0 += nr;
    }
}

/// Unpacks `nb` blocks at `x` into row `r` of `u`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_legacy<const K: u8>(x: *const u8, nb: usize, u: &mut Unpacked, r: usize) {
    let bb = legacy_bytes(K);
    for b in 0..nb {
        let x = x.add(b * bb);
        u.d[r][b] = f16_at(x);
        let q = match K {
            Q4_0 => nibbles(x.add(2)),
            Q4_1 => {
                u.m[r][b] = f16_at(x.add(2));
                nibbles(x.add(4))
            }
            Q5_0 => {
                let high = _mm256_and_si256(bits_to_bytes(x.add(2)), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(x.add(6)), high)
            }
            _ => {
                let q = load256(x.add(2));
                _mm256_storeu_si256(u.s[r].as_mut_ptr().add(32 * b).cast(), q);
                _mm256_sign_epi8(q, q)
            }
        };
        _mm256_storeu_si256(u.q[r].as_mut_ptr().add(32 * b).cast(), q);
    }
}

/// `NR` rows of `u` times one panel over `nb` blocks, added to (or, when `first`, written
/// to) the `NR × 8` results at `o`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn legacy_blocks<const K: u8, const NR: usize, const VNNI: bool>(
    u: &Unpacked,
    nb: usize,
    pan: *const u8,
    o: *mut f32,
    first: bool,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); NR];
    if !first {
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(o.add(8 * r));
        }
    }
    for b in 0..nb {
        let pb = pan.add(b * Q8_PANEL_BLOCK);
        let mut s32 = [_mm256_setzero_si256(); NR];
        if K == Q8_0 {
            if VNNI {
                s32 = vnni_sums::<NR, 8>(|r, g| {
                    let off = 32 * b + 4 * g;
                    let a = load256(pb.add(32 * g));
                    let signed = _mm256_sign_epi8(a, bcast4(u.s[r].as_ptr().add(off)));
                    (bcast4(u.q[r].as_ptr().add(off)), signed)
                });
            } else {
                for g in 0..8 {
                    let a = load256(pb.add(32 * g));
                    for r in 0..NR {
                        let off = 32 * b + 4 * g;
                        let signed = _mm256_sign_epi8(a, bcast4(u.s[r].as_ptr().add(off)));
                        let p = _mm256_maddubs_epi16(bcast4(u.q[r].as_ptr().add(off)), signed);
                        s32[r] = _mm256_add_epi32(s32[r], _mm256_madd_epi16(p, ones));
                    }
                }
            }
        } else {
            if VNNI {
                s32 = vnni_sums::<NR, 8>(|r, g| {
                    let wq = bcast4(u.q[r].as_ptr().add(32 * b + 4 * g));
                    (wq, load256(pb.add(32 * g)))
                });
            } else {
                legacy_sums_i16::<K, NR>(u, b, pb, &mut s32);
            }
            let sums = _mm256_loadu_si256(pb.add(288).cast());
            for r in 0..NR {
                if K == Q4_0 {
                    s32[r] = _mm256_sub_epi32(s32[r], _mm256_slli_epi32(sums, 3));
                } else if K == Q5_0 {
                    s32[r] = _mm256_sub_epi32(s32[r], _mm256_slli_epi32(sums, 4));
                }
            }
        }
        let da = _mm256_loadu_ps(pb.add(256).cast());
        for r in 0..NR {
            let d = _mm256_mul_ps(_mm256_set1_ps(u.d[r][b]), da);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[r]), d, acc[r]);
            if K == Q4_1 {
                let s = _mm256_loadu_ps(pb.add(288).cast());
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(u.m[r][b]), s, acc[r]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(o.add(8 * r), *a);
    }
}

/// `Σ_g dpbusd(w, a)` for each of `NR` rows over `G` groups, where `operands(r, g)` gives row
/// `r`'s broadcast weights and the panel's activations of group `g`. Even and odd groups
/// accumulate apart: `vpdpbusd` waits for its accumulator (5 cycles), so one chain per row
/// would run at half its throughput. Always inlined into the AVX2 kernels that call it
/// (stable Rust allows no `#[target_feature]` beside `#[inline(always)]`).
#[inline(always)]
unsafe fn vnni_sums<const NR: usize, const G: usize>(
    operands: impl Fn(usize, usize) -> (__m256i, __m256i),
) -> [__m256i; NR] {
    const { assert!(G.is_multiple_of(2), "groups come in even/odd pairs") };
    let mut even = [_mm256_setzero_si256(); NR];
    let mut odd = [_mm256_setzero_si256(); NR];
    for g in (0..G).step_by(2) {
        for r in 0..NR {
            let (w, a) = operands(r, g);
            even[r] = dpbusd(even[r], w, a);
            let (w, a) = operands(r, g + 1);
            odd[r] = dpbusd(odd[r], w, a);
        }
    }
    let mut sums = even;
    for r in 0..NR {
        sums[r] = _mm256_add_epi32(even[r], odd[r]);
    }
    sums
}

/// With VNNI: `isum[r] += Σ_j sc_j · (row r's sum over sub-block j)` for super-block `b` of
/// `u` against its panel block at `pb`, in sub-blocks of `G` groups of four values (Q4_K: 8,
/// Q6_K: 4).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn vnni_subblocks<const NR: usize, const G: usize>(
    u: &Unpacked,
    b: usize,
    pb: *const u8,
    isum: &mut [__m256i; NR],
) {
    for j in 0..QK_K / (4 * G) {
        let s32 = vnni_sums::<NR, G>(|r, g| {
            let g = G * j + g;
            let w = bcast4(u.q[r].as_ptr().add(QK_K * b + 4 * g));
            (w, load256(pb.add(32 * g)))
        });
        for r in 0..NR {
            let sc = _mm256_set1_epi32(u.sc[r][b][j]);
            isum[r] = _mm256_add_epi32(isum[r], _mm256_mullo_epi32(s32[r], sc));
        }
    }
}

/// Without VNNI: a block's sums of unsigned 4- or 5-bit quants times a panel, through `i16`
/// pair sums, added to `s32` (zero on entry: Q5_0 writes its first half). 8 groups of 4-bit
/// pair sums fit in i16 (8 · 2 · 15 · 127); 5-bit ones only 4 (4 · 2 · 31 · 127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn legacy_sums_i16<const K: u8, const NR: usize>(
    u: &Unpacked,
    b: usize,
    pb: *const u8,
    s32: &mut [__m256i; NR],
) {
    let ones = _mm256_set1_epi16(1);
    let mut s16 = [_mm256_setzero_si256(); NR];
    for g in 0..8 {
        if K == Q5_0 && g == 4 {
            for r in 0..NR {
                s32[r] = _mm256_madd_epi16(s16[r], ones);
                s16[r] = _mm256_setzero_si256();
            }
        }
        let a = load256(pb.add(32 * g));
        for r in 0..NR {
            let wq = bcast4(u.q[r].as_ptr().add(32 * b + 4 * g));
            s16[r] = _mm256_add_epi16(s16[r], _mm256_maddubs_epi16(wq, a));
        }
    }
    for r in 0..NR {
        s32[r] = _mm256_add_epi32(s32[r], _mm256_madd_epi16(s16[r], ones));
    }
}

const Q4_K: u8 = 4;
const Q5_K: u8 = 5;
const Q6_K: u8 = 6;

/// The k-quants with Q8_K activations, `K` one of `Q4_K`, `Q5_K`, `Q6_K`; `VNNI`: with
/// `vpdpbusd`. Q5_K is Q4_K with a fifth bit on each quant.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_kquant<const K: u8, const VNNI: bool>(
    cols: usize,
    w: &[u8],
    panels: &[u8],
    out: &mut [f32],
) {
    let bb = if K == Q6_K {
        size_of::<BlockQ6_K>()
    } else {
        q45k_bytes(K == Q5_K)
    };
    let nb = cols / QK_K;
    let rb = nb * bb;
    let rows = w.len() / rb;
    let pb = nb * Q8K_PANEL_BLOCK;
    let np = panels.len() / pb;
    let mut spare = Unpacked::spare();
    let u = &mut *spare;
    let mut r0 = 0;
    while r0 < rows {
        let nr = if rows - r0 >= R { R } else { 1 };
        for b0 in (0..nb).step_by(KV / QK_K) {
            let nbc = (nb - b0).min(KV / QK_K);
            for r in 0..nr {
                let x = w.as_ptr().add((r0 + r) * rb + b0 * bb);
                match K {
                    Q4_K => unpack_q45_k::<false>(x, nbc, u, r),
                    Q5_K => unpack_q45_k::<true>(x, nbc, u, r),
                    _ => unpack_q6_k(x, nbc, u, r),
                }
            }
            prefetch_next(w, rb, r0 + nr, b0 * bb..(b0 + nbc) * bb);
            for p in 0..np {
                let pan = panels.as_ptr().add(p * pb + b0 * Q8K_PANEL_BLOCK);
                let o = out.as_mut_ptr().add((p * rows + r0) * PANEL);
                if nr == R {
                    kquant_blocks::<K, R, VNNI>(u, nbc, pan, o, b0 == 0);
                } else {
                    kquant_blocks::<K, 1, VNNI>(u, nbc, pan, o, b0 == 0);
                }
            }
        }
        r0 += nr;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q45_k<const FIVE: bool>(x: *const u8, nb: usize, u: &mut Unpacked, r: usize) {
    for b in 0..nb {
        let x = x.add(q45k_bytes(FIVE) * b);
        u.d[r][b] = f16_at(x);
        u.m[r][b] = f16_at(x.add(2));
        let (sc, m) = q4k_scales(core::slice::from_raw_parts(x.add(4), 12));
        for j in 0..8 {
            u.sc[r][b][j] = sc[j] as i32;
            u.pairs[r][b][j] = m[j] as u32 * 0x0001_0001;
        }
        let q = u.q[r].as_mut_ptr().add(QK_K * b);
        for j in 0..4 {
            let [lo, hi] = q45k_group::<FIVE>(x, j);
            _mm256_storeu_si256(q.add(64 * j).cast(), lo);
            _mm256_storeu_si256(q.add(64 * j + 32).cast(), hi);
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q6_k(x: *const u8, nb: usize, u: &mut Unpacked, r: usize) {
    for b in 0..nb {
        let x = x.add(size_of::<BlockQ6_K>() * b);
        u.d[r][b] = f16_at(x.add(208));
        let sc = core::slice::from_raw_parts(x.add(192).cast::<i8>(), 16);
        for j in 0..16 {
            u.sc[r][b][j] = sc[j] as i32;
        }
        for p in 0..8 {
            u.pairs[r][b][p] =
                (sc[2 * p] as i16 as u16 as u32) | (sc[2 * p + 1] as i16 as u16 as u32) << 16;
        }
        let q = u.q[r].as_mut_ptr().add(QK_K * b);
        for half in 0..2 {
            let v = q6k_half(x.add(64 * half), x.add(128 + 32 * half));
            for (k, v) in v.iter().enumerate() {
                _mm256_storeu_si256(q.add(128 * half + 32 * k).cast(), *v);
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kquant_blocks<const K: u8, const NR: usize, const VNNI: bool>(
    u: &Unpacked,
    nb: usize,
    pan: *const u8,
    o: *mut f32,
    first: bool,
) {
    let mut acc = [_mm256_setzero_ps(); NR];
    if !first {
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(o.add(8 * r));
        }
    }
    for b in 0..nb {
        let pb = pan.add(b * Q8K_PANEL_BLOCK);
        let mut isum = [_mm256_setzero_si256(); NR];
        let q = |r: usize, g: usize| bcast4(u.q[r].as_ptr().add(QK_K * b + 4 * g));
        if VNNI {
            // Sub-blocks of 32 (Q4_K, Q5_K) or 16 (Q6_K) values: 8 or 4 groups of four.
            if K == Q4_K || K == Q5_K {
                vnni_subblocks::<NR, 8>(u, b, pb, &mut isum);
            } else {
                vnni_subblocks::<NR, 4>(u, b, pb, &mut isum);
            }
        } else if K == Q4_K || K == Q5_K {
            // Sub-blocks of 32: 8 groups of 4-bit pair sums fit in i16, of 5-bit ones 4
            // (4 · 2 · 31 · 128).
            let run = if K == Q4_K { 8 } else { 4 };
            for j in 0..8 {
                for g0 in (8 * j..8 * j + 8).step_by(run) {
                    let mut s16 = [_mm256_setzero_si256(); NR];
                    for g in g0..g0 + run {
                        let a = load256(pb.add(32 * g));
                        for r in 0..NR {
                            let p = _mm256_maddubs_epi16(q(r, g), a);
                            s16[r] = _mm256_add_epi16(s16[r], p);
                        }
                    }
                    for r in 0..NR {
                        let sc = _mm256_set1_epi16(u.sc[r][b][j] as i16);
                        isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(s16[r], sc));
                    }
                }
            }
        } else {
            // Sub-blocks of 16: 6-bit pair sums fit in i16 two groups at a time.
            for j in 0..16 {
                let mut s16 = [[_mm256_setzero_si256(); 2]; NR];
                for h in 0..2 {
                    for g in 4 * j + 2 * h..4 * j + 2 * h + 2 {
                        let a = load256(pb.add(32 * g));
                        for r in 0..NR {
                            let p = _mm256_maddubs_epi16(q(r, g), a);
                            s16[r][h] = _mm256_add_epi16(s16[r][h], p);
                        }
                    }
                }
                for r in 0..NR {
                    let sc = _mm256_set1_epi16(u.sc[r][b][j] as i16);
                    let s = _mm256_add_epi32(
                        _mm256_madd_epi16(s16[r][0], sc),
                        _mm256_madd_epi16(s16[r][1], sc),
                    );
                    isum[r] = _mm256_add_epi32(isum[r], s);
                }
            }
        }
        // Σ_p pairs_p · (bsum_2p, bsum_2p+1) per token (after the products, so that the
        // compiler keeps no pairs in registers or on the stack across them).
        let mut psum = [_mm256_setzero_si256(); NR];
        for p in 0..8 {
            let bs = load256(pb.add(2080 + 32 * p));
            for r in 0..NR {
                let f = bcast4(u.pairs[r][b].as_ptr().add(p).cast());
                psum[r] = if VNNI {
                    dpwssd(psum[r], f, bs)
                } else {
                    _mm256_add_epi32(psum[r], _mm256_madd_epi16(f, bs))
                };
            }
        }
        let da = _mm256_loadu_ps(pb.add(2048).cast());
        for r in 0..NR {
            let d = _mm256_mul_ps(_mm256_set1_ps(u.d[r][b]), da);
            if K == Q4_K || K == Q5_K {
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), d, acc[r]);
                let dmin = _mm256_mul_ps(_mm256_set1_ps(u.m[r][b]), da);
                acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(psum[r]), dmin, acc[r]);
            } else {
                let i = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(psum[r], 5));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d, acc[r]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(o.add(8 * r), *a);
    }
}

/// F32 weights: rows 2 at a time, tokens 4 at a time, lanes along the row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_f32(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    tile_float::<false>(cols, w, panels, out)
}

/// F16 weights, widened with F16C, times `f32` panels.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_f16(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    tile_float::<true>(cols, w, panels, out)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_float<const F16: bool>(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    let wsz = if F16 { 2 } else { 4 };
    let rb = cols * wsz;
    let rows = w.len() / rb;
    let pb = panel_bytes_f32(cols);
    let np = panels.len() / pb;
    let mut r0 = 0;
    while r0 < rows {
        let nr = if rows - r0 >= 2 { 2 } else { 1 };
        for p in 0..np {
            let pan = panels.as_ptr().add(p * pb).cast::<f32>();
            for t0 in [0, 4] {
                let x = w.as_ptr().add(r0 * rb);
                let o = out.as_mut_ptr().add((p * rows + r0) * PANEL + t0);
                if nr == 2 {
                    float_tile::<F16, 2>(cols, x, rb, pan.add(t0 * cols), o);
                } else {
                    float_tile::<F16, 1>(cols, x, rb, pan.add(t0 * cols), o);
                }
            }
        }
        r0 += nr;
    }
}

/// Weight `k` of the row at `x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn wload<const F16: bool>(x: *const u8, k: usize) -> __m256 {
    if F16 {
        _mm256_cvtph_ps(_mm_loadu_si128(x.add(2 * k).cast()))
    } else {
        _mm256_loadu_ps(x.add(4 * k).cast())
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn wscalar<const F16: bool>(x: *const u8, k: usize) -> f32 {
    if F16 {
        f16_at(x.add(2 * k))
    } else {
        x.add(4 * k).cast::<f32>().read_unaligned()
    }
}

/// `NR` rows (stride `rb` bytes) times 4 tokens (stride `cols` values), results to
/// `o[8 r + t]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_tile<const F16: bool, const NR: usize>(
    cols: usize,
    x: *const u8,
    rb: usize,
    a: *const f32,
    o: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); 4]; NR];
    let main = cols / 8 * 8;
    for k in (0..main).step_by(8) {
        let wv: [__m256; NR] = core::array::from_fn(|r| wload::<F16>(x.add(r * rb), k));
        for t in 0..4 {
            let av = _mm256_loadu_ps(a.add(t * cols + k));
            for r in 0..NR {
                acc[r][t] = _mm256_fmadd_ps(wv[r], av, acc[r][t]);
            }
        }
    }
    for r in 0..NR {
        for t in 0..4 {
            let mut s = hsum(acc[r][t]);
            for k in main..cols {
                s += wscalar::<F16>(x.add(r * rb), k) * a.add(t * cols + k).read();
            }
            *o.add(8 * r + t) = s;
        }
    }
}
