//! Dot products of one weight row with one activation row (decode), in ggml's block
//! layouts. The integer sums of each block are exact; the float accumulation runs in eight
//! lanes, so results differ from the reference by float rounding only.
//!
//! # Safety
//! Every function needs AVX2, FMA and F16C, and `w`/`a` holding exactly `n` values of the
//! weight and activation types (the wrappers in `x86/mod.rs` check it).

// Row tiles index several arrays by row; index loops say it best.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::{bits_to_bytes, dot_i8, dot_u8, f16_at, hsum, load128, load256, nibbles, q4k_scales};
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_K, BlockQ6_K, BlockQ8_0};
use crate::quant::{BlockQ8_1, BlockQ8_K};
use crate::QK_K;

/// Q4_0 × Q8_0: `d_w d_a Σ (q - 8) q8` per block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    for i in 0..n / 32 {
        let (x, y) = (
            w.add(size_of::<BlockQ4_0>() * i),
            a.add(size_of::<BlockQ8_0>() * i),
        );
        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
        let q = _mm256_sub_epi8(nibbles(x.add(2)), _mm256_set1_epi8(8));
        let p = _mm256_cvtepi32_ps(dot_i8(q, load256(y.add(2))));
        acc[i & 1] = _mm256_fmadd_ps(d, p, acc[i & 1]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
}

/// Q4_1 × Q8_1: `d_w d_a Σ q q8 + m_w s_a` per block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut mins = 0.0f32;
    for i in 0..n / 32 {
        let (x, y) = (
            w.add(size_of::<BlockQ4_1>() * i),
            a.add(size_of::<BlockQ8_1>() * i),
        );
        // d and m of the weights, d and s of the activations, in one conversion each.
        let xs = _mm_cvtph_ps(_mm_cvtsi32_si128(x.cast::<i32>().read_unaligned()));
        let ys = _mm_cvtph_ps(_mm_cvtsi32_si128(y.cast::<i32>().read_unaligned()));
        let ds = _mm_mul_ps(xs, ys);
        mins += _mm_cvtss_f32(_mm_movehdup_ps(ds));
        let d = _mm256_broadcastss_ps(ds);
        let p = _mm256_cvtepi32_ps(dot_u8(nibbles(x.add(4)), load256(y.add(4))));
        acc[i & 1] = _mm256_fmadd_ps(d, p, acc[i & 1]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1])) + mins
}

/// Q5_0 × Q8_0: `d_w d_a Σ (q - 16) q8` per block, `q` with its fifth bit from `qh`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    for i in 0..n / 32 {
        let (x, y) = (
            w.add(size_of::<BlockQ5_0>() * i),
            a.add(size_of::<BlockQ8_0>() * i),
        );
        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
        // q - 16 = the nibble with 0xF0 or-ed in where the fifth bit is clear.
        let clear = _mm256_andnot_si256(bits_to_bytes(x.add(2)), _mm256_set1_epi8(0xF0u8 as i8));
        let q = _mm256_or_si256(nibbles(x.add(6)), clear);
        let p = _mm256_cvtepi32_ps(dot_i8(q, load256(y.add(2))));
        acc[i & 1] = _mm256_fmadd_ps(d, p, acc[i & 1]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
}

/// Q8_0 × Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    for i in 0..n / 32 {
        let (x, y) = (
            w.add(size_of::<BlockQ8_0>() * i),
            a.add(size_of::<BlockQ8_0>() * i),
        );
        let d = _mm256_set1_ps(f16_at(x) * f16_at(y));
        let p = _mm256_cvtepi32_ps(dot_i8(load256(x.add(2)), load256(y.add(2))));
        acc[i & 1] = _mm256_fmadd_ps(d, p, acc[i & 1]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
}

