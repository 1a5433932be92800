//! aarch64 kernels: NEON (every aarch64 CPU, Raspberry Pi 4 class), `sdot` (dotprod) and
//! `smmla` (i8mm) where the CPU has them. The dotprod and i8mm instructions are written with
//! `asm!`, since their intrinsics are not stable Rust.
//!
//! `kernels.rs` holds the dot products (decode: one row, and four rows sharing the activation
//! loads) and panel kernels (prefill) once, as a macro instantiated for NEON (`neon`) and for
//! dotprod (`dotprod`), which differ only in their two integer-dot primitives. `i8mm.rs`
//! holds the `smmla` panel kernels of the 32-value formats and the K-quants, `quantize.rs`
//! the NEON activation quantizers (byte-exact with the reference), `ops.rs` the elementwise
//! kernels (norms, softmax, gates, attention, RoPE), `interleaved.rs` the kernels of rows
//! repacked at load into groups of four (dotprod's `sdot` decode and panels, i8mm's `smmla`
//! panels). Half-precision scales are converted by the
//! hardware (`fcvt`, `fcvtl`: plain ARMv8). `cargo run --release -p tern-benches --bin
//! arm-cost` estimates the decode loops' cycles against llama.cpp's with `llvm-mca`.
//!
//! Panels hold [`PANEL`] tokens. Weights are unpacked to signed bytes (`q - 8` for Q4_0 …),
//! so the integer dots need no offsets.

use core::arch::aarch64::*;
use core::arch::asm;
use std::cell::Cell;

use crate::kernel::GemmKernels;
use crate::quant::{BlockQ4_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K};
use crate::spare::Spare;
use crate::GgmlType::{self, *};
use crate::QK_K;

#[macro_use]
mod kernels;
mod i8mm;
mod interleaved;
mod ops;
mod quantize;

pub(crate) use interleaved::{
    mm4_q4_0, mm4_q4_k, mm4_q6_k, mm4_q8_0, x4_q4_0, x4_q4_k, x4_q6_k, x4_q8_0,
};
pub(crate) use ops::OPS;

pub(crate) use w::*;

/// Tokens per panel: one per `i32` lane of a 128-bit vector.
pub(crate) const PANEL: usize = 4;

type TileFn = fn(usize, &[u8], &[u8], &mut [f32]);

/// NEON/dotprod panel kernels over Q8_0 activations.
pub(crate) const fn gemm_q8_0(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: PANEL,
        panel_bytes: panel_bytes_q8,
        pack: pack_q8_0,
        tile,
    }
}

/// NEON/dotprod panel kernels over Q8_1 activations.
pub(crate) const fn gemm_q8_1(tile: TileFn) -> GemmKernels {
    GemmKernels {
        pack: pack_q8_1,
        ..gemm_q8_0(tile)
    }
}

/// NEON/dotprod panel kernels over Q8_K activations.
pub(crate) const fn gemm_q8_k(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: PANEL,
        panel_bytes: panel_bytes_q8_k,
        pack: pack_q8_k,
        tile,
    }
}

/// Panel kernels over F32 activations.
pub(crate) const fn gemm_f32(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: PANEL,
        panel_bytes: panel_bytes_f32,
        pack: pack_f32,
        tile,
    }
}

/// Panel kernels over F16 activations (widened to `f32` in the panel).
pub(crate) const fn gemm_f16(tile: TileFn) -> GemmKernels {
    GemmKernels {
        pack: pack_f16,
        ..gemm_f32(tile)
    }
}

/// i8mm panel kernels over Q8_0 activations (their own panel layout).
pub(crate) const fn i8mm_q8_0(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: PANEL,
        panel_bytes: i8mm::panel_bytes,
        pack: i8mm::pack_q8_0,
        tile,
    }
}

/// i8mm panel kernels over Q8_K activations.
pub(crate) const fn i8mm_q8_k(tile: TileFn) -> GemmKernels {
    GemmKernels {
        panel: PANEL,
        panel_bytes: i8mm::panel_bytes_k,
        pack: i8mm::pack_q8_k,
        tile,
    }
}

