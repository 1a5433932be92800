//! The 256-value "k-quant" super-block formats: Q2_K … Q6_K (weights) and Q8_K (activations).
//!
//! A super-block holds [`QK_K`] values in sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K,
//! Q5_K), each with a small integer scale (and, for Q2_K/Q4_K/Q5_K, a min) that the `f16`
//! super-block scales `d` and `dmin` multiply. Each format below has a function giving the
//! integer quant of value `i` of the block, so dequantization and the dot product read the
//! bits the same way, and that way is written down once.
//!
//! The dot products pair with Q8_K activations: `d * sum(sc * q * q8) - dmin * sum(m * q8)`,
//! where the second sum uses Q8_K's `bsums` (sums of its quants in groups of 16), as ggml does.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{f16_to_f32, Block, DotBlock, QuantizeBlock};
use crate::types::{GgmlType, QK_K};

/// 2-bit values `d * sc * q - dmin * m` in 16 sub-blocks of 16 (`sc`, `m`: 4 bits each).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ2_K {
    /// Sub-block `j`: scale in the low nibble, min in the high nibble.
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(size_of::<BlockQ2_K>() == 84);

/// 3-bit values `d * (sc - 32) * (q - 4)` in 16 sub-blocks of 16 (`sc`: 6 bits).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ3_K {
    /// The third bit of each value; a *clear* bit subtracts 4.
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales packed in 12 bytes (see [`BlockQ3_K::scale`]).
    pub scales: [u8; 12],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ3_K>() == 110);

/// 4-bit values `d * sc * q - dmin * m` in 8 sub-blocks of 32 (`sc`, `m`: 6 bits).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_K {
    pub d: f16,
    pub dmin: f16,
    /// 8 six-bit scales and 8 six-bit mins packed in 12 bytes (see [`scale_min_k4`]).
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4_K>() == 144);

/// 5-bit values `d * sc * q - dmin * m` in 8 sub-blocks of 32 (`sc`, `m`: 6 bits).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_K {
    pub d: f16,
    pub dmin: f16,
    /// Packed like [`BlockQ4_K::scales`].
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5_K>() == 176);

/// 6-bit values `d * sc * (q - 32)` in 16 sub-blocks of 16 (`sc`: signed 8 bits).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6_K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ6_K>() == 210);

/// 8-bit activations `d * q` with an `f32` scale and the sums of each 16 quants.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// `bsums[j] = sum(qs[16 j .. 16 j + 16])`.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(size_of::<BlockQ8_K>() == 292);

/// The six-bit scale and min of sub-block `j` (0..8) of a Q4_K or Q5_K block: bytes 0..4
/// hold scales 0..4 and bytes 4..8 mins 0..4 in their low six bits; sub-blocks 4..8 take
/// their low four bits from the nibbles of bytes 8..12 and their top two bits from the top
/// bits of bytes 0..8.
pub fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Value `i` of a k-quant block sits in byte `i % 32` of a 32-byte group of `qs`; this gives
/// the group and the bit position for the 2-bit formats (Q2_K, Q3_K): each 128 values use 32
/// bytes, and each 32 values of those a different pair of bits.
fn two_bit_quant(qs: &[u8; QK_K / 4], i: usize) -> i32 {
    let byte = qs[32 * (i / 128) + i % 32];
    let shift = 2 * ((i / 32) % 4);
    ((byte >> shift) & 3) as i32
}

/// The four low bits of value `i` in Q4_K/Q5_K: each 64 values use 32 bytes, the first 32
/// values in the low nibbles, the next 32 in the high ones.
fn nibble_quant(qs: &[u8; QK_K / 2], i: usize) -> i32 {
    let byte = qs[32 * (i / 64) + i % 32];
    if i % 64 < 32 {
        (byte & 0x0F) as i32
    } else {
        (byte >> 4) as i32
    }
}

/// `h[i % 32]`'s bit `i / 32`: the extra high bit of value `i` in Q3_K and Q5_K.
fn high_bit(h: &[u8; QK_K / 8], i: usize) -> i32 {
    ((h[i % 32] >> (i / 32)) & 1) as i32
}

impl BlockQ2_K {
    /// The quant (0..4) of value `i`.
    pub fn quant(&self, i: usize) -> i32 {
        two_bit_quant(&self.qs, i)
    }
}