/// Q4_K × Q8_K: `d_w d_a Σ_j sc_j Σ q q8 - dmin_w d_a Σ_j m_j bsum_j` per super-block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let low = _mm256_set1_epi8(0x0F);
    for i in 0..n / QK_K {
        let (x, y) = (
            w.add(size_of::<BlockQ4_K>() * i),
            a.add(size_of::<BlockQ8_K>() * i),
        );
        let yd = y.cast::<f32>().read_unaligned();
        let d = yd * f16_at(x);
        let dmin = yd * f16_at(x.add(2));
        let (sc, m) = q4k_scales(core::slice::from_raw_parts(x.add(4), 12));

        // Mins: the eight mins times the sums of each 32 activations (pairs of bsums).
        let bs = load256(y.add(4 + QK_K));
        let bs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        let m16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(m.as_ptr().cast()));
        let pm = _mm_madd_epi16(m16, bs);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(pm), acc_m);

        let mut sumi = _mm256_setzero_si256();
        let (q, q8) = (x.add(16), y.add(4));
        for j in 0..4 {
            let q4 = load256(q.add(32 * j));
            let lo = _mm256_and_si256(q4, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low);
            let pl = _mm256_maddubs_epi16(lo, load256(q8.add(64 * j)));
            let ph = _mm256_maddubs_epi16(hi, load256(q8.add(64 * j + 32)));
            let pl = _mm256_madd_epi16(pl, _mm256_set1_epi16(sc[2 * j] as i16));
            let ph = _mm256_madd_epi16(ph, _mm256_set1_epi16(sc[2 * j + 1] as i16));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    hsum(acc) - _mm_cvtss_f32(m)
}

/// Bytes of a Q4_K block, or of a Q5_K block (`five`): its 32 bytes of fifth bits more.
pub(super) const fn q45k_bytes(five: bool) -> usize {
    if five {
        size_of::<BlockQ5_K>()
    } else {
        size_of::<BlockQ4_K>()
    }
}

/// Q5_K × Q8_K: as [`q4_k`], each quant with its fifth bit (see [`q45k_group`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut out = [0.0];
    q45k_rows::<1, true>(n, w.as_ptr(), w.len(), a.as_ptr(), &mut out);
    out[0]
}

/// The quants of values `64 j .. 64 j + 64` of a Q4_K block at `x`, or of a Q5_K block
/// (`FIVE`), as two vectors of 32 in value order. Each 64 values keep their low four bits
/// in 32 bytes, the first 32 in the low nibbles; Q5_K's fifth bits sit in the 32 bytes
/// before the nibbles, bit `2 j` of byte `l` for value `64 j + l` and bit `2 j + 1` for
/// value `64 j + 32 + l`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q45k_group<const FIVE: bool>(x: *const u8, j: usize) -> [__m256i; 2] {
    let low = _mm256_set1_epi8(0x0F);
    let q = load256(x.add(if FIVE { 48 } else { 16 } + 32 * j));
    let lo = _mm256_and_si256(q, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
    if !FIVE {
        return [lo, hi];
    }
    let qh = load256(x.add(16));
    // 16 in each byte whose bit `b` is set.
    let fifth = |b: usize| {
        let m = _mm256_set1_epi8((1u8 << b) as i8);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m);
        _mm256_and_si256(set, _mm256_set1_epi8(16))
    };
    [
        _mm256_or_si256(lo, fifth(2 * j)),
        _mm256_or_si256(hi, fifth(2 * j + 1)),
    ]
}

/// The 128 six-bit quants (0..64, before the -32) of one half of a Q6_K block, in value
/// order: four vectors of 32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q6k_half(ql: *const u8, qh: *const u8) -> [__m256i; 4] {
    let low = _mm256_set1_epi8(0x0F);
    let three = _mm256_set1_epi8(3);
    let (l0, l1, h) = (load256(ql), load256(ql.add(32)), load256(qh));
    let hi = |s: i32| {
        let v = match s {
            0 => h,
            2 => _mm256_srli_epi16(h, 2),
            4 => _mm256_srli_epi16(h, 4),
            _ => _mm256_srli_epi16(h, 6),
        };
        _mm256_slli_epi16(_mm256_and_si256(v, three), 4)
    };
    [
        _mm256_or_si256(_mm256_and_si256(l0, low), hi(0)),
        _mm256_or_si256(_mm256_and_si256(l1, low), hi(2)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), hi(4)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low), hi(6)),
    ]
}