/// i8mm panel kernels over Q8_1 activations.
pub(crate) const fn i8mm_q8_1(tile: TileFn) -> GemmKernels {
    GemmKernels {
        pack: i8mm::pack_q8_1,
        ..i8mm_q8_0(tile)
    }
}

// Panel layouts, per block of the activation type:
// - Q8_0/Q8_1 (32 values, 160 bytes): quants `[group 8][token 4][4]`, `d` as 4 `f32`, then
//   Q8_1's `s` as 4 `f32` (zeros for Q8_0).
// - Q8_K (256 values, 1168 bytes): quants `[group 64][token 4][4]`, `d` as 4 `f32`, then the
//   sums of each 32 quants (`bsum_2j + bsum_2j+1`) as `[j 8][token 4]` `i32`.
// - F32: the 4 tokens' values one token after the other.

const Q8_PANEL_BLOCK: usize = 128 + 16 + 16;
const Q8K_PANEL_BLOCK: usize = 1024 + 16 + 128;

fn panel_bytes_q8(cols: usize) -> usize {
    cols / 32 * Q8_PANEL_BLOCK
}

fn panel_bytes_q8_k(cols: usize) -> usize {
    cols / QK_K * Q8K_PANEL_BLOCK
}

fn panel_bytes_f32(cols: usize) -> usize {
    cols * PANEL * 4
}

fn f16_le(b: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

fn pack_q8(cols: usize, acts: &[u8], panel: &mut [u8], block: usize, qs: usize) {
    let row = cols / 32 * block;
    for (b, pb) in panel.chunks_exact_mut(Q8_PANEL_BLOCK).enumerate() {
        for t in 0..PANEL {
            let blk = &acts[t * row + b * block..t * row + (b + 1) * block];
            for g in 0..8 {
                let o = g * 16 + t * 4;
                pb[o..o + 4].copy_from_slice(&blk[qs + 4 * g..qs + 4 * g + 4]);
            }
            pb[128 + 4 * t..132 + 4 * t].copy_from_slice(&f16_le(blk).to_le_bytes());
            let s = if qs == 4 { f16_le(&blk[2..]) } else { 0.0 };
            pb[144 + 4 * t..148 + 4 * t].copy_from_slice(&s.to_le_bytes());
        }
    }
}

fn pack_q8_0(cols: usize, acts: &[u8], panel: &mut [u8]) {
    pack_q8(cols, acts, panel, size_of::<BlockQ8_0>(), 2);
}

fn pack_q8_1(cols: usize, acts: &[u8], panel: &mut [u8]) {
    pack_q8(cols, acts, panel, size_of::<BlockQ8_1>(), 4);
}

fn pack_q8_k(cols: usize, acts: &[u8], panel: &mut [u8]) {
    const BB: usize = size_of::<BlockQ8_K>();
    let row = cols / QK_K * BB;
    for (b, pb) in panel.chunks_exact_mut(Q8K_PANEL_BLOCK).enumerate() {
        for t in 0..PANEL {
            let blk = &acts[t * row + b * BB..t * row + (b + 1) * BB];
            for g in 0..64 {
                let o = g * 16 + t * 4;
                pb[o..o + 4].copy_from_slice(&blk[4 + 4 * g..8 + 4 * g]);
            }
            pb[1024 + 4 * t..1028 + 4 * t].copy_from_slice(&blk[..4]);
            for j in 0..8 {
                let bs = |i: usize| i16::from_le_bytes([blk[260 + 2 * i], blk[261 + 2 * i]]) as i32;
                let o = 1040 + 16 * j + 4 * t;
                pb[o..o + 4].copy_from_slice(&(bs(2 * j) + bs(2 * j + 1)).to_le_bytes());
            }
        }
    }
}

fn pack_f32(_cols: usize, acts: &[u8], panel: &mut [u8]) {
    panel.copy_from_slice(acts);
}

/// F16 activations into an `f32` panel (the F16 panel kernels widen only the weights).
fn pack_f16(_cols: usize, acts: &[u8], panel: &mut [u8]) {
    for (o, h) in panel.chunks_exact_mut(4).zip(acts.chunks_exact(2)) {
        o.copy_from_slice(&f16_le(h).to_le_bytes());
    }
}

/// The `f16` at `p` as `f32`, exactly: one `fcvt` (plain ARMv8, no FP16 extension needed).
#[inline]
unsafe fn f16_at(p: *const u8) -> f32 {
    f16_to_f32(p.cast::<u16>().read_unaligned())
}

/// The `f16` with bits `h` as `f32`, exactly (NaNs quieted, as `half` and ggml do).
#[inline]
fn f16_to_f32(h: u16) -> f32 {
    let out: f32;
    // SAFETY (of the asm): register-only conversion, part of every aarch64 CPU's FP unit.
    unsafe {
        asm!(
            "fmov {t:s}, {h:w}",
            "fcvt {o:s}, {t:h}",
            h = in(reg) h as u32, t = out(vreg) _, o = out(vreg) out,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// 16 packed nibbles as 32 values: `[low nibbles, high nibbles]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let x = vld1q_u8(p);
    [vandq_u8(x, vdupq_n_u8(0x0F)), vshrq_n_u8(x, 4)]
}

/// The 32 bits at `p` as 32 byte masks, all ones where the bit is set (Q5's fifth bits): the
/// word is loaded into every lane (`ld1r`), each byte spread over eight lanes with one `tbl`,
/// and each lane tests its own bit.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn fifth_bits(p: *const u8) -> [uint8x16_t; 2] {
    let word = vreinterpretq_u8_u32(vld1q_dup_u32(p.cast()));
    let bit = vld1q_u8([1u8, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128].as_ptr());
    let lo = vld1q_u8([0u8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1].as_ptr());
    let hi = vaddq_u8(lo, vdupq_n_u8(2));
    [lo, hi].map(|i| vtstq_u8(vqtbl1q_u8(word, i), bit))
}

/// A 32-value block's quants as signed bytes, exactly (`q - 8` for Q4_0 …).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn legacy_quants(ty: GgmlType, x: *const u8) -> [int8x16_t; 2] {
    match ty {
        Q4_0 => nibbles(x.add(2)).map(|v| vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(8))),
        Q4_1 => nibbles(x.add(4)).map(|v| vreinterpretq_s8_u8(v)),
        Q5_0 => {
            // `(q | bit << 4) - 16`: `q` where the bit is set, `q - 16` where it is not.
            let [l, h] = nibbles(x.add(6));
            let [bl, bh] = fifth_bits(x.add(2));
            let off = |m: uint8x16_t| vreinterpretq_s8_u8(vbicq_u8(vdupq_n_u8(0xF0), m));
            [
                vaddq_s8(vreinterpretq_s8_u8(l), off(bl)),
                vaddq_s8(vreinterpretq_s8_u8(h), off(bh)),
            ]
        }
        _ => [vld1q_s8(x.add(2).cast()), vld1q_s8(x.add(18).cast())],
    }
}

