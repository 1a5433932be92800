//! The 32-value formats: Q4_0, Q4_1, Q5_0, Q5_1 (weights) and Q8_0, Q8_1 (activations).
//!
//! In every one of them byte `j` of `qs` holds value `j` in its low nibble and value `j + 16`
//! in its high nibble (Q8 formats: one byte per value). The 5-bit formats keep the fifth bit
//! of value `i` in bit `i` of the little-endian `u32` `qh`.
//!
//! Values are `d * q` ("_0" formats, `q` centred on zero) or `d * q + m` ("_1" formats).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{f16_to_f32, f32_to_f16, Block, DotBlock, QuantizeBlock};
use crate::GgmlType;

/// Values per block of every format in this file.
pub const QK: usize = 32;

/// 4-bit values `d * (q - 8)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// 4-bit values `d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// 5-bit values `d * (q - 16)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// 5-bit values `d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// 8-bit values `d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// 8-bit values `d * q`, with `s = d * sum(q)` kept for the "_1" weight formats' `m` term.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

/// The unsigned 4-bit value `i` (0..32) of a block's `qs`.
fn nibble(qs: &[u8; QK / 2], i: usize) -> i32 {
    if i < QK / 2 {
        (qs[i] & 0x0F) as i32
    } else {
        (qs[i - QK / 2] >> 4) as i32
    }
}

/// The unsigned 5-bit value `i` (0..32): a nibble plus bit `i` of `qh` as 16.
fn five_bits(qs: &[u8; QK / 2], qh: [u8; 4], i: usize) -> i32 {
    let high = (u32::from_le_bytes(qh) >> i) & 1;
    nibble(qs, i) | (high << 4) as i32
}

/// The sum of `x[i] * y[i]` over a block, exactly.
fn int_dot(x: impl Fn(usize) -> i32, y: &[i8; QK]) -> i32 {
    (0..QK).map(|i| x(i) * y[i] as i32).sum()
}

