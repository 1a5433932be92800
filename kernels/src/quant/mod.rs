//! ggml's block formats and their plain scalar reference.
//!
//! Every format is a `#[repr(C)]` struct laid out byte for byte like ggml's `block_*` struct,
//! with a compile-time size assertion next to it. The code here is deliberately plain: it is
//! the truth that every faster kernel is tested against, and it is itself tested against
//! ggml (through `tern-oracle`) in `kernels/tests/oracle_parity.rs`.
//!
//! - [`dequantize`] is bit-exact with ggml's `dequantize_row_*` / `to_float`.
//! - [`quantize`] (activation types only) is bit-exact with ggml's `quantize_row_*_ref`.
//! - [`vec_dot`] computes what ggml's CPU `vec_dot` computes, up to float rounding
//!   (the order of the float additions differs; the integer parts are exact).
//!
//! **Fused multiply-adds.** ggml's C is built with `-march=native` and GCC's default
//! `-ffp-contract=fast`, so wherever the target has FMA (x86-64 since Haswell, all aarch64)
//! `a * b + c` becomes one fused operation. In the dequantizers (`q * d + m`, `dl * q - ml`)
//! that changes nothing: there `a * b` is a small integer times an `f16`-derived scale, exact
//! in `f32`, so plain arithmetic here gives the same bits. It does matter in
//! `quantize_row_q8_K_ref`, whose rounding trick `x * iscale + 1.5 * 2^23` is fused into
//! rounding the *exact* product; this reference does the same (see [`BlockQ8_K`]) and so
//! matches FMA builds, which are what llama.cpp users run. A ggml built without FMA may give
//! a Q8_K quant one step off where `x * iscale` lies within an ulp of a half-integer.
//!
//! Blocks are read from byte slices with unaligned loads, so callers may pass any `&[u8]`
//! (a memory-mapped tensor, a `Vec<u8>`). The hot functions check sizes only with
//! `debug_assert!`: callers pass slices whose lengths are already known to be right (the GGUF
//! loader validates every tensor once, at open).

use bytemuck::Pod;
use half::{bf16, f16};

use crate::types::GgmlType;

pub mod float;
pub mod kquants;
pub mod legacy;

pub use float::round_to_f16;
pub use kquants::{BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

// GGUF and ggml's blocks are little-endian; blocks here are read with native loads.
#[cfg(target_endian = "big")]
compile_error!("tern-kernels reads ggml blocks with native loads and needs a little-endian target");

/// One block of a ggml format: [`Block::LEN`] values stored in `size_of::<Self>()` bytes.
pub trait Block: Pod {
    /// The ggml type whose blocks these are.
    const TYPE: GgmlType;
    /// Values in one block.
    const LEN: usize = Self::TYPE.block_len();

    /// Writes the block's values to `out`, which is exactly [`Block::LEN`] long.
    fn dequantize(&self, out: &mut [f32]);
}

/// A block format that activations are quantized to before a dot product.
pub trait QuantizeBlock: Block {
    /// Quantizes exactly [`Block::LEN`] values, as ggml's `quantize_row_*_ref` does.
    fn quantize(src: &[f32]) -> Self;
}

/// A block format that can be multiplied with a block of its activation type.
pub trait DotBlock: Block {
    /// The activation block format (ggml's `vec_dot_type`).
    type Act: Block;

    /// The dot product of this block with one activation block.
    fn dot(&self, act: &Self::Act) -> f32;
}

/// Converts `dst.len()` values of type `ty` from `src` to `f32`, as ggml's `to_float` does.
///
/// Preconditions (checked only in debug builds): `dst.len()` is a whole number of blocks of
/// `ty`, and `src.len()` is exactly `ty.bytes_for(dst.len())`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(
        ty.bytes_for(dst.len() as u64),
        Some(src.len() as u64),
        "dequantize {ty}: {} bytes for {} values",
        src.len(),
        dst.len()
    );
    use GgmlType::*;
    match ty {
        F32 => float::dequantize_f32(src, dst),
        F16 => float::dequantize_f16(src, dst),
        BF16 => float::dequantize_bf16(src, dst),
        Q4_0 => dequantize_blocks::<BlockQ4_0>(src, dst),
        Q4_1 => dequantize_blocks::<BlockQ4_1>(src, dst),
        Q5_0 => dequantize_blocks::<BlockQ5_0>(src, dst),
        Q5_1 => dequantize_blocks::<BlockQ5_1>(src, dst),
        Q8_0 => dequantize_blocks::<BlockQ8_0>(src, dst),
        Q8_1 => dequantize_blocks::<BlockQ8_1>(src, dst),
        Q2_K => dequantize_blocks::<BlockQ2_K>(src, dst),
        Q3_K => dequantize_blocks::<BlockQ3_K>(src, dst),
        Q4_K => dequantize_blocks::<BlockQ4_K>(src, dst),
        Q5_K => dequantize_blocks::<BlockQ5_K>(src, dst),
        Q6_K => dequantize_blocks::<BlockQ6_K>(src, dst),
        Q8_K => dequantize_blocks::<BlockQ8_K>(src, dst),
    }
}