/// The quants of a block for the decode kernels, and the factor their sums take: as
/// [`legacy_quants`], but Q4_0's come scaled by 16 in three instructions instead of four
/// (`q - 8` is `q ^ 8` as a signed nibble: shifted up, or masked in place, it is `16 (q - 8)`),
/// so their sums are taken times `1/16`, exactly.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn decode_quants(ty: GgmlType, x: *const u8) -> ([int8x16_t; 2], f32) {
    if ty == Q4_0 {
        let v = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(x.add(2)), vdupq_n_u8(0x88)));
        let hi = vandq_s8(v, vdupq_n_s8(0xF0u8 as i8));
        ([vshlq_n_s8(v, 4), hi], 1.0 / 16.0)
    } else {
        (legacy_quants(ty, x), 1.0)
    }
}

/// The 128 quants of one half of a Q6_K block, `q - 32`, in value order.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q6k_half(ql: *const u8, qh: *const u8) -> [int8x16_t; 8] {
    let m4 = vdupq_n_u8(0x0F);
    let m2 = vdupq_n_u8(3);
    let mut out = [vdupq_n_s8(0); 8];
    for i in 0..2 {
        let l0 = vld1q_u8(ql.add(16 * i));
        let l1 = vld1q_u8(ql.add(32 + 16 * i));
        let h = vld1q_u8(qh.add(16 * i));
        let hi = |v: uint8x16_t| vshlq_n_u8(vandq_u8(v, m2), 4);
        let v = [
            vorrq_u8(vandq_u8(l0, m4), hi(h)),
            vorrq_u8(vandq_u8(l1, m4), hi(vshrq_n_u8(h, 2))),
            vorrq_u8(vshrq_n_u8(l0, 4), hi(vshrq_n_u8(h, 4))),
            vorrq_u8(vshrq_n_u8(l1, 4), hi(vshrq_n_u8(h, 6))),
        ];
        for (k, v) in v.into_iter().enumerate() {
            out[2 * k + i] = vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32));
        }
    }
    out
}

