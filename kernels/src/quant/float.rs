//! The unquantized types: F32, F16 and BF16, one value per "block".
//!
//! The dot products accumulate in `f64`, like ggml's scalar `ggml_vec_dot_f32/f16/bf16`
//! (`ggml_float` is `double`); each product is taken in `f32` first, as there. Products of two
//! F16 or two BF16 values are exact in `f32`.

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
    for (out, &x) in dst.chunks_exact_mut(2).zip(src) {
        out.copy_from_slice(&f32_to_f16(x).to_le_bytes());
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