/// Q6_K × Q8_K: `d_w d_a Σ_j sc_j Σ (q - 32) q8`, the -32 taken through Q8_K's `bsums`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / QK_K {
        let (x, y) = (
            w.add(size_of::<BlockQ6_K>() * i),
            a.add(size_of::<BlockQ8_K>() * i),
        );
        let d = y.cast::<f32>().read_unaligned() * f16_at(x.add(208));
        let scales = load128(x.add(192)); // 16 signed scales
        let sc = x.add(192).cast::<i8>();
        // Σ_j sc_j bsum_j, for the -32.
        let bs = load256(y.add(4 + QK_K));
        let corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), bs);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let q = q6k_half(x.add(64 * half), x.add(128 + 32 * half));
            for (k, &qk) in q.iter().enumerate() {
                let j = 8 * half + 2 * k; // sub-blocks j (low 128 bits) and j + 1 (high)
                let p = _mm256_maddubs_epi16(qk, load256(y.add(4 + 128 * half + 32 * k)));
                let s = _mm256_set_m128i(
                    _mm_set1_epi16(sc.add(j + 1).read() as i16),
                    _mm_set1_epi16(sc.add(j).read() as i16),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

/// F16 × F16, in `f32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let main = n / 32 * 32;
    for i in (0..main).step_by(32) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let o = 2 * (i + 8 * k);
            let xv = _mm256_cvtph_ps(load128(x.add(o)));
            let yv = _mm256_cvtph_ps(load128(y.add(o)));
            *acc = _mm256_fmadd_ps(xv, yv, *acc);
        }
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for i in main..n {
        sum += f16_at(x.add(2 * i)) * f16_at(y.add(2 * i));
    }
    sum
}

/// F32 × F32.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let main = n / 32 * 32;
    for i in (0..main).step_by(32) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let xv = _mm256_loadu_ps(x.add(i + 8 * k));
            let yv = _mm256_loadu_ps(y.add(i + 8 * k));
            *acc = _mm256_fmadd_ps(xv, yv, *acc);
        }
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for i in main..n {
        sum += x.add(i).read_unaligned() * y.add(i).read_unaligned();
    }
    sum
}

pub(super) const Q4_0: u8 = 0;
pub(super) const Q4_1: u8 = 1;
pub(super) const Q5_0: u8 = 2;
pub(super) const Q8_0: u8 = 3;

/// Bytes per block of the weights and of their activations, for the format coded `k`.
const fn legacy_bytes(k: u8) -> (usize, usize) {
    match k {
        Q4_0 => (size_of::<BlockQ4_0>(), size_of::<BlockQ8_0>()),
        Q4_1 => (size_of::<BlockQ4_1>(), size_of::<BlockQ8_1>()),
        Q5_0 => (size_of::<BlockQ5_0>(), size_of::<BlockQ8_0>()),
        _ => (size_of::<BlockQ8_0>(), size_of::<BlockQ8_0>()),
    }
}

/// Decode streams the weights from memory, and the hardware prefetcher alone falls behind:
/// a group of rows is read as `NR` interleaved streams. So at each step `i` of a group
/// (`bb` bytes of every row), this asks for the `NR bb` bytes at the same fraction of a
/// group further on: over the group's pass, the steps sweep that group's bytes from first
/// to last, one sequential stream. (Asking instead for each row's step `i` of that group,
/// `NR` streams again, left Q8_0 at SmolLM2's shapes at 61 % of the read bandwidth on one
/// thread of an AMD EPYC; the sweep, 101 %: `decode-stream`.) The group swept is two
/// ahead, or the next one where a group is 4 KiB or more: two large groups in flight
/// would crowd the activations out of L1.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn prefetch_ahead<const NR: usize>(w: *const u8, rb: usize, bb: usize, i: usize) {
    let group = NR * rb;
    let groups_ahead = if group >= 4096 { 1 } else { 2 };
    let ahead = w.wrapping_add(groups_ahead * group + NR * bb * i);
    for line in (0..NR * bb).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
    }
}

