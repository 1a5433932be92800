//! The NEON and dotprod kernels, written once: `arm_kernels!(module, features, dot16,
//! gdot4)` compiles them with `features` enabled around the two integer-dot primitives.
//!
//! - `dot_*`: one weight row times one activation row in ggml's blocks (decode), lanes along
//!   the row: exact integer block sums, float accumulation in four lanes.
//! - `tile_*`: weight rows times packed panels of 4 tokens (prefill), one token per lane;
//!   each row's blocks are unpacked once to signed bytes and serve every panel.
//!
//! # Safety
//! Every function needs the module's features, and the sizes the wrappers in `arm/mod.rs`
//! check.

macro_rules! arm_kernels {
    ($m:ident, $feat:literal, $dot16:ident, $gdot4:ident) => {
        pub(super) mod $m {
            use super::{
                decode_quants, f16_at, f16x4, hsum4, legacy_type, nibbles, q4k_scales, q6k_half,
                $dot16, $gdot4, Unpacked, KV, LQ4_0, LQ4_1, LQ5_0, LQ8_0, PANEL, Q8K_PANEL_BLOCK,
                Q8_PANEL_BLOCK, R,
            };
            use crate::quant::{
                BlockQ4_1, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K,
            };
            use crate::GgmlType::{self, *};
            use crate::QK_K;
            use core::arch::aarch64::*;

            /// Sum of the 32 products of one block, in four `i32` lanes.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn block_dot(q: [int8x16_t; 2], y: *const u8) -> int32x4_t {
                let s = $dot16(vdupq_n_s32(0), q[0], vld1q_s8(y.cast()));
                $dot16(s, q[1], vld1q_s8(y.add(16).cast()))
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn legacy_dot<const T: u8>(n: usize, w: &[u8], a: &[u8]) -> f32 {
                let ty = legacy_type(T);
                let (wb, ab, qa) = match ty {
                    Q4_1 => (size_of::<BlockQ4_1>(), size_of::<BlockQ8_1>(), 4),
                    _ => (ty.block_bytes(), size_of::<BlockQ8_0>(), 2),
                };
                let (w, a) = (w.as_ptr(), a.as_ptr());
                let mut acc = vdupq_n_f32(0.0);
                let mut mins = 0.0f32;
                for i in 0..n / 32 {
                    let (x, y) = (w.add(wb * i), a.add(ab * i));
                    let (q, k) = decode_quants(ty, x);
                    let s = block_dot(q, y.add(qa));
                    let d = vdupq_n_f32(f16_at(x) * (f16_at(y) * k));
                    acc = vfmaq_f32(acc, vcvtq_f32_s32(s), d);
                    if ty == Q4_1 {
                        mins += f16_at(x.add(2)) * f16_at(y.add(2));
                    }
                }
                vaddvq_f32(acc) + mins
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dot_q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
                legacy_dot::<LQ4_0>(n, w, a)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dot_q4_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
                legacy_dot::<LQ4_1>(n, w, a)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dot_q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
                legacy_dot::<LQ5_0>(n, w, a)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
                legacy_dot::<LQ8_0>(n, w, a)
            }

            /// One Q4_K super-block at `x` times one Q8_K block at `y`, in integers:
            /// `(Σ_j sc_j Σ q q8, Σ_j m_j bsum_j)`, each spread over four lanes. Scales and mins
            /// stay in vectors: the eight sub-block sums are gathered into two vectors and
            /// multiplied by the scales lane by lane, and the mins meet the pairwise `bsums` in
            /// one widening multiply. `COPY` gives the one-row and the four-row kernels a copy
            /// each, which the compiler then inlines (shared, it was called, not inlined).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn q4k_block<const COPY: u8>(
                x: *const u8,
                y: *const u8,
            ) -> (int32x4_t, int32x4_t) {
                let (sc, m) = q4k_scales(x.add(4));
                let sc = vmovl_u8(vld1_u8(sc.as_ptr()));
                let sc = [vget_low_u16(sc), vget_high_u16(sc)]
                    .map(|v| vreinterpretq_s32_u32(vmovl_u16(v)));
                let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m.as_ptr())));
                let mut sums = [vdupq_n_s32(0); 8];
                for j in 0..4 {
                    let [l0, h0] = nibbles(x.add(16 + 32 * j));
                    let [l1, h1] = nibbles(x.add(32 + 32 * j));
                    let q8 = y.add(4 + 64 * j);
                    let lo = [l0, l1].map(|v| vreinterpretq_s8_u8(v));
                    let hi = [h0, h1].map(|v| vreinterpretq_s8_u8(v));
                    sums[2 * j] = block_dot(lo, q8);
                    sums[2 * j + 1] = block_dot(hi, q8.add(32));
                }
                let s0 = hsum4([sums[0], sums[1], sums[2], sums[3]]);
                let s1 = hsum4([sums[4], sums[5], sums[6], sums[7]]);
                let isum = vmlaq_s32(vmulq_s32(s0, sc[0]), s1, sc[1]);
                let bs = y.add(260).cast::<i16>();
                let bs = vpaddq_s16(vld1q_s16(bs), vld1q_s16(bs.add(8)));
                let msum = vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(m)), bs, m);
                (isum, msum)
            }

            /// Q4_K × Q8_K: `d Σ_j sc_j Σ q q8 - dmin Σ_j m_j bsum_j`, the super-blocks added
            /// in four float lanes.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dot_q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
                let (w, a) = (w.as_ptr(), a.as_ptr());
                let mut acc = vdupq_n_f32(0.0);
                for i in 0..n / QK_K {
                    let (x, y) = (
                        w.add(size_of::<BlockQ4_K>() * i),
                        a.add(size_of::<BlockQ8_K>() * i),
                    );
                    let yd = y.cast::<f32>().read_unaligned();
                    let (isum, msum) = q4k_block::<0>(x, y);
                    let d = f16_at(x) * yd;
                    let dmin = f16_at(x.add(2)) * yd;
                    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(isum), d);
                    acc = vfmsq_n_f32(acc, vcvtq_f32_s32(msum), dmin);
                }
                vaddvq_f32(acc)
            }

            /// Q5_K × Q8_K: as Q4_K, each quant with its fifth bit from `qh` (bit `j` of byte
            /// `l` for value `l` of sub-block `j`), added as 16 before the dot.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dot_q5_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
                let (w, a) = (w.as_ptr(), a.as_ptr());
                let mut acc = vdupq_n_f32(0.0);
                let one = vdupq_n_u8(1);
                for i in 0..n / QK_K {
                    let (x, y) = (
                        w.add(size_of::<BlockQ5_K>() * i),
                        a.add(size_of::<BlockQ8_K>() * i),
                    );
                    let yd = y.cast::<f32>().read_unaligned();
                    let (sc, m) = q4k_scales(x.add(4));
                    let sc = vmovl_u8(vld1_u8(sc.as_ptr()));
                    let sc = [vget_low_u16(sc), vget_high_u16(sc)]
                        .map(|v| vreinterpretq_s32_u32(vmovl_u16(v)));
                    let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m.as_ptr())));
                    // The fifth bits of sub-block j: bit j of each `qh` byte, moved to 16.
                    let mut qh = [vld1q_u8(x.add(16)), vld1q_u8(x.add(32))];
                    let mut fifth = || {
                        let b = qh.map(|h| vshlq_n_u8(vandq_u8(h, one), 4));
                        qh = qh.map(|h| vshrq_n_u8(h, 1));
                        b
                    };
                    let mut sums = [vdupq_n_s32(0); 8];
                    for j in 0..4 {
                        let [l0, h0] = nibbles(x.add(48 + 32 * j));
                        let [l1, h1] = nibbles(x.add(64 + 32 * j));
                        let q8 = y.add(4 + 64 * j);
                        let [bl0, bl1] = fifth();
                        let [bh0, bh1] = fifth();
                        let lo = [vorrq_u8(l0, bl0), vorrq_u8(l1, bl1)];
                        let hi = [vorrq_u8(h0, bh0), vorrq_u8(h1, bh1)];
                        sums[2 * j] = block_dot(lo.map(|v| vreinterpretq_s8_u8(v)), q8);
                        sums[2 * j + 1] = block_dot(hi.map(|v| vreinterpretq_s8_u8(v)), q8.add(32));
                    }
                    let s0 = hsum4([sums[0], sums[1], sums[2], sums[3]]);
                    let s1 = hsum4([sums[4], sums[5], sums[6], sums[7]]);
                    let isum = vmlaq_s32(vmulq_s32(s0, sc[0]), s1, sc[1]);
                    let bs = y.add(260).cast::<i16>();
                    let bs = vpaddq_s16(vld1q_s16(bs), vld1q_s16(bs.add(8)));
                    let msum = vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(m)), bs, m);
                    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(isum), f16_at(x) * yd);
                    acc = vfmsq_n_f32(acc, vcvtq_f32_s32(msum), f16_at(x.add(2)) * yd);
                }
                vaddvq_f32(acc)
            }

            /// One Q6_K super-block at `x` times one Q8_K block at `y`, in integers:
            /// `Σ_j sc_j Σ (q - 32) q8` over four lanes, the sixteen scales widened to four
            /// vectors and met by the sixteen sub-block sums gathered four to a vector.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn q6k_block(x: *const u8, y: *const u8) -> int32x4_t {
                let sc = vld1q_s8(x.add(192).cast());
                let (s_lo, s_hi) = (vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc));
                let sc = [
                    vmovl_s16(vget_low_s16(s_lo)),
                    vmovl_high_s16(s_lo),
                    vmovl_s16(vget_low_s16(s_hi)),
                    vmovl_high_s16(s_hi),
                ];
                let mut isum = vdupq_n_s32(0);
                for half in 0..2 {
                    let q = q6k_half(x.add(64 * half), x.add(128 + 32 * half));
                    let yq = y.add(4 + 128 * half);
                    let s: [int32x4_t; 8] = core::array::from_fn(|k| {
                        $dot16(vdupq_n_s32(0), q[k], vld1q_s8(yq.add(16 * k).cast()))
                    });
                    let g0 = hsum4([s[0], s[1], s[2], s[3]]);
                    let g1 = hsum4([s[4], s[5], s[6], s[7]]);
                    isum = vmlaq_s32(isum, g0, sc[2 * half]);
                    isum = vmlaq_s32(isum, g1, sc[2 * half + 1]);
                }
                isum
            }

            /// Q6_K × Q8_K: `d Σ_j sc_j Σ (q - 32) q8`.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn dot_q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
                let (w, a) = (w.as_ptr(), a.as_ptr());
                let mut acc = vdupq_n_f32(0.0);
                for i in 0..n / QK_K {
                    let (x, y) = (
                        w.add(size_of::<BlockQ6_K>() * i),
                        a.add(size_of::<BlockQ8_K>() * i),
                    );
                    let d = f16_at(x.add(208)) * y.cast::<f32>().read_unaligned();
                    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(q6k_block(x, y)), d);
                }
                vaddvq_f32(acc)
            }

            /// Several rows of Q4_K times one activation row (decode), four rows at a time:
            /// four independent super-blocks in flight, their integer sums gathered into one
            /// vector (a lane per row) and their scales converted together. A last one to
            /// three rows go through the one-row dot. (Only the dotprod set uses it: on a
            /// NEON-only core it estimates slower than the one-row dot, see `arm-cost`; so
            /// does a four-row Q6_K on either, which is why there is none.)
            #[allow(dead_code)] // the NEON set keeps the one-row dot
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn rows_q4_k(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                let nb = n / QK_K;
                let rb = nb * size_of::<BlockQ4_K>();
                let rows = out.len();
                let full = rows / 4 * 4;
                let h = |p: *const u8| p.cast::<u16>().read_unaligned();
                for r0 in (0..full).step_by(4) {
                    let x0 = w.as_ptr().add(r0 * rb);
                    let mut acc = vdupq_n_f32(0.0);
                    for i in 0..nb {
                        let y = a.as_ptr().add(size_of::<BlockQ8_K>() * i);
                        let yd = y.cast::<f32>().read_unaligned();
                        let x: [*const u8; 4] =
                            core::array::from_fn(|r| x0.add(r * rb + size_of::<BlockQ4_K>() * i));
                        // Four calls written out: a loop over the rows stays a loop.
                        let s = [
                            q4k_block::<1>(x[0], y),
                            q4k_block::<1>(x[1], y),
                            q4k_block::<1>(x[2], y),
                            q4k_block::<1>(x[3], y),
                        ];
                        let isum = hsum4(s.map(|s| s.0));
                        let msum = hsum4(s.map(|s| s.1));
                        let d = vmulq_n_f32(f16x4(x.map(|p| h(p))), yd);
                        let dmin = vmulq_n_f32(f16x4(x.map(|p| h(p.add(2)))), yd);
                        acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), d);
                        acc = vfmsq_f32(acc, vcvtq_f32_s32(msum), dmin);
                    }
                    vst1q_f32(out.as_mut_ptr().add(r0), acc);
                }
                for r in full..rows {
                    out[r] = dot_q4_k(n, &w[r * rb..(r + 1) * rb], a);
                }
            }

            /// Several rows of a 32-value format times one activation row (decode), four rows
            /// at a time: each activation block is loaded once for the four, the four integer
            /// sums are gathered into one vector and the four rows' scales converted together
            /// (`fcvtl`). A last one to three rows go through `legacy_dot`.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn legacy_rows<const T: u8>(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                let ty = legacy_type(T);
                let (wb, ab, qa) = match ty {
                    Q4_1 => (size_of::<BlockQ4_1>(), size_of::<BlockQ8_1>(), 4),
                    _ => (ty.block_bytes(), size_of::<BlockQ8_0>(), 2),
                };
                let nb = n / 32;
                let rb = nb * wb;
                let rows = out.len();
                let full = rows / 4 * 4;
                let h = |p: *const u8| p.cast::<u16>().read_unaligned();
                for r0 in (0..full).step_by(4) {
                    let x0 = w.as_ptr().add(r0 * rb);
                    let mut acc = vdupq_n_f32(0.0);
                    let mut mins = vdupq_n_f32(0.0);
                    for i in 0..nb {
                        let y = a.as_ptr().add(ab * i);
                        let yq = [vld1q_s8(y.add(qa).cast()), vld1q_s8(y.add(qa + 16).cast())];
                        let x: [*const u8; 4] = core::array::from_fn(|r| x0.add(r * rb + wb * i));
                        let mut k = 1.0;
                        let s: [int32x4_t; 4] = core::array::from_fn(|r| {
                            let q;
                            (q, k) = decode_quants(ty, x[r]);
                            let s = $dot16(vdupq_n_s32(0), q[0], yq[0]);
                            $dot16(s, q[1], yq[1])
                        });
                        let dw = f16x4(x.map(|p| h(p)));
                        let d = vmulq_n_f32(dw, f16_at(y) * k);
                        acc = vfmaq_f32(acc, vcvtq_f32_s32(hsum4(s)), d);
                        if ty == Q4_1 {
                            let mw = f16x4(x.map(|p| h(p.add(2))));
                            mins = vfmaq_n_f32(mins, mw, f16_at(y.add(2)));
                        }
                    }
                    vst1q_f32(out.as_mut_ptr().add(r0), vaddq_f32(acc, mins));
                }
                for r in full..rows {
                    out[r] = legacy_dot::<T>(n, &w[r * rb..(r + 1) * rb], a);
                }
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn rows_q4_0(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                legacy_rows::<LQ4_0>(n, w, a, out)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn rows_q4_1(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                legacy_rows::<LQ4_1>(n, w, a, out)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn rows_q5_0(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                legacy_rows::<LQ5_0>(n, w, a, out)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn rows_q8_0(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                legacy_rows::<LQ8_0>(n, w, a, out)
            }

            /// Rows of a 32-value format times panels of Q8_0 or Q8_1 activations.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn tile_legacy(
                ty: GgmlType,
                cols: usize,
                w: &[u8],
                panels: &[u8],
                out: &mut [f32],
            ) {
                let bb = ty.block_bytes();
                let nb = cols / 32;
                let rb = nb * bb;
                let rows = w.len() / rb;
                let pb = nb * Q8_PANEL_BLOCK;
                let np = panels.len() / pb;
                let mut spare = Unpacked::spare();
                let u = &mut *spare;
                let mut r0 = 0;
                while r0 < rows {
                    let nr = (rows - r0).min(R);
                    for b0 in (0..nb).step_by(KV / 32) {
                        let nbc = (nb - b0).min(KV / 32);
                        for r in 0..nr {
                            u.legacy(ty, w.as_ptr().add((r0 + r) * rb + b0 * bb), nbc, r);
                        }
                        for p in 0..np {
                            let pan = panels.as_ptr().add(p * pb + b0 * Q8_PANEL_BLOCK);
                            let o = out.as_mut_ptr().add((p * rows + r0) * PANEL);
                            let mut acc = [vdupq_n_f32(0.0); R];
                            if b0 > 0 {
                                for r in 0..nr {
                                    acc[r] = vld1q_f32(o.add(PANEL * r));
                                }
                            }
                            for b in 0..nbc {
                                let pb = pan.add(b * Q8_PANEL_BLOCK);
                                let a: [int8x16_t; 8] =
                                    core::array::from_fn(|g| vld1q_s8(pb.add(16 * g).cast()));
                                let da = vld1q_f32(pb.add(128).cast());
                                for r in 0..nr {
                                    let q = u.q[r].as_ptr().add(32 * b);
                                    let s = $gdot4(
                                        vdupq_n_s32(0),
                                        [a[0], a[1], a[2], a[3]],
                                        vld1q_s8(q),
                                    );
                                    let s =
                                        $gdot4(s, [a[4], a[5], a[6], a[7]], vld1q_s8(q.add(16)));
                                    let d = vmulq_n_f32(da, u.d[r][b]);
                                    acc[r] = vfmaq_f32(acc[r], vcvtq_f32_s32(s), d);
                                    if ty == Q4_1 {
                                        let sv = vld1q_f32(pb.add(144).cast());
                                        acc[r] = vfmaq_f32(acc[r], sv, vdupq_n_f32(u.m[r][b]));
                                    }
                                }
                            }
                            for r in 0..nr {
                                vst1q_f32(o.add(PANEL * r), acc[r]);
                            }
                        }
                    }
                    r0 += nr;
                }
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn tile_q4_0(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
                tile_legacy(Q4_0, cols, w, p, out)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn tile_q4_1(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
                tile_legacy(Q4_1, cols, w, p, out)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn tile_q5_0(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
                tile_legacy(Q5_0, cols, w, p, out)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn tile_q8_0(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
                tile_legacy(Q8_0, cols, w, p, out)
            }

            /// Rows of Q4_K or Q6_K times panels of Q8_K activations.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn tile_kquant(
                ty: GgmlType,
                cols: usize,
                w: &[u8],
                panels: &[u8],
                out: &mut [f32],
            ) {
                let bb = ty.block_bytes();
                let nb = cols / QK_K;
                let rb = nb * bb;
                let rows = w.len() / rb;
                let pb = nb * Q8K_PANEL_BLOCK;
                let np = panels.len() / pb;
                let mut spare = Unpacked::spare();
                let u = &mut *spare;
                let mut r0 = 0;
                while r0 < rows {
                    let nr = (rows - r0).min(R);
                    for b0 in (0..nb).step_by(KV / QK_K) {
                        let nbc = (nb - b0).min(KV / QK_K);
                        for r in 0..nr {
                            u.kquant(ty, w.as_ptr().add((r0 + r) * rb + b0 * bb), nbc, r);
                        }
                        for p in 0..np {
                            let pan = panels.as_ptr().add(p * pb + b0 * Q8K_PANEL_BLOCK);
                            let o = out.as_mut_ptr().add((p * rows + r0) * PANEL);
                            let mut acc = [vdupq_n_f32(0.0); R];
                            if b0 > 0 {
                                for r in 0..nr {
                                    acc[r] = vld1q_f32(o.add(PANEL * r));
                                }
                            }
                            for b in 0..nbc {
                                let pb = pan.add(b * Q8K_PANEL_BLOCK);
                                let da = vld1q_f32(pb.add(1024).cast());
                                for r in 0..nr {
                                    let q = u.q[r].as_ptr().add(QK_K * b);
                                    let mut isum = vdupq_n_s32(0);
                                    let ag = |g: usize| vld1q_s8(pb.add(16 * g).cast());
                                    if ty == Q4_K {
                                        let mut msum = vdupq_n_s32(0);
                                        for j in 0..8 {
                                            let g = 8 * j;
                                            let s = $gdot4(
                                                vdupq_n_s32(0),
                                                [ag(g), ag(g + 1), ag(g + 2), ag(g + 3)],
                                                vld1q_s8(q.add(32 * j)),
                                            );
                                            let s = $gdot4(
                                                s,
                                                [ag(g + 4), ag(g + 5), ag(g + 6), ag(g + 7)],
                                                vld1q_s8(q.add(32 * j + 16)),
                                            );
                                            isum = vmlaq_n_s32(isum, s, u.sc[r][b][j]);
                                            let sums = vld1q_s32(pb.add(1040 + 16 * j).cast());
                                            msum = vmlaq_n_s32(msum, sums, u.mins[r][b][j]);
                                        }
                                        let d = vmulq_n_f32(da, u.d[r][b]);
                                        let dmin = vmulq_n_f32(da, u.m[r][b]);
                                        acc[r] = vfmaq_f32(acc[r], vcvtq_f32_s32(isum), d);
                                        acc[r] = vfmsq_f32(acc[r], vcvtq_f32_s32(msum), dmin);
                                    } else {
                                        for j in 0..16 {
                                            let g = 4 * j;
                                            let s = $gdot4(
                                                vdupq_n_s32(0),
                                                [ag(g), ag(g + 1), ag(g + 2), ag(g + 3)],
                                                vld1q_s8(q.add(16 * j)),
                                            );
                                            isum = vmlaq_n_s32(isum, s, u.sc[r][b][j]);
                                        }
                                        let d = vmulq_n_f32(da, u.d[r][b]);
                                        acc[r] = vfmaq_f32(acc[r], vcvtq_f32_s32(isum), d);
                                    }
                                }
                            }
                            for r in 0..nr {
                                vst1q_f32(o.add(PANEL * r), acc[r]);
                            }
                        }
                    }
                    r0 += nr;
                }
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn tile_q4_k(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
                tile_kquant(Q4_K, cols, w, p, out)
            }

            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn tile_q6_k(cols: usize, w: &[u8], p: &[u8], out: &mut [f32]) {
                tile_kquant(Q6_K, cols, w, p, out)
            }
        }
    };
}
