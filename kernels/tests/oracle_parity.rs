//! Tern's scalar reference against ggml itself (through `tern-oracle`), type by type:
//! dequantization and activation quantization bit for bit, dot products to float rounding.
//!
//! Run with `cargo test --release -p tern-kernels --test oracle_parity -- --nocapture` to see
//! one summary line per type and check.
#![cfg(target_arch = "x86_64")]

use tern_kernels::quant::{dequantize, quantize, vec_dot};
use tern_kernels::GgmlType::{self, *};
use tern_oracle::ggml;

/// The weight types, which ggml quantizes with `from_float_ref` and multiplies with `vec_dot`.
const WEIGHT_TYPES: [GgmlType; 10] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K];

/// splitmix64: a small seeded generator, so every run tests the same blocks.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// `n` floats, block by block (`block_len` values each) of varied character so that scales
/// are exercised at their edges: normal, small, all zero, one large outlier, all negative,
/// wide uniform, constant, and tiny.
fn test_values(rng: &mut Rng, n: usize, block_len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    for b in 0..n.div_ceil(block_len) {
        let len = block_len.min(n - b * block_len);
        let start = v.len();
        for _ in 0..len {
            let x = rng.normal();
            v.push(match b % 8 {
                0 => x,
                1 => 1e-3 * x,
                2 => 0.0,
                3 => x,
                4 => -x.abs(),
                5 => (rng.unit() as f32 - 0.5) * 200.0,
                6 => 0.7,
                _ => 1e-30 * x,
            });
        }
        if b % 8 == 3 {
            let sign = if rng.below(2) == 0 { 1.0 } else { -1.0 };
            v[start + rng.below(len)] = sign * 1.0e3;
        }
    }
    v
}

/// The factor by which a Q8 quantizer multiplies a block's values, given the block's
/// largest-magnitude value `max` (ggml's `1 / (amax / 127)` for Q8_0/Q8_1, `-127 / max` for
/// Q8_K).
fn q8_multiplier(ty: GgmlType, max: f32) -> f32 {
    if ty == Q8_K {
        -127.0 / max
    } else {
        let d = max.abs() / 127.0;
        1.0 / d
    }
}

/// `nb` blocks whose values, times the quantizer's multiplier, land within two ulps of a
/// half-integer. There, rounding the `f32` product and rounding the exact product (what a
/// fused multiply-add does) can give different quants, so these blocks tell a quantizer that
/// multiplies and then rounds from one that fuses. Returns the values and how many of them
/// the two ways would round differently.
fn near_ties(rng: &mut Rng, ty: GgmlType, nb: usize) -> (Vec<f32>, usize) {
    let mut values = Vec::with_capacity(nb * ty.block_len());
    let mut telling = 0;
    for _ in 0..nb {
        let max = -(0.5 + rng.unit() as f32); // the largest magnitude comes first
        let s = q8_multiplier(ty, max);
        values.push(max);
        for _ in 1..ty.block_len() {
            let k = rng.below(252) as f32 - 125.5;
            let ulps = rng.below(5) as i32 - 2;
            let x = f32::from_bits(((k / s).to_bits() as i32 + ulps) as u32);
            let (rounded, exact) = (s * x, s as f64 * x as f64);
            let differ = if ty == Q8_K {
                rounded.round_ties_even() as f64 != exact.round_ties_even()
            } else {
                rounded.round() as f64 != exact.round()
            };
            telling += differ as usize;
            values.push(x);
        }
    }
    (values, telling)
}

/// A random finite `f16` (any sign, any exponent but the all-ones one).
fn finite_f16_bits(rng: &mut Rng) -> u16 {
    let bits = rng.next_u64() as u16;
    if bits & 0x7C00 == 0x7C00 {
        bits & !0x4000
    } else {
        bits
    }
}

/// Byte offsets of the `f16` fields of one block, from ggml-common.h's structs (written out
/// here rather than taken from Tern's structs, so that a wrong field order shows up).
fn f16_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// `nb` blocks of random bytes, with finite `f16` scales (and a finite `f32` scale for Q8_K).
fn raw_blocks(rng: &mut Rng, ty: GgmlType, nb: usize) -> Vec<u8> {
    let mut bytes = rng.bytes(nb * ty.block_bytes());
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &o in f16_offsets(ty) {
            block[o..o + 2].copy_from_slice(&finite_f16_bits(rng).to_le_bytes());
        }
        if ty == Q8_K {
            let d = rng.normal() * 1e-2;
            block[..4].copy_from_slice(&d.to_le_bytes());
        }
    }
    bytes
}

/// ggml's reference quantization of `values` to `ty`.
fn ggml_quantize(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.bytes_for(values.len() as u64).unwrap() as usize];
    match ty {
        F32 => quantize(F32, values, &mut out), // ggml has no converter for F32 to F32
        Q8_K => ggml::quantize_row_q8_k_ref(values, &mut out).unwrap(),
        _ => ggml::from_float_ref(ty as u32, values, &mut out).unwrap(),
    }
    out
}