/// Several rows of a 32-value format times one activation row: rows four at a time, so
/// that four independent accumulations run side by side and share each activation block.
///
/// # Safety
/// As the module; `w` holds `out.len()` rows of `cols` values, `a` one activation row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows_legacy<const K: u8>(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let rb = cols / 32 * legacy_bytes(K).0;
    let mut r = 0;
    while r + 4 <= out.len() {
        legacy_rows::<K, 4>(
            cols,
            w.as_ptr().add(r * rb),
            rb,
            a.as_ptr(),
            &mut out[r..r + 4],
        );
        r += 4;
    }
    while r < out.len() {
        legacy_rows::<K, 1>(
            cols,
            w.as_ptr().add(r * rb),
            rb,
            a.as_ptr(),
            &mut out[r..r + 1],
        );
        r += 1;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn legacy_rows<const K: u8, const NR: usize>(
    cols: usize,
    w: *const u8,
    rb: usize,
    a: *const u8,
    out: &mut [f32],
) {
    let (wb, ab) = legacy_bytes(K);
    let mut acc = [_mm256_setzero_ps(); NR];
    let mut acc_m = [_mm_setzero_ps(); NR];
    for i in 0..cols / 32 {
        prefetch_ahead::<NR>(w, rb, wb, i);
        let y = a.add(ab * i);
        if K == Q4_1 {
            // [d, s] of the activations against [d, m] of each row.
            let ys = _mm_cvtph_ps(_mm_cvtsi32_si128(y.cast::<i32>().read_unaligned()));
            let ya = load256(y.add(4));
            for r in 0..NR {
                let x = w.add(r * rb + wb * i);
                let xs = _mm_cvtph_ps(_mm_cvtsi32_si128(x.cast::<i32>().read_unaligned()));
                let ds = _mm_mul_ps(xs, ys);
                acc_m[r] = _mm_add_ps(acc_m[r], ds);
                let p = _mm256_cvtepi32_ps(dot_u8(nibbles(x.add(4)), ya));
                acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), p, acc[r]);
            }
        } else {
            let dy = f16_at(y);
            let ya = load256(y.add(2));
            // Q4_0/Q5_0: the unsigned quants times y, less the offset (8 or 16) times Σ y,
            // which all the rows share.
            let ysum = dot_u8(_mm256_set1_epi8(1), ya);
            let offset = if K == Q4_0 {
                _mm256_slli_epi32(ysum, 3)
            } else {
                _mm256_slli_epi32(ysum, 4)
            };
            for r in 0..NR {
                let x = w.add(r * rb + wb * i);
                let p = match K {
                    Q4_0 => _mm256_sub_epi32(dot_u8(nibbles(x.add(2)), ya), offset),
                    Q5_0 => {
                        let high =
                            _mm256_and_si256(bits_to_bytes(x.add(2)), _mm256_set1_epi8(0x10));
                        let q = _mm256_or_si256(nibbles(x.add(6)), high);
                        _mm256_sub_epi32(dot_u8(q, ya), offset)
                    }
                    // Weights may be -128, whose sign cannot move; activations never are.
                    _ => dot_i8(load256(x.add(2)), ya),
                };
                let d = _mm256_set1_ps(f16_at(x) * dy);
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r]);
            }
        }
    }
    for r in 0..NR {
        let m = if K == Q4_1 {
            _mm_cvtss_f32(_mm_movehdup_ps(acc_m[r]))
        } else {
            0.0
        };
        out[r] = hsum(acc[r]) + m;
    }
}

/// Several rows of Q4_K times one Q8_K activation row, two rows at a time: the rows'
/// super-blocks side by side share each activation load and the activation sums, and two
/// independent accumulations keep the core busy while the weights stream in. (Two rows beat
/// four here, 1.04-1.24x against 0.86-1.18x over one row at a time, in `kq_ab`-style
/// timings of Qwen2.5-1.5B's shapes: four rows' registers spill.)
///
/// # Safety
/// As the module; `w` holds `out.len()` rows of `cols` values, `a` one activation row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows_q4_k(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    rows_by::<2>(
        cols,
        w,
        a,
        out,
        size_of::<BlockQ4_K>(),
        q45k_rows::<2, false>,
        q45k_rows::<1, false>,
    );
}

/// Several rows of Q5_K times one Q8_K activation row, as [`rows_q4_k`].
///
/// # Safety
/// As [`rows_q4_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows_q5_k(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    rows_by::<2>(
        cols,
        w,
        a,
        out,
        size_of::<BlockQ5_K>(),
        q45k_rows::<2, true>,
        q45k_rows::<1, true>,
    );
}

/// Several rows of Q6_K times one Q8_K activation row, as [`rows_q4_k`].
///
/// # Safety
/// As [`rows_q4_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows_q6_k(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    rows_by::<2>(
        cols,
        w,
        a,
        out,
        size_of::<BlockQ6_K>(),
        q6k_rows::<2>,
        q6k_rows::<1>,
    );
}

/// A kernel of `NR` k-quant rows: `(cols, first row, row bytes, activations, out)`.
type KRows = unsafe fn(usize, *const u8, usize, *const u8, &mut [f32]);