impl BlockQ3_K {
    /// The scale (-32..32) of sub-block `j` (0..16): its low four bits are nibble `j % 8` of
    /// bytes 0..8 (low nibbles first), its top two bits the bits `2 (j / 4)` of byte `8 + j % 4`.
    pub fn scale(&self, j: usize) -> i32 {
        let s = &self.scales;
        let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i32 - 32
    }

    /// The quant (-4..4) of value `i`.
    pub fn quant(&self, i: usize) -> i32 {
        two_bit_quant(&self.qs, i) - if high_bit(&self.hmask, i) == 1 { 0 } else { 4 }
    }
}

impl BlockQ4_K {
    /// The quant (0..16) of value `i`.
    pub fn quant(&self, i: usize) -> i32 {
        nibble_quant(&self.qs, i)
    }
}

impl BlockQ5_K {
    /// The quant (0..32) of value `i`.
    pub fn quant(&self, i: usize) -> i32 {
        nibble_quant(&self.qs, i) + 16 * high_bit(&self.qh, i)
    }
}

impl BlockQ6_K {
    /// The quant (-32..32) of value `i`: each 128 values use 64 bytes of `ql` (values 0..32
    /// and 64..96 in the low and high nibbles of the first 32 bytes, values 32..64 and 96..128
    /// in those of the next 32) and 32 bytes of `qh` (two bits per value, by groups of 32).
    pub fn quant(&self, i: usize) -> i32 {
        let (n, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let low_byte = self.ql[64 * n + 32 * (k % 2) + l];
        let low = if k < 2 {
            low_byte & 0x0F
        } else {
            low_byte >> 4
        };
        let high = (self.qh[32 * n + l] >> (2 * k)) & 3;
        (low | (high << 4)) as i32 - 32
    }
}

impl Block for BlockQ2_K {
    const TYPE: GgmlType = GgmlType::Q2_K;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (f16_to_f32(self.d), f16_to_f32(self.dmin));
        for (j, sub) in out.chunks_exact_mut(16).enumerate() {
            let sc = self.scales[j];
            let dl = d * (sc & 0x0F) as f32;
            let ml = dmin * (sc >> 4) as f32;
            for (l, y) in sub.iter_mut().enumerate() {
                *y = dl * self.quant(16 * j + l) as f32 - ml;
            }
        }
    }
}

impl Block for BlockQ3_K {
    const TYPE: GgmlType = GgmlType::Q3_K;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (j, sub) in out.chunks_exact_mut(16).enumerate() {
            let dl = d * self.scale(j) as f32;
            for (l, y) in sub.iter_mut().enumerate() {
                *y = dl * self.quant(16 * j + l) as f32;
            }
        }
    }
}

impl Block for BlockQ4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (f16_to_f32(self.d), f16_to_f32(self.dmin));
        for (j, sub) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(j, &self.scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            for (l, y) in sub.iter_mut().enumerate() {
                *y = dl * self.quant(32 * j + l) as f32 - ml;
            }
        }
    }
}

impl Block for BlockQ5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (f16_to_f32(self.d), f16_to_f32(self.dmin));
        for (j, sub) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(j, &self.scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            for (l, y) in sub.iter_mut().enumerate() {
                *y = dl * self.quant(32 * j + l) as f32 - ml;
            }
        }
    }
}

impl Block for BlockQ6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (j, sub) in out.chunks_exact_mut(16).enumerate() {
            let dl = d * self.scales[j] as f32;
            for (l, y) in sub.iter_mut().enumerate() {
                *y = dl * self.quant(16 * j + l) as f32;
            }
        }
    }
}

impl Block for BlockQ8_K {
    const TYPE: GgmlType = GgmlType::Q8_K;

    fn dequantize(&self, out: &mut [f32]) {
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = self.d * q as f32;
        }
    }
}