/// ggml's dequantization of `bytes` of `ty` into `n` values.
fn ggml_dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    match ty {
        Q8_K => ggml::dequantize_row_q8_k(bytes, &mut out).unwrap(),
        Q8_1 => {
            // ggml has no to_float for Q8_1; its d and qs mean what Q8_0's do, so ask ggml to
            // dequantize the same d and qs as Q8_0 (dropping the 2-byte `s`).
            let q8_0: Vec<u8> = bytes
                .chunks_exact(36)
                .flat_map(|b| b[..2].iter().chain(&b[4..]).copied())
                .collect();
            ggml::to_float(Q8_0 as u32, &q8_0, &mut out).unwrap()
        }
        _ => ggml::to_float(ty as u32, bytes, &mut out).unwrap(),
    }
    out
}

/// Asserts that ours and ggml's values are the same bits; returns how many were compared.
fn assert_same_bits(what: &str, ty: GgmlType, bytes: &[u8], ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if a.to_bits() != b.to_bits() {
            let bl = i / ty.block_len() * ty.block_bytes();
            panic!(
                "{ty} {what}: value {i}: ours {a:e} ({:#010x}) vs ggml {b:e} ({:#010x}); block bytes {:02x?}",
                a.to_bits(),
                b.to_bits(),
                &bytes[bl..bl + ty.block_bytes()]
            );
        }
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ours_dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    dequantize(ty, bytes, &mut out);
    out
}

#[test]
fn dequantize_matches_ggml_bit_for_bit() {
    let mut rng = Rng(1);
    let nb = 64;
    for ty in WEIGHT_TYPES.into_iter().chain([Q8_1, Q8_K]) {
        let n = nb * ty.block_len();
        // Blocks as ggml's reference quantizer makes them: realistic scales.
        let made = ggml_quantize(ty, &test_values(&mut rng, n, ty.block_len()));
        // Blocks of random bytes: every bit pattern of the quants, any finite scale and sign.
        let raw = raw_blocks(&mut rng, ty, nb);
        let mut worst = 0.0f32;
        for (what, bytes) in [("ggml-made blocks", &made), ("random blocks", &raw)] {
            let ours = ours_dequantize(ty, bytes, n);
            let theirs = ggml_dequantize(ty, bytes, n);
            worst = worst.max(max_abs_diff(&ours, &theirs));
            assert_same_bits(what, ty, bytes, &ours, &theirs);
        }
        println!(
            "dequantize {ty:5}: {nb} ggml-made + {nb} random blocks, max |ours - ggml| = {worst:e} (bit-exact)"
        );
    }
}

#[test]
fn f16_and_bf16_dequantize_every_bit_pattern() {
    // All 65536 patterns, NaNs and infinities included.
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    for ty in [F16, BF16] {
        let n = 1 << 16;
        let ours = ours_dequantize(ty, &bytes, n);
        let theirs = ggml_dequantize(ty, &bytes, n);
        assert_same_bits("every pattern", ty, &bytes, &ours, &theirs);
        println!("dequantize {ty:5}: all 65536 bit patterns bit-exact");
    }
    // F32 has no ggml to_float: the values are the bytes.
    let values = test_values(&mut Rng(2), 64, 8);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(ours_dequantize(F32, &bytes, 64), values);
}

#[test]
fn activation_quantizers_match_ggml_ref_byte_for_byte() {
    let mut rng = Rng(3);
    for ty in [Q8_0, Q8_1, Q8_K, F16, BF16] {
        let block_len = if ty.block_len() == 1 {
            32
        } else {
            ty.block_len()
        };
        let n = 64 * block_len;
        let mut values = test_values(&mut rng, n, block_len);
        let mut note = String::new();
        if matches!(ty, Q8_0 | Q8_1 | Q8_K) {
            let (ties, telling) = near_ties(&mut rng, ty, 64);
            assert!(
                telling > 0,
                "{ty}: no near-tie value tells fused from unfused rounding"
            );
            values.extend(ties);
            note = format!(" ({telling} of them round differently with and without an FMA)");
        }
        if ty.block_len() == 1 {
            // Conversions see every kind of f32: random bit patterns (NaNs, infinities,
            // subnormals, values that overflow F16) after the ordinary values.
            values.extend((0..1 << 16).map(|_| f32::from_bits(rng.next_u64() as u32)));
            // And exact ties between two F16 / BF16 values.
            values.extend((0..1024).map(|i| f32::from_bits(0x3F80_0000 | (i << 13) | 0x1000)));
            values.extend((0..1024).map(|i| f32::from_bits(0x3F80_0000 | (i << 16) | 0x8000)));
        }
        let theirs = ggml_quantize(ty, &values);
        let mut ours = vec![0xAAu8; theirs.len()];
        quantize(ty, &values, &mut ours);
        if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            let b = i / ty.block_bytes();
            panic!(
                "{ty}: quantized byte {i} (block {b}) differs: ours {:02x?} vs ggml {:02x?}",
                &ours[b * ty.block_bytes()..(b + 1) * ty.block_bytes()],
                &theirs[b * ty.block_bytes()..(b + 1) * ty.block_bytes()]
            );
        }

        // For the record: how far ggml's CPU quantizer (what llama.cpp applies to
        // activations, SIMD here) is from its reference.
        let mut cpu = vec![0u8; theirs.len()];
        ggml::from_float(ty as u32, &values, &mut cpu).unwrap();
        let differ = cpu
            .chunks_exact(ty.block_bytes())
            .zip(theirs.chunks_exact(ty.block_bytes()))
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "quantize   {ty:5}: {} values{note} byte-exact with ggml's reference; ggml's CPU from_float differs from it in {differ} of {} blocks",
            values.len(),
            theirs.len() / ty.block_bytes()
        );
    }
}