/// Runs `group` over the rows `NR` at a time and `one` over the rest.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_by<const NR: usize>(
    cols: usize,
    w: &[u8],
    a: &[u8],
    out: &mut [f32],
    block_bytes: usize,
    group: KRows,
    one: KRows,
) {
    let rb = cols / QK_K * block_bytes;
    let mut r = 0;
    while r + NR <= out.len() {
        group(
            cols,
            w.as_ptr().add(r * rb),
            rb,
            a.as_ptr(),
            &mut out[r..r + NR],
        );
        r += NR;
    }
    while r < out.len() {
        one(
            cols,
            w.as_ptr().add(r * rb),
            rb,
            a.as_ptr(),
            &mut out[r..r + 1],
        );
        r += 1;
    }
}

/// The `i16` lane `j` of `v` in every lane (both halves).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn broadcast_i16(v: __m256i, j: usize) -> __m256i {
    let lo = (2 * j) as i16;
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(lo | (lo + 1) << 8))
}

/// `NR` rows of Q4_K, or of Q5_K (`FIVE`): see [`q4_k`] for the arithmetic.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k_rows<const NR: usize, const FIVE: bool>(
    cols: usize,
    w: *const u8,
    rb: usize,
    a: *const u8,
    out: &mut [f32],
) {
    let bb = q45k_bytes(FIVE);
    let mut acc = [_mm256_setzero_ps(); NR];
    let mut acc_m = [_mm_setzero_ps(); NR];
    for i in 0..cols / QK_K {
        prefetch_ahead::<NR>(w, rb, bb, i);
        let y = a.add(size_of::<BlockQ8_K>() * i);
        let yd = y.cast::<f32>().read_unaligned();
        // The sums of each 32 activations (pairs of bsums), shared by the rows' mins.
        let bs = load256(y.add(4 + QK_K));
        let bs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        let q8 = y.add(4);
        for r in 0..NR {
            let x = w.add(r * rb + bb * i);
            let (sc, m) = q4k_scales(core::slice::from_raw_parts(x.add(4), 12));
            let pm = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64(m.as_ptr().cast())), bs);
            let dmin = _mm_set1_ps(yd * f16_at(x.add(2)));
            acc_m[r] = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(pm), acc_m[r]);
            let sc =
                _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr().cast())));
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let [lo, hi] = q45k_group::<FIVE>(x, j);
                let pl = _mm256_maddubs_epi16(lo, load256(q8.add(64 * j)));
                let ph = _mm256_maddubs_epi16(hi, load256(q8.add(64 * j + 32)));
                let pl = _mm256_madd_epi16(pl, broadcast_i16(sc, 2 * j));
                let ph = _mm256_madd_epi16(ph, broadcast_i16(sc, 2 * j + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            let d = _mm256_set1_ps(yd * f16_at(x));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    for r in 0..NR {
        let m = _mm_add_ps(acc_m[r], _mm_movehl_ps(acc_m[r], acc_m[r]));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[r] = hsum(acc[r]) - _mm_cvtss_f32(m);
    }
}

/// `NR` rows of Q6_K: see [`q6_k`] for the arithmetic.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_rows<const NR: usize>(
    cols: usize,
    w: *const u8,
    rb: usize,
    a: *const u8,
    out: &mut [f32],
) {
    const BB: usize = size_of::<BlockQ6_K>();
    let mut acc = [_mm256_setzero_ps(); NR];
    for i in 0..cols / QK_K {
        prefetch_ahead::<NR>(w, rb, BB, i);
        let y = a.add(size_of::<BlockQ8_K>() * i);
        let yd = y.cast::<f32>().read_unaligned();
        let bs = load256(y.add(4 + QK_K));
        for r in 0..NR {
            let x = w.add(r * rb + BB * i);
            let scales = load128(x.add(192)); // 16 signed scales
                                              // Σ_j sc_j bsum_j, for the -32.
            let corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), bs);
            let mut sumi = _mm256_setzero_si256();
            for half in 0..2 {
                let q = q6k_half(x.add(64 * half), x.add(128 + 32 * half));
                for (k, &qk) in q.iter().enumerate() {
                    // Scales j (low 128 bits) and j + 1 (high), j = 8 half + 2 k.
                    let j = (8 * half + 2 * k) as i8;
                    let pick = _mm_set_epi64x(
                        i64::from_le_bytes([j as u8 + 1; 8]),
                        i64::from_le_bytes([j as u8; 8]),
                    );
                    let s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                    let p = _mm256_maddubs_epi16(qk, load256(y.add(4 + 128 * half + 32 * k)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
                }
            }
            let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
            let d = _mm256_set1_ps(yd * f16_at(x.add(208)));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    for r in 0..NR {
        out[r] = hsum(acc[r]);
    }
}