/// The six-bit scales and mins of a Q4_K block (see `quant::kquants::scale_min_k4`), all eight
/// at once in 32-bit words: bytes `0..4` keep their low six bits, bytes `4..8` take four bits
/// from the last word and two from the top of the first (scales) or second (mins).
#[inline]
unsafe fn q4k_scales(p: *const u8) -> ([u8; 8], [u8; 8]) {
    let word = |i: usize| p.add(4 * i).cast::<u32>().read_unaligned();
    let (a, b, c) = (word(0), word(1), word(2));
    let sc_hi = (c & 0x0F0F_0F0F) | ((a >> 2) & 0x3030_3030);
    let m_hi = ((c >> 4) & 0x0F0F_0F0F) | ((b >> 2) & 0x3030_3030);
    let join = |lo: u32, hi: u32| (lo as u64 | (hi as u64) << 32).to_le_bytes();
    (join(a & 0x3F3F_3F3F, sc_hi), join(b & 0x3F3F_3F3F, m_hi))
}

/// The four lanes' sums of four vectors, in order: `[Σ a, Σ b, Σ c, Σ d]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn hsum4(v: [int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]))
}

/// Four `f16`s as `f32` lanes with one `fcvtl`. The halves are joined in a general register
/// (independent loads, one move to the vector side) rather than inserted lane by lane, whose
/// chain of dependent inserts would bound a decode loop.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4(h: [u16; 4]) -> float32x4_t {
    let bits = h[0] as u64 | (h[1] as u64) << 16 | (h[2] as u64) << 32 | (h[3] as u64) << 48;
    let v = vcreate_u16(bits);
    let out: float32x4_t;
    // SAFETY (of the asm): register-only conversion, plain ARMv8 (no FP16 extension).
    asm!(
        "fcvtl {o:v}.4s, {h:v}.4h",
        h = in(vreg) v, o = out(vreg) out,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

// The two integer-dot primitives of each level.

/// NEON: `acc[i] += Σ_{k<4} a[4i+k] b[4i+k]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot16_neon(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(acc, vpaddq_s16(lo, hi))
}

/// dotprod: the same with one `sdot`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot16_dotprod(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY (of the asm): register-only arithmetic, available with dotprod.
    asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// NEON: lane `t` of `acc` += `Σ_k a_g[4t+k] w[4g+k]` for the groups `g` 0..4: four
/// activation vectors (one group of 4 quants of each of 4 tokens) against 16 weights.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn gdot4_neon(acc: int32x4_t, a: [int8x16_t; 4], w: int8x16_t) -> int32x4_t {
    let w32 = vreinterpretq_s32_s8(w);
    let lanes = [
        vdupq_laneq_s32::<0>(w32),
        vdupq_laneq_s32::<1>(w32),
        vdupq_laneq_s32::<2>(w32),
        vdupq_laneq_s32::<3>(w32),
    ];
    let mut acc = acc;
    for (a, l) in a.into_iter().zip(lanes) {
        acc = dot16_neon(acc, a, vreinterpretq_s8_s32(l));
    }
    acc
}