/// Converts `src` to type `ty` in `dst`, bit-exact with ggml's reference quantizer
/// (`from_float_ref` of `ggml_get_type_traits`, `quantize_row_q8_K_ref` for Q8_K).
///
/// Only the activation types are supported: F32, F16, BF16, Q8_0, Q8_1 and Q8_K.
///
/// Preconditions (checked only in debug builds): `src.len()` is a whole number of blocks of
/// `ty`, and `dst.len()` is exactly `ty.bytes_for(src.len())`.
///
/// # Panics
///
/// If `ty` is a weight-only type (Q4_0 … Q6_K): ggml's quantizers for those search for good
/// scales and are not part of this reference. Asking for one is a caller's bug.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(
        ty.bytes_for(src.len() as u64),
        Some(dst.len() as u64),
        "quantize {ty}: {} values into {} bytes",
        src.len(),
        dst.len()
    );
    use GgmlType::*;
    match ty {
        F32 => float::quantize_f32(src, dst),
        F16 => float::quantize_f16(src, dst),
        BF16 => float::quantize_bf16(src, dst),
        Q8_0 => quantize_blocks::<BlockQ8_0>(src, dst),
        Q8_1 => quantize_blocks::<BlockQ8_1>(src, dst),
        Q8_K => quantize_blocks::<BlockQ8_K>(src, dst),
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => {
            panic!("quantize: {ty} is a weight type; only activation types can be quantized")
        }
    }
}

/// The dot product of `n` values of type `ty` (`w`) with `n` values of its activation type
/// `ty.vec_dot_type()` (`act`), like ggml's CPU `vec_dot` for that type.
///
/// Preconditions (checked only in debug builds): `n` is a whole number of blocks of `ty`,
/// `w.len()` is `ty.bytes_for(n)` and `act.len()` is `ty.vec_dot_type().bytes_for(n)`.
///
/// Q8_1 and Q8_K pair with themselves here; ggml has no `vec_dot` for them.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    debug_assert_eq!(
        ty.bytes_for(n as u64),
        Some(w.len() as u64),
        "vec_dot {ty}: weights"
    );
    debug_assert_eq!(
        ty.vec_dot_type().bytes_for(n as u64),
        Some(act.len() as u64),
        "vec_dot {ty}: activations"
    );
    use GgmlType::*;
    match ty {
        F32 => float::vec_dot_f32(n, w, act),
        F16 => float::vec_dot_f16(n, w, act),
        BF16 => float::vec_dot_bf16(n, w, act),
        Q4_0 => vec_dot_blocks::<BlockQ4_0>(w, act),
        Q4_1 => vec_dot_blocks::<BlockQ4_1>(w, act),
        Q5_0 => vec_dot_blocks::<BlockQ5_0>(w, act),
        Q5_1 => vec_dot_blocks::<BlockQ5_1>(w, act),
        Q8_0 => vec_dot_blocks::<BlockQ8_0>(w, act),
        Q8_1 => vec_dot_blocks::<BlockQ8_1>(w, act),
        Q2_K => vec_dot_blocks::<BlockQ2_K>(w, act),
        Q3_K => vec_dot_blocks::<BlockQ3_K>(w, act),
        Q4_K => vec_dot_blocks::<BlockQ4_K>(w, act),
        Q5_K => vec_dot_blocks::<BlockQ5_K>(w, act),
        Q6_K => vec_dot_blocks::<BlockQ6_K>(w, act),
        Q8_K => vec_dot_blocks::<BlockQ8_K>(w, act),
    }
}

/// The blocks stored in `bytes`, read one by one without alignment requirements.
pub fn blocks<B: Block>(bytes: &[u8]) -> impl Iterator<Item = B> + '_ {
    bytes
        .chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned::<B>)
}

fn dequantize_blocks<B: Block>(src: &[u8], dst: &mut [f32]) {
    for (block, out) in blocks::<B>(src).zip(dst.chunks_exact_mut(B::LEN)) {
        block.dequantize(out);
    }
}

fn quantize_blocks<B: QuantizeBlock>(src: &[f32], dst: &mut [u8]) {
    for (values, out) in src
        .chunks_exact(B::LEN)
        .zip(dst.chunks_exact_mut(size_of::<B>()))
    {
        out.copy_from_slice(bytemuck::bytes_of(&B::quantize(values)));
    }
}