impl QuantizeBlock for BlockQ8_K {
    /// As `quantize_row_q8_K_ref`: the value of largest magnitude (the first one, on ties)
    /// maps to -127, so `d` has the opposite sign of that value; each quant is the exact
    /// product `iscale * x` rounded to nearest, ties to even.
    /// An all-zero block gets `d = 0` and zero quants and sums (ggml leaves its `bsums`
    /// unwritten there).
    fn quantize(src: &[f32]) -> Self {
        let mut block = BlockQ8_K::zeroed();
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &x in src {
            if x.abs() > amax {
                amax = x.abs();
                max = x;
            }
        }
        if amax == 0.0 {
            return block;
        }
        let iscale = -127.0 / max;
        for (q, &x) in block.qs.iter_mut().zip(src) {
            // The exact product, rounded once (see the note on fused multiply-adds in
            // `crate::quant`); an f64 product of two f32s is exact.
            let v = (iscale as f64 * x as f64).round_ties_even() as i32;
            *q = v.min(127) as i8;
        }
        for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = group.iter().map(|&q| q as i16).sum();
        }
        block.d = 1.0 / iscale;
        block
    }
}

/// `sum(q[i] * q8[i])` over sub-block `j` of `len` values.
fn sub_dot(quant: impl Fn(usize) -> i32, q8: &[i8; QK_K], j: usize, len: usize) -> i32 {
    (len * j..len * (j + 1))
        .map(|i| quant(i) * q8[i] as i32)
        .sum()
}

impl DotBlock for BlockQ2_K {
    type Act = BlockQ8_K;

    fn dot(&self, y: &BlockQ8_K) -> f32 {
        let mut isum = 0i32;
        let mut summs = 0i32;
        for j in 0..QK_K / 16 {
            let sc = self.scales[j];
            isum += (sc & 0x0F) as i32 * sub_dot(|i| self.quant(i), &y.qs, j, 16);
            summs += (sc >> 4) as i32 * y.bsums[j] as i32;
        }
        let d = y.d * f16_to_f32(self.d);
        let dmin = y.d * f16_to_f32(self.dmin);
        d * isum as f32 - dmin * summs as f32
    }
}

impl DotBlock for BlockQ3_K {
    type Act = BlockQ8_K;

    fn dot(&self, y: &BlockQ8_K) -> f32 {
        let isum: i32 = (0..QK_K / 16)
            .map(|j| self.scale(j) * sub_dot(|i| self.quant(i), &y.qs, j, 16))
            .sum();
        (f16_to_f32(self.d) * y.d) * isum as f32
    }
}

impl DotBlock for BlockQ4_K {
    type Act = BlockQ8_K;

    fn dot(&self, y: &BlockQ8_K) -> f32 {
        let mut isum = 0i32;
        let mut summs = 0i32;
        for j in 0..QK_K / 32 {
            let (sc, m) = scale_min_k4(j, &self.scales);
            isum += sc as i32 * sub_dot(|i| self.quant(i), &y.qs, j, 32);
            summs += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
        }
        let d = f16_to_f32(self.d) * y.d;
        let dmin = f16_to_f32(self.dmin) * y.d;
        d * isum as f32 - dmin * summs as f32
    }
}

impl DotBlock for BlockQ5_K {
    type Act = BlockQ8_K;

    fn dot(&self, y: &BlockQ8_K) -> f32 {
        let mut isum = 0i32;
        let mut summs = 0i32;
        for j in 0..QK_K / 32 {
            let (sc, m) = scale_min_k4(j, &self.scales);
            isum += sc as i32 * sub_dot(|i| self.quant(i), &y.qs, j, 32);
            summs += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
        }
        let d = f16_to_f32(self.d) * y.d;
        let dmin = f16_to_f32(self.dmin) * y.d;
        d * isum as f32 - dmin * summs as f32
    }
}

impl DotBlock for BlockQ6_K {
    type Act = BlockQ8_K;

    fn dot(&self, y: &BlockQ8_K) -> f32 {
        let isum: i32 = (0..QK_K / 16)
            .map(|j| self.scales[j] as i32 * sub_dot(|i| self.quant(i), &y.qs, j, 16))
            .sum();
        (f16_to_f32(self.d) * y.d) * isum as f32
    }
}

impl DotBlock for BlockQ8_K {
    type Act = BlockQ8_K;

    fn dot(&self, y: &BlockQ8_K) -> f32 {
        let isum: i32 = (0..QK_K).map(|i| self.qs[i] as i32 * y.qs[i] as i32).sum();
        (self.d * y.d) * isum as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize, vec_dot};

    fn h(x: f32) -> f16 {
        f16::from_f32(x)
    }