/// dotprod: the same with four indexed `sdot`s.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn gdot4_dotprod(mut acc: int32x4_t, a: [int8x16_t; 4], w: int8x16_t) -> int32x4_t {
    // SAFETY (of the asm): register-only arithmetic, available with dotprod.
    asm!(
        "sdot {acc:v}.4s, {a0:v}.16b, {w:v}.4b[0]",
        "sdot {acc:v}.4s, {a1:v}.16b, {w:v}.4b[1]",
        "sdot {acc:v}.4s, {a2:v}.16b, {w:v}.4b[2]",
        "sdot {acc:v}.4s, {a3:v}.16b, {w:v}.4b[3]",
        acc = inout(vreg) acc,
        a0 = in(vreg) a[0], a1 = in(vreg) a[1], a2 = in(vreg) a[2], a3 = in(vreg) a[3],
        w = in(vreg) w,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

// The 32-value weight formats as const-generic codes (`legacy_dot::<LQ4_0>`), so that each
// format's decode loop is compiled on its own, without a test of the format inside.
const LQ4_0: u8 = 0;
const LQ4_1: u8 = 1;
const LQ5_0: u8 = 2;
const LQ8_0: u8 = 3;

const fn legacy_type(code: u8) -> GgmlType {
    match code {
        LQ4_0 => Q4_0,
        LQ4_1 => Q4_1,
        LQ5_0 => Q5_0,
        _ => Q8_0,
    }
}

/// Unpacked weights of up to [`R`] rows and [`KV`] values: signed quants in value order and
/// per-block scales.
struct Unpacked {
    q: [[i8; KV]; R],
    d: [[f32; KV / 32]; R],
    /// Q4_1: `m` per block; Q4_K: `dmin` per super-block.
    m: [[f32; KV / 32]; R],
    /// K-quants: sub-block scales (Q4_K: 8, Q6_K: 16), and Q4_K's 8 mins.
    sc: [[[i32; 16]; KV / QK_K]; R],
    mins: [[[i32; 8]; KV / QK_K]; R],
}

/// Weight rows multiplied together.
const R: usize = 4;
/// Weight values unpacked at a time, per row.
const KV: usize = 1024;

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
            d: [[0.0; KV / 32]; R],
            m: [[0.0; KV / 32]; R],
            sc: [[[0; 16]; KV / QK_K]; R],
            mins: [[[0; 8]; KV / QK_K]; R],
        })
    }

    /// Unpacks `nb` 32-value blocks of type `ty` at `x` into row `r`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn legacy(&mut self, ty: GgmlType, x: *const u8, nb: usize, r: usize) {
        let bb = ty.block_bytes();
        for b in 0..nb {
            let x = x.add(b * bb);
            self.d[r][b] = f16_at(x);
            if ty == Q4_1 {
                self.m[r][b] = f16_at(x.add(2));
            }
            let [lo, hi] = legacy_quants(ty, x);
            vst1q_s8(self.q[r].as_mut_ptr().add(32 * b), lo);
            vst1q_s8(self.q[r].as_mut_ptr().add(32 * b + 16), hi);
        }
    }

    /// Unpacks `nb` super-blocks of Q4_K, Q5_K or Q6_K at `x` into row `r`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn kquant(&mut self, ty: GgmlType, x: *const u8, nb: usize, r: usize) {
        for b in 0..nb {
            let q = self.q[r].as_mut_ptr().add(QK_K * b);
            if ty == Q4_K || ty == Q5_K {
                let x = x.add(ty.block_bytes() * b);
                self.d[r][b] = f16_at(x);
                self.m[r][b] = f16_at(x.add(2));
                let (sc, m) = q4k_scales(x.add(4));
                for j in 0..8 {
                    self.sc[r][b][j] = sc[j] as i32;
                    self.mins[r][b][j] = m[j] as i32;
                }
                // Q5_K: the quants follow the 32 bytes of fifth bits, bit `j` of byte `l`
                // for value `l` of sub-block `j`.
                let qs = if ty == Q5_K { x.add(48) } else { x.add(16) };
                let qh = [vld1q_u8(x.add(16)), vld1q_u8(x.add(32))];
                for j in 0..4 {
                    for (h, qh) in qh.into_iter().enumerate() {
                        let [mut lo, mut hi] = nibbles(qs.add(32 * j + 16 * h));
                        if ty == Q5_K {
                            let bit = |k: i8| {
                                let v = vshlq_u8(qh, vdupq_n_s8(-k));
                                vshlq_n_u8(vandq_u8(v, vdupq_n_u8(1)), 4)
                            };
                            lo = vorrq_u8(lo, bit(2 * j as i8));
                            hi = vorrq_u8(hi, bit(2 * j as i8 + 1));
                        }
                        vst1q_s8(q.add(64 * j + 16 * h), vreinterpretq_s8_u8(lo));
                        vst1q_s8(q.add(64 * j + 32 + 16 * h), vreinterpretq_s8_u8(hi));
                    }
                }
            } else {
                let x = x.add(size_of::<BlockQ6_K>() * b);
                self.d[r][b] = f16_at(x.add(208));
                for j in 0..16 {
                    self.sc[r][b][j] = x.add(192 + j).cast::<i8>().read() as i32;
                }
                for half in 0..2 {
                    let v = q6k_half(x.add(64 * half), x.add(128 + 32 * half));
                    for (i, v) in v.into_iter().enumerate() {
                        vst1q_s8(q.add(128 * half + 16 * i), v);
                    }
                }
            }
        }
    }
}

