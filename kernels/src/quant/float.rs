//! The unquantized types: F32, F16 and BF16, one value per "block".
//!
//! The dot products accumulate in `f64`, like ggml's scalar `ggml_vec_dot_f32/f16/bf16`
//! (`ggml_float` is `double`); each product is taken in `f32` first, as there. Products of two
//! F16 or two BF16 values are exact in `f32`.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

fn read_f32(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(bytemuck::pod_read_unaligned::<f32>)
}

fn read_f16(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(2)
        .map(|b| f16_to_f32(bytemuck::pod_read_unaligned::<f16>(b)))
}

fn read_bf16(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(2)
        .map(|b| bf16_to_f32(bytemuck::pod_read_unaligned::<bf16>(b)))
}

/// Copies little-endian `f32`s from `src` into `dst` (`src.len() == 4 * dst.len()`).
pub fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (y, x) in dst.iter_mut().zip(read_f32(src)) {
        *y = x;
    }
}

/// Widens `f16`s from `src` into `dst` (`src.len() == 2 * dst.len()`).
pub fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (y, x) in dst.iter_mut().zip(read_f16(src)) {
        *y = x;
    }
}

/// Widens `bf16`s from `src` into `dst` (`src.len() == 2 * dst.len()`).
pub fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (y, x) in dst.iter_mut().zip(read_bf16(src)) {
        *y = x;
    }
}

/// Stores `src` as little-endian `f32`s (`dst.len() == 4 * src.len()`).
pub fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (out, x) in dst.chunks_exact_mut(4).zip(src) {
        out.copy_from_slice(&x.to_le_bytes());
    }
}

/// Rounds `src` to `f16` like ggml's `ggml_fp32_to_fp16_row` (`dst.len() == 2 * src.len()`).
pub fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    // Converted a slice at a time (eight values per instruction with F16C or NEON's fp16),
    // which rounds as `f32_to_f16` does; only NaNs take the scalar path, for ggml's NaN.
    let mut buf = [f16::ZERO; F16_CHUNK];
    for (s, d) in src.chunks(F16_CHUNK).zip(dst.chunks_mut(2 * F16_CHUNK)) {
        let b = &mut buf[..s.len()];
        b.convert_from_f32_slice(s);
        for ((out, &h), &x) in d.chunks_exact_mut(2).zip(b.iter()).zip(s) {
            let h = if x.is_nan() { f32_to_f16(x) } else { h };
            out.copy_from_slice(&h.to_le_bytes());
        }
    }
}

/// Values converted per slice conversion by [`quantize_f16`] and [`round_to_f16`].
const F16_CHUNK: usize = 64;

/// Rounds each value of `x` to `f16` and back (`f16::from_f32(v).to_f32()`), as ggml rounds
/// the queries it multiplies with an f16 cache; a slice at a time, like [`quantize_f16`].
pub fn round_to_f16(x: &mut [f32]) {
    let mut buf = [f16::ZERO; F16_CHUNK];
    for chunk in x.chunks_mut(F16_CHUNK) {
        let b = &mut buf[..chunk.len()];
        b.convert_from_f32_slice(chunk);
        b.convert_to_f32_slice(chunk);
    }
}

/// Rounds `src` to `bf16` like ggml's `ggml_fp32_to_bf16_row_ref` (`dst.len() == 2 * src.len()`).
pub fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (out, &x) in dst.chunks_exact_mut(2).zip(src) {
        out.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
    }
}

fn dot(w: impl Iterator<Item = f32>, a: impl Iterator<Item = f32>) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in w.zip(a) {
        sum += (x * y) as f64;
    }
    sum as f32
}

/// Dot product of `n` `f32`s with `n` `f32`s.
pub fn vec_dot_f32(n: usize, w: &[u8], act: &[u8]) -> f32 {
    dot(read_f32(w).take(n), read_f32(act))
}

/// Dot product of `n` `f16`s with `n` `f16`s.
pub fn vec_dot_f16(n: usize, w: &[u8], act: &[u8]) -> f32 {
    dot(read_f16(w).take(n), read_f16(act))
}

/// Dot product of `n` `bf16`s with `n` `bf16`s.
pub fn vec_dot_bf16(n: usize, w: &[u8], act: &[u8]) -> f32 {
    dot(read_bf16(w).take(n), read_bf16(act))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize, vec_dot};
    use crate::GgmlType;

    /// The slice conversions round every value as the one-value `f32_to_f16` does: each
    /// bit pattern of a sweep (ties, subnormals, overflow, ±∞, NaNs with payloads), in a
    /// length that leaves a partial last chunk.
    #[test]
    fn slice_conversions_round_as_one_value_does() {
        let mut x: Vec<f32> = (0..200_003u32)
            .map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9) ^ (i << 7)))
            .collect();
        x.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
            65520.0,
            65519.99,
            1.0 + f32::EPSILON * 2048.0,
            5.96e-8,
            2.98e-8,
        ]);
        let mut bytes = vec![0u8; x.len() * 2];
        quantize_f16(&x, &mut bytes);
        let mut rounded = x.clone();
        round_to_f16(&mut rounded);
        for (i, &v) in x.iter().enumerate() {
            let want = f32_to_f16(v);
            let got = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
            assert_eq!(
                got,
                want.to_bits(),
                "quantize_f16 of {v:e} ({:#x})",
                v.to_bits()
            );
            let back = f16::from_f32(v).to_f32();
            assert!(
                rounded[i].to_bits() == back.to_bits() || (back.is_nan() && rounded[i].is_nan()),
                "round_to_f16 of {v:e}: {} against {back}",
                rounded[i]
            );
        }
    }

    #[test]
    fn round_trips_and_dot_products() {
        let x = [1.5f32, -2.0, 0.25, 3.0];
        let y = [2.0f32, 0.5, -4.0, 1.0];
        // 3 - 1 - 1 + 3, every value exact in f16 and bf16.
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let mut wx = vec![0u8; ty.block_bytes() * 4];
            let mut wy = wx.clone();
            quantize(ty, &x, &mut wx);
            quantize(ty, &y, &mut wy);
            let mut back = [0.0f32; 4];
            dequantize(ty, &wx, &mut back);
            assert_eq!(back, x, "{ty}");
            assert_eq!(vec_dot(ty, 4, &wx, &wy), 4.0, "{ty}");
        }
    }

    #[test]
    fn f16_bytes_are_little_endian() {
        let mut out = [0u8; 2];
        quantize_f16(&[1.0], &mut out);
        assert_eq!(out, [0x00, 0x3C]);
        quantize_bf16(&[1.0], &mut out);
        assert_eq!(out, [0x80, 0x3F]);
    }
}