/// ggml's `amax / 127` scale of the 8-bit formats, computed as ggml does (including its
/// `MAX(a, b)` being `a > b ? a : b`, which matters only for NaN inputs).
fn q8_scale(src: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in src {
        let av = v.abs();
        amax = if amax > av { amax } else { av };
    }
    amax / 127.0
}

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (i, y) in out.iter_mut().enumerate() {
            *y = (nibble(&self.qs, i) - 8) as f32 * d;
        }
    }
}

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (f16_to_f32(self.d), f16_to_f32(self.m));
        for (i, y) in out.iter_mut().enumerate() {
            *y = nibble(&self.qs, i) as f32 * d + m;
        }
    }
}

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (i, y) in out.iter_mut().enumerate() {
            *y = (five_bits(&self.qs, self.qh, i) - 16) as f32 * d;
        }
    }
}

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (f16_to_f32(self.d), f16_to_f32(self.m));
        for (i, y) in out.iter_mut().enumerate() {
            *y = five_bits(&self.qs, self.qh, i) as f32 * d + m;
        }
    }
}

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl Block for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_0 {
    /// `d = amax / 127` is stored as `f16`, but the values are scaled by `1 / d` in `f32` and
    /// rounded half away from zero (C's `roundf`), exactly as `quantize_row_q8_0_ref` does.
    fn quantize(src: &[f32]) -> Self {
        let d = q8_scale(src);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &x) in qs.iter_mut().zip(src) {
            *q = (x * id).round() as i8;
        }
        BlockQ8_0 {
            d: f32_to_f16(d),
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ8_1 {
    /// As [`BlockQ8_0`], plus `s = f16(sum(q) * d)` with the `f32` `d` (not its `f16`).
    fn quantize(src: &[f32]) -> Self {
        let d = q8_scale(src);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &x) in qs.iter_mut().zip(src) {
            *q = (x * id).round() as i8;
        }
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 {
            d: f32_to_f16(d),
            s: f32_to_f16(sum as f32 * d),
            qs,
        }
    }
}

impl DotBlock for BlockQ4_0 {
    type Act = BlockQ8_0;

    fn dot(&self, y: &BlockQ8_0) -> f32 {
        let sumi = int_dot(|i| nibble(&self.qs, i) - 8, &y.qs);
        sumi as f32 * (f16_to_f32(self.d) * f16_to_f32(y.d))
    }
}

impl DotBlock for BlockQ4_1 {
    type Act = BlockQ8_1;

    /// `sum((d q + m) dy qy) = d dy sum(q qy) + m (dy sum(qy))`, the last factor being `y.s`.
    fn dot(&self, y: &BlockQ8_1) -> f32 {
        let sumi = int_dot(|i| nibble(&self.qs, i), &y.qs);
        (f16_to_f32(self.d) * f16_to_f32(y.d)) * sumi as f32 + f16_to_f32(self.m) * f16_to_f32(y.s)
    }
}

impl DotBlock for BlockQ5_0 {
    type Act = BlockQ8_0;

    fn dot(&self, y: &BlockQ8_0) -> f32 {
        let sumi = int_dot(|i| five_bits(&self.qs, self.qh, i) - 16, &y.qs);
        sumi as f32 * (f16_to_f32(self.d) * f16_to_f32(y.d))
    }
}

impl DotBlock for BlockQ5_1 {
    type Act = BlockQ8_1;

    fn dot(&self, y: &BlockQ8_1) -> f32 {
        let sumi = int_dot(|i| five_bits(&self.qs, self.qh, i), &y.qs);
        (f16_to_f32(self.d) * f16_to_f32(y.d)) * sumi as f32 + f16_to_f32(self.m) * f16_to_f32(y.s)
    }
}

impl DotBlock for BlockQ8_0 {
    type Act = BlockQ8_0;

    fn dot(&self, y: &BlockQ8_0) -> f32 {
        let sumi = int_dot(|i| self.qs[i] as i32, &y.qs);
        sumi as f32 * (f16_to_f32(self.d) * f16_to_f32(y.d))
    }
}

impl DotBlock for BlockQ8_1 {
    type Act = BlockQ8_1;

    fn dot(&self, y: &BlockQ8_1) -> f32 {
        let sumi = int_dot(|i| self.qs[i] as i32, &y.qs);
        sumi as f32 * (f16_to_f32(self.d) * f16_to_f32(y.d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize, vec_dot};

    fn h(x: f32) -> f16 {
        f16::from_f32(x)
    }

    #[test]
    fn q4_0_by_hand() {
        // Byte j holds value j (low nibble) and value j + 16 (high nibble); values are d (q - 8).
        let mut qs = [0x88u8; 16]; // every value 0
        qs[0] = 0xF0; // value 0: q = 0 -> -8 d; value 16: q = 15 -> 7 d
        qs[3] = 0x29; // value 3: q = 9 -> d; value 19: q = 2 -> -6 d
        let block = BlockQ4_0 { d: h(0.5), qs };
        let mut out = [1.0f32; 32];
        dequantize(GgmlType::Q4_0, bytemuck::bytes_of(&block), &mut out);
        let mut expect = [0.0f32; 32];
        expect[0] = -4.0;
        expect[16] = 3.5;
        expect[3] = 0.5;
        expect[19] = -3.0;
        assert_eq!(out, expect);
    }

    #[test]
    fn q4_1_and_q5_by_hand() {
        let block = BlockQ4_1 {
            d: h(2.0),
            m: h(-1.0),
            qs: [0x31; 16], // low nibbles 1, high nibbles 3
        };
        let mut out = [0.0f32; 32];
        block.dequantize(&mut out);
        assert!(out[..16].iter().all(|&v| v == 1.0)); // 2 * 1 - 1
        assert!(out[16..].iter().all(|&v| v == 5.0)); // 2 * 3 - 1

        // Q5_0: value 2 has its fifth bit set (bit 2 of qh), value 18 too (bit 18).
        let block = BlockQ5_0 {
            d: h(0.25),
            qh: (1u32 << 2 | 1 << 18).to_le_bytes(),
            qs: [0x00; 16],
        };
        block.dequantize(&mut out);
        for (i, &v) in out.iter().enumerate() {
            let q = if i == 2 || i == 18 { 16 } else { 0 };
            assert_eq!(v, (q - 16) as f32 * 0.25, "value {i}");
        }

        let block = BlockQ5_1 {
            d: h(1.0),
            m: h(0.5),
            qh: u32::MAX.to_le_bytes(),
            qs: [0xFF; 16],
        };
        block.dequantize(&mut out);
        assert!(out.iter().all(|&v| v == 31.5));
    }

    #[test]
    fn q8_0_quantize_by_hand() {
        // amax = 127 so d = 1 and every value is rounded half away from zero.
        let mut src = [0.0f32; 32];
        src[0] = 127.0;
        src[1] = 2.5;
        src[2] = -2.5;
        src[3] = 0.49;
        src[4] = -126.6;
        let mut dst = [0u8; 34];
        quantize(GgmlType::Q8_0, &src, &mut dst);
        let block: BlockQ8_0 = bytemuck::pod_read_unaligned(&dst);
        assert_eq!(block.d, h(1.0));
        assert_eq!(&block.qs[..6], &[127, 3, -3, 0, -127, 0]);

        // Q8_1 also stores s = sum(q) * d.
        let mut dst = [0u8; 36];
        quantize(GgmlType::Q8_1, &src, &mut dst);
        let block: BlockQ8_1 = bytemuck::pod_read_unaligned(&dst);
        assert_eq!(block.s, h(0.0)); // 127 + 3 - 3 + 0 - 127
    }

    #[test]
    fn q8_zero_block_has_zero_scale() {
        let mut dst = [0xAAu8; 34];
        quantize(GgmlType::Q8_0, &[0.0; 32], &mut dst);
        assert!(dst.iter().all(|&b| b == 0));
    }

    #[test]
    fn dot_products_by_hand() {
        // Weights: Q4_0 all q = 9 (value d), d = 0.5 -> every weight 0.5.
        let w = BlockQ4_0 {
            d: h(0.5),
            qs: [0x99; 16],
        };
        // Activations: Q8_0 with d = 0.25, q = i - 16 for value i.
        let mut qs = [0i8; 32];
        for (i, q) in qs.iter_mut().enumerate() {
            *q = i as i8 - 16;
        }
        let a = BlockQ8_0 { d: h(0.25), qs };
        // sum(0.5 * 0.25 (i - 16)) = 0.125 * (496 - 512) = -2
        let got = vec_dot(
            GgmlType::Q4_0,
            32,
            bytemuck::bytes_of(&w),
            bytemuck::bytes_of(&a),
        );
        assert_eq!(got, -2.0);

        // Q4_1 weights 2 q + 1 with q = 1: every weight 3; Q8_1 activations all 1 (d = 1,
        // q = 1, s = 32): sum = 96.
        let w = BlockQ4_1 {
            d: h(2.0),
            m: h(1.0),
            qs: [0x11; 16],
        };
        let a = BlockQ8_1 {
            d: h(1.0),
            s: h(32.0),
            qs: [1; 32],
        };
        assert_eq!(w.dot(&a), 96.0);
    }
}