arm_kernels!(neon, "neon", dot16_neon, gdot4_neon);
arm_kernels!(dotprod, "neon,dotprod", dot16_dotprod, gdot4_dotprod);

/// Four values of a float row from element `i`: `f32`, or (`HALF`) `f16` widened exactly
/// with one `fcvtl` (plain ARMv8).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load4<const HALF: bool>(p: *const u8, i: usize) -> float32x4_t {
    if HALF {
        let h = vld1_u16(p.add(2 * i).cast());
        let out: float32x4_t;
        // SAFETY (of the asm): register-only conversion, plain ARMv8 (no FP16 extension).
        asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            h = in(vreg) h, o = out(vreg) out,
            options(pure, nomem, nostack, preserves_flags)
        );
        out
    } else {
        vld1q_f32(p.cast::<f32>().add(i))
    }
}

/// Element `i` of a float row, as [`load4`].
#[inline]
unsafe fn load1<const HALF: bool>(p: *const u8, i: usize) -> f32 {
    if HALF {
        f16_at(p.add(2 * i))
    } else {
        p.cast::<f32>().add(i).read_unaligned()
    }
}

/// F32 × F32, or (`HALF`) F16 × F16 in `f32`.
#[target_feature(enable = "neon")]
unsafe fn float_dot<const HALF: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let main = n / 16 * 16;
    for i in (0..main).step_by(16) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let xv = load4::<HALF>(x, i + 4 * k);
            *acc = vfmaq_f32(*acc, xv, load4::<HALF>(y, i + 4 * k));
        }
    }
    let mut sum = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    for i in main..n {
        sum += load1::<HALF>(x, i) * load1::<HALF>(y, i);
    }
    sum
}

/// F32 (or, `HALF`, F16) weights against the panel's 4 tokens (always `f32`), lanes along
/// the row.
#[target_feature(enable = "neon")]
unsafe fn float_tile<const HALF: bool>(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
    let rb = cols * if HALF { 2 } else { 4 };
    let rows = w.len() / rb;
    let pb = panel_bytes_f32(cols);
    let np = panels.len() / pb;
    for p in 0..np {
        let a = panels.as_ptr().add(p * pb).cast::<f32>();
        for r in 0..rows {
            let x = w.as_ptr().add(r * rb);
            let mut acc = [vdupq_n_f32(0.0); PANEL];
            let main = cols / 4 * 4;
            for k in (0..main).step_by(4) {
                let xv = load4::<HALF>(x, k);
                for (t, acc) in acc.iter_mut().enumerate() {
                    *acc = vfmaq_f32(*acc, xv, vld1q_f32(a.add(t * cols + k)));
                }
            }
            for (t, acc) in acc.iter().enumerate() {
                let mut s = vaddvq_f32(*acc);
                for k in main..cols {
                    s += load1::<HALF>(x, k) * a.add(t * cols + k).read_unaligned();
                }
                out[(p * rows + r) * PANEL + t] = s;
            }
        }
    }
}

/// Safe entry points. Each checks the sizes its kernel relies on, from the block types'
/// lengths and sizes; the CPU features were checked by `cpu::levels`, and the table hands
/// these out only in the sets of the levels they need.
mod w {
    use super::*;
    use crate::quant::{Block, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_K};

    /// Whether `n` values fill whole blocks of `B` and `bytes` is their size.
    fn fits<B: Block>(n: usize, bytes: usize) -> bool {
        n.is_multiple_of(B::LEN) && bytes == n / B::LEN * size_of::<B>()
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
            && out.len() == w.len() / row_bytes * (panels.len() / panel_bytes) * PANEL
    }