/// Sums the per-block dot products in `f32`, block after block, as ggml's generic code does.
fn vec_dot_blocks<W: DotBlock>(w: &[u8], act: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in blocks::<W>(w).zip(blocks::<W::Act>(act)) {
        sum += x.dot(&y);
    }
    sum
}

/// `f16` to `f32`, exactly (every `f16` is an `f32`); NaNs stay NaN with their payload and
/// the quiet bit set, as ggml's conversion leaves them.
#[inline]
pub fn f16_to_f32(h: f16) -> f32 {
    h.to_f32()
}

/// `f32` to `f16` as ggml's `GGML_FP32_TO_FP16` rounds: to nearest, ties to even, overflow to
/// infinity, subnormals kept. Every NaN becomes ggml's quiet NaN `0x7E00` (sign kept), where
/// `half` would keep part of the payload.
#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        f16::from_bits(sign | 0x7E00)
    } else {
        f16::from_f32(x)
    }
}

/// `bf16` to `f32`: the 16 bits become the high half of the `f32`, as in ggml. (`half` would
/// also set the quiet bit of a signalling NaN; ggml does not.)
#[inline]
pub fn bf16_to_f32(h: bf16) -> f32 {
    f32::from_bits((h.to_bits() as u32) << 16)
}

/// `f32` to `bf16` as ggml's `GGML_FP32_TO_BF16` rounds: to nearest, ties to even; NaNs keep
/// their high bits and become quiet.
#[inline]
pub fn f32_to_bf16(x: f32) -> bf16 {
    bf16::from_f32(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_block(ty: GgmlType) -> usize {
        use GgmlType::*;
        match ty {
            F32 => size_of::<f32>(),
            F16 => size_of::<f16>(),
            BF16 => size_of::<bf16>(),
            Q4_0 => size_of::<BlockQ4_0>(),
            Q4_1 => size_of::<BlockQ4_1>(),
            Q5_0 => size_of::<BlockQ5_0>(),
            Q5_1 => size_of::<BlockQ5_1>(),
            Q8_0 => size_of::<BlockQ8_0>(),
            Q8_1 => size_of::<BlockQ8_1>(),
            Q2_K => size_of::<BlockQ2_K>(),
            Q3_K => size_of::<BlockQ3_K>(),
            Q4_K => size_of::<BlockQ4_K>(),
            Q5_K => size_of::<BlockQ5_K>(),
            Q6_K => size_of::<BlockQ6_K>(),
            Q8_K => size_of::<BlockQ8_K>(),
        }
    }

    #[test]
    fn block_structs_match_type_table() {
        for ty in GgmlType::ALL {
            assert_eq!(size_of_block(ty), ty.block_bytes(), "{ty}");
        }
    }

    #[test]
    fn f16_conversion_rounds_to_nearest_even() {
        // 1 + 2^-11 is exactly halfway between 1 and the next f16 (1 + 2^-10): ties to even.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)).to_bits(), 0x3C00);
        // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)).to_bits(), 0x3C02);
        assert_eq!(f32_to_f16(65520.0).to_bits(), 0x7C00); // rounds up to infinity
        assert_eq!(f32_to_f16(65519.0).to_bits(), 0x7BFF);
        assert_eq!(f32_to_f16(2f32.powi(-24)).to_bits(), 0x0001); // smallest subnormal
        assert_eq!(f32_to_f16(f32::NAN).to_bits(), 0x7E00);
        assert_eq!(f32_to_f16(-f32::from_bits(0x7F80_0001)).to_bits(), 0xFE00);
        assert_eq!(f16_to_f32(f16::from_bits(0xC000)), -2.0);
    }

    #[test]
    fn bf16_conversion_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)).to_bits(), 0x3F80); // tie, even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)).to_bits(), 0x3F82); // tie, up
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8001)).to_bits(), 0x3F81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)).to_bits(), 0x7FC0); // quieted
                                                                                // A signalling bf16 NaN widens without being quieted.
        assert_eq!(bf16_to_f32(bf16::from_bits(0x7F81)).to_bits(), 0x7F81_0000);
    }

    #[test]
    fn blocks_read_from_unaligned_bytes() {
        let block = BlockQ8_K {
            d: 0.5,
            qs: [3; 256],
            bsums: [48; 16],
        };
        let mut bytes = vec![0u8; 1 + size_of::<BlockQ8_K>()];
        bytes[1..].copy_from_slice(bytemuck::bytes_of(&block));
        let mut out = [0.0f32; 256];
        dequantize(GgmlType::Q8_K, &bytes[1..], &mut out);
        assert!(out.iter().all(|&v| v == 1.5));
    }

    #[test]
    #[should_panic(expected = "weight type")]
    fn quantize_refuses_weight_types() {
        let mut dst = [0u8; 18];
        quantize(GgmlType::Q4_0, &[0.0; 32], &mut dst);
    }
}