    /// The dot product with `act` computed from dequantized values in `f64`.
    fn dot_of_dequantized<B: DotBlock<Act = BlockQ8_K>>(w: &B, act: &BlockQ8_K) -> f64 {
        let (mut x, mut y) = ([0.0f32; QK_K], [0.0f32; QK_K]);
        w.dequantize(&mut x);
        act.dequantize(&mut y);
        x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    /// A Q8_K block with quants `i % 7 - 3` and scale 0.5.
    fn ramp_act() -> BlockQ8_K {
        let mut src = [0.0f32; QK_K];
        for (i, x) in src.iter_mut().enumerate() {
            *x = ((i % 7) as f32 - 3.0) * 0.5;
        }
        // Force the largest magnitude to be negative so that d comes out positive.
        src[0] = -1.5 * 127.0 / 3.0;
        let mut bytes = [0u8; 292];
        quantize(GgmlType::Q8_K, &src, &mut bytes);
        bytemuck::pod_read_unaligned(&bytes)
    }

    #[test]
    fn q8_k_quantize_by_hand() {
        let mut src = [0.0f32; QK_K];
        src[5] = -1.984375; // largest magnitude, negative: iscale = -127 / max = 64 exactly
        src[6] = 2.5 / 64.0; // 2.5 -> 2 (tie, to even)
        src[7] = 1.5 / 64.0; // 1.5 -> 2 (tie, to even)
        src[200] = 1.98; // 126.72 -> 127
        let mut bytes = [0u8; 292];
        quantize(GgmlType::Q8_K, &src, &mut bytes);
        let b: BlockQ8_K = bytemuck::pod_read_unaligned(&bytes);
        assert_eq!(b.d, 1.0 / 64.0);
        assert_eq!(&b.qs[5..8], &[-127, 2, 2]);
        assert_eq!(b.qs[200], 127);
        assert_eq!(b.bsums[0], -127 + 2 + 2);
        assert_eq!(b.bsums[12], 127);
        assert_eq!(b.bsums.iter().map(|&s| s as i32).sum::<i32>(), 4);

        // A positive maximum gives a negative d and negated quants.
        src[5] = 1.984375;
        quantize(GgmlType::Q8_K, &src, &mut bytes);
        let b: BlockQ8_K = bytemuck::pod_read_unaligned(&bytes);
        assert_eq!(b.d, -1.0 / 64.0);
        assert_eq!(&b.qs[5..8], &[-127, -2, -2]);
        assert_eq!(b.qs[200], -127);

        // All zeros: zero scale, quants and sums.
        quantize(GgmlType::Q8_K, &[0.0; QK_K], &mut bytes);
        assert!(bytes.iter().all(|&v| v == 0));
    }

    #[test]
    fn q4_k_by_hand() {
        // Sub-block 1: scale 3, min 2; sub-block 5: scale 0x25 = 37, min 0x1A = 26.
        let mut scales = [0u8; 12];
        scales[1] = 3;
        scales[5] = 2;
        scales[9] = 0x05 | (0x0A << 4); // low bits of scale 5 and min 5
        scales[1] |= 0b10 << 6; // top bits of scale 5 ride on byte 1 ...
        scales[5] |= 0b01 << 6; // ... and of min 5 on byte 5
        let mut qs = [0u8; 128];
        qs[0] = 0x70; // value 0: 0 (sub-block 0); value 32: 7 (sub-block 1)
        qs[64 + 4] = 0x0C; // value 128 + 4: 12 (sub-block 4); value 160 + 4: 0 (sub-block 5)
        let b = BlockQ4_K {
            d: h(0.5),
            dmin: h(0.25),
            scales,
            qs,
        };
        assert_eq!(scale_min_k4(1, &b.scales), (3, 2)); // top bits masked off
        assert_eq!(scale_min_k4(5, &b.scales), (0x25, 0x1A));
        let mut out = [0.0f32; QK_K];
        dequantize(GgmlType::Q4_K, bytemuck::bytes_of(&b), &mut out);
        // Sub-block 1: 0.5 * 3 * 7 - 0.25 * 2.
        assert_eq!(out[32], 10.0);
        assert_eq!(out[33], -0.5);
        assert_eq!(out[132], 0.0); // sub-block 4: scale and min 0
        assert_eq!(out[164], -0.25 * 26.0);
        assert_eq!(out[165], -6.5);
    }

    #[test]
    fn q6_k_and_q3_k_by_hand() {
        let mut b = BlockQ6_K::zeroed();
        b.d = h(2.0);
        b.scales[0] = -1;
        b.scales[6] = 3;
        b.ql[0] = 0x5A; // value 0 low bits 0xA, value 64 low bits 0x5
        b.qh[0] = 0b01_00_00_10; // value 0 high bits 2, value 96 high bits 1
                                 // value 0: (0xA | 2 << 4) - 32 = 10, scale -1: -20.
                                 // value 64: 0x5 - 32 = -27, sub-block 4 has scale 0: 0.
                                 // value 96: (0 | 1 << 4) - 32 = -16, sub-block 6 scale 3: -96.
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert_eq!(b.quant(0), 10);
        assert_eq!(b.quant(64), -27);
        assert_eq!(out[0], -20.0);
        assert_eq!(out[64], 0.0);
        assert_eq!(out[96], -96.0);
        assert_eq!(out[1], -2.0 * -32.0); // d * sc = -2, q = 0 - 32

        let mut b = BlockQ3_K::zeroed();
        b.d = h(1.0);
        b.scales[2] = 0x0F; // scale 2 low bits 15, scale 10 low bits 0
                            // The top bits of scale j are bits 2 (j / 4) of byte 8 + j % 4: byte 10, bits 2..4
                            // belong to scale 6.
        b.scales[10] = 0b11 << 2;
        assert_eq!(b.scale(2), 15 - 32);
        assert_eq!(b.scale(6), (3 << 4) - 32);
        assert_eq!(b.scale(0), -32);
        b.qs[5] = 0b11 << 2; // value 32 + 5: 3 (second pair of bits)
        b.hmask[5] = 0b10; // value 32 + 5 keeps its high bit (bit 1): no -4
        assert_eq!(b.quant(37), 3);
        assert_eq!(b.quant(5), -4);
        b.dequantize(&mut out);
        assert_eq!(out[37], 3.0 * -17.0); // sub-block 2, scale 15 - 32
        assert_eq!(out[5], -4.0 * -32.0);
    }

    #[test]
    fn dot_products_match_dequantized_values() {
        let act = ramp_act();
        let mut bytes = [0u8; 210];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 37 % 251) as u8;
        }
        // d, dmin fields of each format set to small normal f16s.
        let mut q2: BlockQ2_K = bytemuck::pod_read_unaligned(&bytes[..84]);
        (q2.d, q2.dmin) = (h(0.125), h(0.0625));
        let mut q3: BlockQ3_K = bytemuck::pod_read_unaligned(&bytes[..110]);
        q3.d = h(0.03125);
        let mut q4: BlockQ4_K = bytemuck::pod_read_unaligned(&bytes[..144]);
        (q4.d, q4.dmin) = (h(0.25), h(-0.5));
        let mut q5: BlockQ5_K = bytemuck::pod_read_unaligned(&bytes[..176]);
        (q5.d, q5.dmin) = (h(-0.25), h(0.5));
        let mut q6: BlockQ6_K = bytemuck::pod_read_unaligned(&bytes[..210]);
        q6.d = h(0.01);

        // Every product and partial sum here is exact in f32, so the results are equal.
        assert_eq!(q2.dot(&act) as f64, dot_of_dequantized(&q2, &act));
        assert_eq!(q3.dot(&act) as f64, dot_of_dequantized(&q3, &act));
        assert_eq!(q4.dot(&act) as f64, dot_of_dequantized(&q4, &act));
        assert_eq!(q5.dot(&act) as f64, dot_of_dequantized(&q5, &act));
        let q6_want = dot_of_dequantized(&q6, &act);
        assert!((q6.dot(&act) as f64 - q6_want).abs() <= 1e-6 * q6_want.abs());
        assert_eq!(act.dot(&act) as f64, dot_of_dequantized(&act, &act));

        // Through the public API, over two blocks.
        let w = [q4, q4];
        let a = [act, act];
        let got = vec_dot(
            GgmlType::Q4_K,
            2 * QK_K,
            bytemuck::cast_slice(&w),
            bytemuck::cast_slice(&a),
        );
        assert_eq!(got, 2.0 * q4.dot(&act));
    }
}