    macro_rules! wrap_dot {
        ($($name:ident: $inner:path, $w:ty, $a:ty;)*) => {$(
            pub(crate) fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
                assert!(
                    fits::<$w>(n, w.len()) && fits::<$a>(n, a.len()),
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: the features are present (see `cpu::levels`); sizes checked above.
                unsafe { $inner(n, w, a) }
            }
        )*};
    }
    wrap_dot! {
        n_dot_q4_0: neon::dot_q4_0, BlockQ4_0, BlockQ8_0;
        n_dot_q4_1: neon::dot_q4_1, BlockQ4_1, BlockQ8_1;
        n_dot_q5_0: neon::dot_q5_0, BlockQ5_0, BlockQ8_0;
        n_dot_q8_0: neon::dot_q8_0, BlockQ8_0, BlockQ8_0;
        n_dot_q4_k: neon::dot_q4_k, BlockQ4_K, BlockQ8_K;
        n_dot_q5_k: neon::dot_q5_k, BlockQ5_K, BlockQ8_K;
        n_dot_q6_k: neon::dot_q6_k, BlockQ6_K, BlockQ8_K;
        d_dot_q4_0: dotprod::dot_q4_0, BlockQ4_0, BlockQ8_0;
        d_dot_q4_1: dotprod::dot_q4_1, BlockQ4_1, BlockQ8_1;
        d_dot_q5_0: dotprod::dot_q5_0, BlockQ5_0, BlockQ8_0;
        d_dot_q8_0: dotprod::dot_q8_0, BlockQ8_0, BlockQ8_0;
        d_dot_q4_k: dotprod::dot_q4_k, BlockQ4_K, BlockQ8_K;
        d_dot_q5_k: dotprod::dot_q5_k, BlockQ5_K, BlockQ8_K;
        d_dot_q6_k: dotprod::dot_q6_k, BlockQ6_K, BlockQ8_K;
    }