/// Compares our `vec_dot` with ggml's on the same bytes; returns the largest
/// `|ours - ggml| / sum|w_i a_i|` seen and the largest absolute difference.
///
/// Both sides compute the integer parts exactly and differ only in the order and fusing of
/// their f32 operations: a few roundings per block plus one per block in the running sum,
/// i.e. at most about `(n_blocks + 8) * 2^-24` of the sum of the magnitudes involved
/// (< 1e-5 for the 4096-value rows here). A tolerance of 1e-4 of `sum|w_i a_i|` leaves ten
/// times that, for the cancellation between a block's `d * q` and `m` terms.
fn compare_vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> (f64, f32) {
    let ours = vec_dot(ty, n, w, act);
    let theirs = ggml::vec_dot(ty as u32, n, w, act).unwrap();
    let wv = ours_dequantize(ty, w, n);
    let av = ours_dequantize(ty.vec_dot_type(), act, n);
    let scale: f64 = wv
        .iter()
        .zip(&av)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum();
    let diff = (ours - theirs).abs();
    assert!(
        ours.is_finite() && theirs.is_finite(),
        "{ty} n={n}: ours {ours}, ggml {theirs}"
    );
    assert!(
        diff as f64 <= 1e-4 * scale + 1e-30,
        "{ty} n={n}: ours {ours:e} vs ggml {theirs:e} (|diff| {diff:e}, sum|w a| {scale:e})"
    );
    let rel = if scale > 0.0 {
        diff as f64 / scale
    } else {
        0.0
    };
    (rel, diff)
}

#[test]
fn vec_dot_matches_ggml_cpu() {
    let mut rng = Rng(4);
    let float_types = [F32, F16, BF16];
    for ty in float_types.into_iter().chain(WEIGHT_TYPES) {
        let bl = ty.block_len();
        let sizes: Vec<usize> = if bl == 1 {
            vec![1, 37, 4096]
        } else {
            vec![bl, 8 * bl, 4096]
        };
        let act_ty = ty.vec_dot_type();
        // Worst (relative, absolute) difference for ggml-made weights and for random blocks.
        let mut made = (0.0f64, 0.0f32);
        let mut raw = (0.0f64, 0.0f32);
        let mut rows = 0;
        for &n in &sizes {
            for trial in 0..16 {
                // Weights as ggml's reference quantizer makes them and, for quantized types,
                // blocks of random bytes (any finite scales); activations quantized by our
                // reference, which the test above shows to be byte-exact with ggml's.
                let random = trial % 2 == 1 && bl > 1;
                let w = if random {
                    raw_blocks(&mut rng, ty, n / bl)
                } else {
                    ggml_quantize(ty, &test_values(&mut rng, n, bl.max(32)))
                };
                let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                let mut act = vec![0u8; act_ty.bytes_for(n as u64).unwrap() as usize];
                quantize(act_ty, &x, &mut act);
                let (rel, abs) = compare_vec_dot(ty, n, &w, &act);
                let worst = if random { &mut raw } else { &mut made };
                *worst = (worst.0.max(rel), worst.1.max(abs));
                rows += 1;
            }
        }
        let random_note = if bl > 1 {
            format!(
                "; random blocks: {:.1e} of sum|w a| (max |diff| {:e})",
                raw.0, raw.1
            )
        } else {
            String::new()
        };
        println!(
            "vec_dot    {ty:5} x {act_ty:5}: n in {sizes:?}, {rows} rows; ggml-made weights: max |ours - ggml| = {:e}, {:.1e} of sum|w a|{random_note}",
            made.1, made.0
        );
    }
}
