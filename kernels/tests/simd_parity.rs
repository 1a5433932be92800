//! Every kernel set this CPU runs against the scalar reference of `tern_kernels::quant`:
//! activation quantizers byte for byte, dot products and the whole matrix product to float
//! rounding, on random data at sizes that hit every tail (one block, odd block counts, rows
//! that are not a multiple of the tile, 1..=9 tokens, more panels than one tile call takes).
//!
//! Floats are compared within 1e-5 of `Σ |w_i · a_i|`, the size of the terms summed: any
//! wrong integer part (one quant, one block, one scale) moves the result far more than that.
//!
//! `cargo test --release -p tern-kernels --test simd_parity -- --nocapture` prints which
//! kernel sets were tested.

use tern_kernels::matmul::{matmul_with, QMatrix};
use tern_kernels::quant::{dequantize, quantize, vec_dot};
use tern_kernels::GgmlType::{self, *};
use tern_kernels::KernelSet;

/// The weight types with SIMD kernels, and two without (which must fall back cleanly).
const TYPES: [GgmlType; 10] = [Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K, F16, F32, Q5_1, Q3_K];

/// splitmix64: a small seeded generator, so every run tests the same data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal values, with the odd exact zero and exact half-integers that test the
    /// quantizers' rounding.
    fn act(&mut self, n: usize) -> Vec<f32> {
        let mut x: Vec<f32> = (0..n)
            .map(|_| (0..4).map(|_| self.unit()).sum::<f32>() - 2.0)
            .collect();
        if n >= 64 {
            // One block of zeros, one of values whose quants land exactly on .5.
            x[..32].fill(0.0);
            for (i, v) in x[32..64].iter_mut().enumerate() {
                *v = if i == 0 {
                    127.0
                } else {
                    (i as f32 - 16.0) + 0.5
                };
            }
        }
        x
    }

    fn f16(&mut self) -> [u8; 2] {
        half::f16::from_f32((self.unit() - 0.3) * 0.05).to_le_bytes()
    }
}

/// Random weights of type `ty`: random quants, small finite scales.
fn weights(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let bytes = ty.bytes_for(n as u64).unwrap() as usize;
    let mut w: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
    let bb = ty.block_bytes();
    for blk in w.chunks_exact_mut(bb) {
        let scales: &[usize] = match ty {
            Q4_0 | Q5_0 | Q8_0 => &[0],
            Q4_1 | Q5_1 | Q4_K => &[0, 2],
            Q6_K => &[208],
            Q3_K => &[108],
            F16 => &[0],
            F32 => {
                blk.copy_from_slice(&(rng.unit() * 2.0 - 1.0).to_le_bytes());
                &[]
            }
            _ => unreachable!(),
        };
        for &o in scales {
            blk[o..o + 2].copy_from_slice(&rng.f16());
        }
    }
    w
}