    pub(crate) fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let bytes = n * size_of::<f32>();
        assert!(w.len() == bytes && a.len() == bytes, "dot_f32: sizes");
        // SAFETY: NEON is present (see `cpu::levels`); sizes checked above.
        unsafe { super::float_dot::<false>(n, w, a) }
    }

    pub(crate) fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let bytes = n * size_of::<half::f16>();
        assert!(w.len() == bytes && a.len() == bytes, "dot_f16: sizes");
        // SAFETY: NEON is present (see `cpu::levels`); sizes checked above.
        unsafe { super::float_dot::<true>(n, w, a) }
    }

    macro_rules! wrap_rows {
        ($($name:ident: $inner:path, $w:ty, $a:ty;)*) => {$(
            pub(crate) fn $name(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                let rb = n / <$w>::LEN * size_of::<$w>();
                assert!(
                    n.is_multiple_of(<$w>::LEN) && w.len() == out.len() * rb
                        && fits::<$a>(n, a.len()),
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: the features are present (see `cpu::levels`); sizes checked above.
                unsafe { $inner(n, w, a, out) }
            }
        )*};
    }
    wrap_rows! {
        n_rows_q4_0: neon::rows_q4_0, BlockQ4_0, BlockQ8_0;
        n_rows_q4_1: neon::rows_q4_1, BlockQ4_1, BlockQ8_1;
        n_rows_q5_0: neon::rows_q5_0, BlockQ5_0, BlockQ8_0;
        n_rows_q8_0: neon::rows_q8_0, BlockQ8_0, BlockQ8_0;
        d_rows_q4_0: dotprod::rows_q4_0, BlockQ4_0, BlockQ8_0;
        d_rows_q4_1: dotprod::rows_q4_1, BlockQ4_1, BlockQ8_1;
        d_rows_q5_0: dotprod::rows_q5_0, BlockQ5_0, BlockQ8_0;
        d_rows_q8_0: dotprod::rows_q8_0, BlockQ8_0, BlockQ8_0;
        d_rows_q4_k: dotprod::rows_q4_k, BlockQ4_K, BlockQ8_K;
    }

    macro_rules! wrap_quantize {
        ($($name:ident: $inner:path, $b:ty;)*) => {$(
            pub(crate) fn $name(src: &[f32], dst: &mut [u8]) {
                assert!(fits::<$b>(src.len(), dst.len()), "{}: sizes", stringify!($name));
                // SAFETY: NEON is present (see `cpu::levels`); sizes checked above.
                unsafe { $inner(src, dst) }
            }
        )*};
    }
    wrap_quantize! {
        quantize_q8_0: quantize::q8_0, BlockQ8_0;
        quantize_q8_1: quantize::q8_1, BlockQ8_1;
        quantize_q8_k: quantize::q8_k, BlockQ8_K;
    }

    macro_rules! wrap_tile {
        ($($name:ident: $inner:path, $w:ty, $pb:path;)*) => {$(
            pub(crate) fn $name(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
                let rb = cols / <$w>::LEN * size_of::<$w>();
                assert!(
                    cols.is_multiple_of(<$w>::LEN) && tile_fits(rb, $pb(cols), w, panels, out),
                    "{}: sizes", stringify!($name)
                );
                // SAFETY: the features are present (see `cpu::levels`); sizes checked above.
                unsafe { $inner(cols, w, panels, out) }
            }
        )*};
    }
    wrap_tile! {
        n_tile_q4_0: neon::tile_q4_0, BlockQ4_0, panel_bytes_q8;
        n_tile_q4_1: neon::tile_q4_1, BlockQ4_1, panel_bytes_q8;
        n_tile_q5_0: neon::tile_q5_0, BlockQ5_0, panel_bytes_q8;
        n_tile_q8_0: neon::tile_q8_0, BlockQ8_0, panel_bytes_q8;
        n_tile_q4_k: neon::tile_q4_k, BlockQ4_K, panel_bytes_q8_k;
        n_tile_q6_k: neon::tile_q6_k, BlockQ6_K, panel_bytes_q8_k;
        d_tile_q4_0: dotprod::tile_q4_0, BlockQ4_0, panel_bytes_q8;
        d_tile_q4_1: dotprod::tile_q4_1, BlockQ4_1, panel_bytes_q8;
        d_tile_q5_0: dotprod::tile_q5_0, BlockQ5_0, panel_bytes_q8;
        d_tile_q8_0: dotprod::tile_q8_0, BlockQ8_0, panel_bytes_q8;
        d_tile_q4_k: dotprod::tile_q4_k, BlockQ4_K, panel_bytes_q8_k;
        d_tile_q6_k: dotprod::tile_q6_k, BlockQ6_K, panel_bytes_q8_k;
        mm_q4_0: i8mm::tile_q4_0, BlockQ4_0, i8mm::panel_bytes;
        mm_q4_1: i8mm::tile_q4_1, BlockQ4_1, i8mm::panel_bytes;
        mm_q5_0: i8mm::tile_q5_0, BlockQ5_0, i8mm::panel_bytes;
        mm_q8_0: i8mm::tile_q8_0, BlockQ8_0, i8mm::panel_bytes;
        mm_q4_k: i8mm::tile_q4_k, BlockQ4_K, i8mm::panel_bytes_k;
        mm_q5_k: i8mm::tile_q5_k, BlockQ5_K, i8mm::panel_bytes_k;
        mm_q6_k: i8mm::tile_q6_k, BlockQ6_K, i8mm::panel_bytes_k;
    }

    pub(crate) fn tile_f32(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
        let rb = cols * size_of::<f32>();
        assert!(
            tile_fits(rb, panel_bytes_f32(cols), w, panels, out),
            "tile_f32: sizes"
        );
        // SAFETY: NEON is present (see `cpu::levels`); sizes checked above.
        unsafe { super::float_tile::<false>(cols, w, panels, out) }
    }

    pub(crate) fn tile_f16(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]) {
        let rb = cols * size_of::<half::f16>();
        assert!(
            tile_fits(rb, panel_bytes_f32(cols), w, panels, out),
            "tile_f16: sizes"
        );
        // SAFETY: NEON is present (see `cpu::levels`); sizes checked above.
        unsafe { super::float_tile::<true>(cols, w, panels, out) }
    }
}