/// `Σ |w_i · a_i|` over dequantized values: the scale of the rounding allowed.
fn magnitude(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f64 {
    let (mut x, mut y) = (vec![0.0f32; n], vec![0.0f32; n]);
    dequantize(ty, w, &mut x);
    dequantize(ty.vec_dot_type(), a, &mut y);
    x.iter()
        .zip(&y)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum()
}

fn check_close(what: &str, got: f32, want: f32, mag: f64) {
    let tol = 1e-5 * mag + 1e-30;
    assert!(
        ((got - want) as f64).abs() <= tol,
        "{what}: got {got}, want {want} (tolerance {tol:e})"
    );
}

/// Column counts for a type: one block, odd block counts, the model's widths.
fn col_sizes(ty: GgmlType) -> Vec<usize> {
    match ty.block_len() {
        1 => vec![1, 7, 8, 33, 576],
        32 => vec![32, 96, 224, 576, 1536],
        _ => vec![256, 768, 1536],
    }
}

fn sets() -> Vec<KernelSet> {
    let sets = KernelSet::available();
    let names: Vec<&str> = sets.iter().map(|s| s.name()).collect();
    println!(
        "kernel sets on this CPU: {names:?}; detected: {}",
        tern_kernels::kernels().name()
    );
    sets
}

#[test]
fn quantizers_match_reference_bytes() {
    let mut rng = Rng(1);
    for ks in sets() {
        for ty in TYPES {
            let k = ks.get(ty);
            assert_eq!(k.act, ty.vec_dot_type());
            for n in col_sizes(ty) {
                let x = rng.act(n);
                let bytes = k.act.bytes_for(n as u64).unwrap() as usize;
                let (mut got, mut want) = (vec![0xAA; bytes], vec![0x55; bytes]);
                (k.quantize)(&x, &mut got);
                quantize(k.act, &x, &mut want);
                assert!(
                    got == want,
                    "{} {ty}: {} quantizer, n = {n}",
                    ks.name(),
                    k.act
                );
            }
        }
    }
}

#[test]
fn dots_match_reference() {
    let mut rng = Rng(2);
    for ks in sets() {
        for ty in TYPES {
            let k = ks.get(ty);
            for n in col_sizes(ty) {
                for _ in 0..4 {
                    let w = weights(ty, n, &mut rng);
                    let x = rng.act(n);
                    let mut a = vec![0; k.act.bytes_for(n as u64).unwrap() as usize];
                    quantize(k.act, &x, &mut a);
                    let want = vec_dot(ty, n, &w, &a);
                    let got = (k.dot)(n, &w, &a);
                    let what = format!("{} {ty} dot, n = {n}", ks.name());
                    check_close(&what, got, want, magnitude(ty, n, &w, &a));
                }
            }
        }
    }
}

/// The reference product: activations quantized by the reference, one `vec_dot` per entry.
fn reference_matmul(w: &QMatrix<'_>, x: &[f32]) -> (Vec<f32>, Vec<f64>) {
    let act = w.ty.vec_dot_type();
    let ab = act.bytes_for(w.cols as u64).unwrap() as usize;
    let n = x.len() / w.cols;
    let (mut y, mut mag) = (vec![0.0; n * w.rows], vec![0.0; n * w.rows]);
    for t in 0..n {
        let mut a = vec![0; ab];
        quantize(act, &x[t * w.cols..(t + 1) * w.cols], &mut a);
        for r in 0..w.rows {
            y[t * w.rows + r] = vec_dot(w.ty, w.cols, w.row(r), &a);
            mag[t * w.rows + r] = magnitude(w.ty, w.cols, w.row(r), &a);
        }
    }
    (y, mag)
}

fn check_matmul(ks: &KernelSet, ty: GgmlType, rows: usize, cols: usize, n: usize, rng: &mut Rng) {
    let data = weights(ty, rows * cols, rng);
    let w = QMatrix::new(ty, rows, cols, &data).unwrap();
    let x = rng.act(n * cols);
    let (want, mag) = reference_matmul(&w, &x);
    let mut got = vec![f32::NAN; n * rows];
    let mut scratch = Vec::new();
    matmul_with(ks, &w, &x, &mut got, &mut scratch);
    for i in 0..n * rows {
        let what = format!(
            "{} {ty} matmul {rows}x{cols}, {n} tokens, token {} row {}",
            ks.name(),
            i / rows,
            i % rows
        );
        check_close(&what, got[i], want[i], mag[i]);
    }
}

#[test]
fn matmul_matches_reference() {
    let mut rng = Rng(3);
    for ks in sets() {
        for ty in TYPES {
            for cols in col_sizes(ty) {
                for rows in [1, 3, 4, 5, 9] {
                    for n in 1..=9 {
                        check_matmul(&ks, ty, rows, cols, n, &mut rng);
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_large_shapes_match_reference() {
    // Large enough to be split over threads; more panels than one tile call takes.
    let mut rng = Rng(4);
    for ks in sets() {
        for ty in TYPES {
            let cols = if ty.block_len() == QK_K_LEN { 512 } else { 576 };
            check_matmul(&ks, ty, 203, cols, 1, &mut rng);
            check_matmul(&ks, ty, 203, cols, 11, &mut rng);
            check_matmul(&ks, ty, 21, cols, 137, &mut rng);
        }
    }
}

const QK_K_LEN: usize = tern_kernels::QK_K;

#[test]
fn scalar_set_is_the_reference() {
    // The fallback path is the reference itself, bit for bit.
    let mut rng = Rng(5);
    let ks = KernelSet::scalar();
    for ty in TYPES {
        let cols = col_sizes(ty)[1];
        let data = weights(ty, 7 * cols, &mut rng);
        let w = QMatrix::new(ty, 7, cols, &data).unwrap();
        let x = rng.act(3 * cols);
        let (want, _) = reference_matmul(&w, &x);
        let mut got = vec![0.0; 3 * 7];
        matmul_with(&ks, &w, &x, &mut got, &mut Vec::new());
        assert_eq!(got, want, "{ty}");
    }
}
