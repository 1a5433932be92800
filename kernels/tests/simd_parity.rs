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

use tern_kernels::kernel::OpKernels;
use tern_kernels::matmul::{matmul_with, QMatrix};
use tern_kernels::quant::{dequantize, quantize, vec_dot};
use tern_kernels::GgmlType::{self, *};
use tern_kernels::KernelSet;

/// The weight types with SIMD kernels, and two without (which must fall back cleanly).
const TYPES: [GgmlType; 11] = [
    Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, F32, Q5_1, Q3_K,
];

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
            Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
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
fn quantizers_match_reference_on_edge_blocks() {
    // Blocks of one special value each among ordinary ones: non-finite values (the
    // reference's own bytes), values so small that `1 / d` overflows, exact ties of the
    // rounding, a largest magnitude that appears twice with both signs.
    let mut rng = Rng(8);
    let specials: [&dyn Fn(usize) -> f32; 7] = [
        &|_| f32::NAN,
        &|_| f32::INFINITY,
        &|_| f32::NEG_INFINITY,
        &|i| 1e-40 * (i as f32 - 3.0),
        &|i| i as f32 * 0.5 - 7.75,
        &|i| if i % 2 == 0 { 3.0 } else { -3.0 },
        &|i| (i as f32 - 128.0) / 127.0 * 2.5,
    ];
    for ks in sets() {
        for act in [Q4_0, Q4_1, Q4_K] {
            let k = ks.get(act);
            for (s, special) in specials.iter().enumerate() {
                let n = 512;
                let mut x = rng.act(n);
                for (i, v) in x[256..256 + 40].iter_mut().enumerate() {
                    *v = if s < 3 && i != 7 {
                        rng.unit()
                    } else {
                        special(i)
                    };
                }
                let bytes = k.act.bytes_for(n as u64).unwrap() as usize;
                let (mut got, mut want) = (vec![0xAA; bytes], vec![0x55; bytes]);
                (k.quantize)(&x, &mut got);
                quantize(k.act, &x, &mut want);
                assert!(
                    got == want,
                    "{} {} quantizer, special {s}",
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

#[test]
fn dot_rows_match_reference() {
    // Multi-row decode kernels, 1 to 9 rows: whole groups of rows and every remainder.
    let mut rng = Rng(10);
    for ks in sets() {
        for ty in TYPES {
            let k = ks.get(ty);
            let Some(dot_rows) = k.dot_rows else { continue };
            for n in col_sizes(ty) {
                let rb = ty.bytes_for(n as u64).unwrap() as usize;
                for rows in 1..=9 {
                    let w = weights(ty, rows * n, &mut rng);
                    let x = rng.act(n);
                    let mut a = vec![0; k.act.bytes_for(n as u64).unwrap() as usize];
                    quantize(k.act, &x, &mut a);
                    let mut got = vec![f32::NAN; rows];
                    dot_rows(n, &w, &a, &mut got);
                    for (r, &g) in got.iter().enumerate() {
                        let row = &w[r * rb..(r + 1) * rb];
                        let what =
                            format!("{} {ty} dot_rows, n = {n}, {rows} rows, row {r}", ks.name());
                        check_close(&what, g, vec_dot(ty, n, row, &a), magnitude(ty, n, row, &a));
                    }
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

/// Elementwise values within `rel` of the reference, or both not finite alike.
fn check_all_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= rel * w.abs() + 1e-37
        } else {
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan())
        };
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// The elementwise kernels of every set this CPU runs, and the `wide` ones (`ops::portable`)
/// on their own: aarch64 runs them, and on x86-64 the benchmarks set them against AVX2.
fn op_sets() -> Vec<(String, OpKernels)> {
    let mut all: Vec<(String, OpKernels)> = sets()
        .iter()
        .map(|ks| (ks.name().to_string(), *ks.ops()))
        .collect();
    all.push(("wide".to_string(), tern_kernels::ops::portable::OPS));
    all
}

#[test]
fn elementwise_ops_match_reference() {
    use tern_kernels::ops::scalar;
    let mut rng = Rng(6);
    for (name, ops) in op_sets() {
        for n in [1, 7, 8, 9, 64, 576, 1543] {
            // Wide range for the exponentials: e^±90 overflows and underflows.
            let mut x: Vec<f32> = rng.act(n).iter().map(|v| v * 12.0).collect();
            if n > 9 {
                x[3] = 95.0;
                x[4] = -95.0;
                x[5] = -110.0;
            }
            let up = rng.act(n);
            let w = rng.act(n);

            let (mut got, mut want) = (x.clone(), x.clone());
            (ops.swiglu)(&mut got, &up);
            scalar::swiglu(&mut want, &up);
            check_all_close(&format!("{name} swiglu n = {n}"), &got, &want, 4e-7);

            let (mut got, mut want) = (x.clone(), x.clone());
            if n > 9 {
                got[6] = f32::NEG_INFINITY; // a masked score
                want[6] = f32::NEG_INFINITY;
            }
            (ops.softmax)(&mut got);
            scalar::softmax(&mut want);
            check_all_close(&format!("{name} softmax n = {n}"), &got, &want, 4e-7);

            let (mut got, mut want) = (x.clone(), x.clone());
            if n > 9 {
                got[7] = f32::NEG_INFINITY; // masked: exactly 0
                want[7] = f32::NEG_INFINITY;
            }
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (sg, sw) = (
                (ops.exp_sum)(&mut got, max),
                scalar::exp_sum(&mut want, max),
            );
            check_all_close(&format!("{name} exp_sum n = {n}"), &got, &want, 4e-7);
            assert!(
                (sg - sw).abs() <= 1e-6 * sw.abs().max(1.0),
                "{name} exp_sum n = {n}: sum {sg} vs {sw}"
            );

            let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
            (ops.rms_norm)(&x, &w, 1e-5, &mut got);
            scalar::rms_norm(&x, &w, 1e-5, &mut want);
            check_all_close(&format!("{name} rms_norm n = {n}"), &got, &want, 1e-7);
        }
    }
}

/// GeGLU rounds its input and its result to f16, as ggml's table does. Where the f32 values
/// before the last rounding differ by an ulp or two (a vector `exp` against libm's `tanh`)
/// across a rounding boundary, the f16 result differs by one f16 step (2⁻¹⁰ relative; a
/// few 1e-7 absolute for results in f16's subnormals): 3 of the 68 248 values here on
/// x86-64 (2026-11-30), all others equal bit for bit.
#[test]
fn geglu_matches_reference() {
    use tern_kernels::ops::scalar;
    let mut rng = Rng(10);
    for (name, ops) in op_sets() {
        let (mut exact, mut total) = (0usize, 0usize);
        // Every finite f16 value (what the gate computes on), then random gates over GELU's
        // whole range, both cut-offs (±10) and f16's subnormals.
        let every_f16: Vec<f32> = (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .filter(|v| v.is_finite())
            .collect();
        for n in [1, 3, 4, 5, 8, 640, 2048, 2051, every_f16.len()] {
            let mut x: Vec<f32> = rng.act(n).iter().map(|v| v * 6.0).collect();
            let specials = [
                -12.0, -10.0, 10.0, 11.5, 0.0, -0.0, 3e-5, -2e-7, 1e-3, -9.99,
            ];
            for (v, &s) in x.iter_mut().zip(&specials) {
                *v = s;
            }
            if n == every_f16.len() {
                x = every_f16.clone();
            }
            let up: Vec<f32> = rng.act(n).iter().map(|v| v + 0.25).collect();
            let (mut got, mut want) = (x.clone(), x.clone());
            (ops.geglu)(&mut got, &up);
            scalar::geglu(&mut want, &up);
            for i in 0..n {
                let (g, w) = (got[i], want[i]);
                assert!(
                    (g - w).abs() <= 2f32.powi(-10) * w.abs() + 5e-7 * up[i].abs(),
                    "{name} geglu n = {n}, element {i} (x = {}): got {g}, want {w}",
                    x[i]
                );
                exact += (g.to_bits() == w.to_bits()) as usize;
            }
            total += n;
        }
        println!("{name} geglu: {exact} of {total} values equal the scalar ones bit for bit");
        assert!(
            exact * 1000 >= total * 999,
            "{name} geglu: {exact} of {total} exact"
        );
    }
}

/// RoPE kernels round as the scalar ones do: equal bit for bit, at full rotation (llama, Qwen)
/// and partial (a rotary dimension below the head size), every tail of four pairs.
#[test]
fn rope_matches_reference() {
    use tern_kernels::ops::scalar;
    let mut rng = Rng(11);
    for (name, ops) in op_sets() {
        for (head_dim, pairs) in [
            (64, 32usize),
            (128, 64),
            (256, 128),
            (64, 16),
            (12, 5),
            (6, 3),
        ] {
            let heads = 3;
            let cs: Vec<(f32, f32)> = (0..pairs)
                .map(|i| {
                    let t = 7.3 * 0.9f32.powi(i as i32);
                    (t.cos(), t.sin())
                })
                .collect();
            let x = rng.act(heads * head_dim);
            for neox in [false, true] {
                let (mut got, mut want) = (x.clone(), x.clone());
                if neox {
                    (ops.rope_neox)(&mut got, head_dim, &cs);
                    scalar::rope_neox(&mut want, head_dim, &cs);
                } else {
                    (ops.rope_norm)(&mut got, head_dim, &cs);
                    scalar::rope_norm(&mut want, head_dim, &cs);
                }
                assert_eq!(
                    got, want,
                    "{name} rope (neox {neox}) head {head_dim}, {pairs} pairs"
                );
                assert_ne!(got, x, "{name}: rope must rotate");
            }
        }
    }
}

/// The attention kernels: one query against a block of keys, probabilities times values.
#[test]
fn attention_rows_match_reference() {
    use tern_kernels::ops::scalar;
    let mut rng = Rng(9);
    for (name, ops) in op_sets() {
        for dim in [1, 7, 8, 32, 64, 72, 128, 200] {
            for rows in [0, 1, 7, 8, 9, 17, 32] {
                let stride = dim + 3;
                let keys = rng.act(rows * stride);
                let q = rng.act(dim);
                let (mut got, mut want) = (vec![0.0; rows], vec![0.0; rows]);
                (ops.dot_rows)(&q, &keys, stride, &mut got);
                scalar::dot_rows(&q, &keys, stride, &mut want);
                for j in 0..rows {
                    let r = &keys[j * stride..j * stride + dim];
                    let mag: f32 = q.iter().zip(r).map(|(a, b)| (a * b).abs()).sum();
                    let exact: f64 = q.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum();
                    for v in [got[j], want[j]] {
                        assert!(
                            (v as f64 - exact).abs() <= 1e-6 * mag as f64,
                            "{name} dot_rows dim {dim} rows {rows}, {j}: {v} vs {exact}"
                        );
                    }
                }

                let p: Vec<f32> = rng.act(rows).iter().map(|v| v.abs()).collect();
                let y0 = rng.act(dim);
                let (mut got, mut want) = (y0.clone(), y0.clone());
                (ops.axpy_rows)(&p, &keys, stride, &mut got);
                scalar::axpy_rows(&p, &keys, stride, &mut want);
                for d in 0..dim {
                    let terms = (0..rows).map(|j| (p[j] as f64, keys[j * stride + d] as f64));
                    let exact: f64 = y0[d] as f64 + terms.clone().map(|(a, b)| a * b).sum::<f64>();
                    let mag: f64 =
                        y0[d].abs() as f64 + terms.map(|(a, b)| (a * b).abs()).sum::<f64>();
                    for v in [got[d], want[d]] {
                        assert!(
                            (v as f64 - exact).abs() <= 1e-6 * mag,
                            "{name} axpy_rows dim {dim} rows {rows}, {d}: {v} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}

/// The AVX-VNNI panels sum the same integers as the AVX2 ones (in `i32` from the start rather
/// than through `i16` pair sums) and scale them with the same float operations in the same
/// order, so their products are bitwise AVX2's. Where the CPU lacks AVX-VNNI there is no
/// second set to compare, and the test says so.
#[test]
fn avxvnni_products_are_bitwise_avx2s() {
    let sets = KernelSet::available();
    let (Some(avx2), Some(vnni)) = (
        sets.iter().find(|s| s.name() == "avx2"),
        sets.iter().find(|s| s.name() == "avxvnni"),
    ) else {
        println!("this CPU has no AVX-VNNI: nothing to compare");
        return;
    };
    let mut rng = Rng(11);
    for ty in [Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K] {
        for cols in col_sizes(ty) {
            for (rows, n) in [(5, 2), (9, 8), (20, 9), (33, 40)] {
                let data = weights(ty, rows * cols, &mut rng);
                let w = QMatrix::new(ty, rows, cols, &data).unwrap();
                let x = rng.act(n * cols);
                let (mut a, mut b) = (vec![0.0f32; n * rows], vec![0.0f32; n * rows]);
                let mut scratch = Vec::new();
                matmul_with(avx2, &w, &x, &mut a, &mut scratch);
                matmul_with(vnni, &w, &x, &mut b, &mut scratch);
                for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{ty} {rows}x{cols}, {n} tokens, entry {i}: avx2 {a}, avxvnni {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_many_matches_separate_products() {
    use tern_kernels::matmul::matmul_many_with;
    let mut rng = Rng(7);
    for ks in sets() {
        for n in [1, 3, 9] {
            // q, k, v shapes (one dispatch), then a mixed-type pair (one after the other).
            for tys in [[Q4_1, Q4_1, Q4_1], [Q8_0, Q4_0, Q8_0]] {
                let cols = 576;
                let shapes = [(tys[0], 37), (tys[1], 12), (tys[2], 5)];
                let datas: Vec<Vec<u8>> = shapes
                    .iter()
                    .map(|&(ty, rows)| weights(ty, rows * cols, &mut rng))
                    .collect();
                let ws: Vec<QMatrix<'_>> = shapes
                    .iter()
                    .zip(&datas)
                    .map(|(&(ty, rows), d)| QMatrix::new(ty, rows, cols, d).unwrap())
                    .collect();
                let x = rng.act(n * cols);
                let mut outs: Vec<Vec<f32>> =
                    ws.iter().map(|w| vec![f32::NAN; n * w.rows]).collect();
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
                matmul_many_with(&ks, &ws, &x, &mut ys, &mut Vec::new());
                for (w, got) in ws.iter().zip(&outs) {
                    let (want, mag) = reference_matmul(w, &x);
                    for i in 0..got.len() {
                        let what = format!("{} many {} {n} tokens, entry {i}", ks.name(), w.ty);
                        check_close(&what, got[i], want[i], mag[i]);
                    }
                }
            }
        }
    }
}

#[test]
fn repacked_matmul_equals_file_layout_bit_for_bit() {
    // The interleaved kernels add the same exact integer block sums as the same set's
    // file-layout kernels, in the same float order, so a repacked model's logits are those of
    // the map (runtime/tests/repack.rs). Q6_K's file-layout decode adds its floats in four
    // lanes, so there only the panels (prefill) are compared.
    let mut rng = Rng(18);
    let mut compared: Vec<&'static str> = Vec::new();
    for ks in sets() {
        for ty in [Q4_0, Q8_0, Q4_K, Q6_K] {
            let Some(r) = ks.get(ty).repack else { continue };
            let cols = col_sizes(ty)[1];
            let rows = 5 * r.rows;
            let data = weights(ty, rows * cols, &mut rng);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let packed = w.repack_with(&ks).unwrap();
            let tokens: &[usize] = if ty == Q6_K { &[4, 9] } else { &[1, 4, 9] };
            for &n in tokens {
                let x = rng.act(n * cols);
                let mut file = vec![f32::NAN; n * rows];
                let mut got = vec![f32::NAN; n * rows];
                matmul_with(&ks, &w, &x, &mut file, &mut Vec::new());
                matmul_with(&ks, &packed.view(), &x, &mut got, &mut Vec::new());
                for i in 0..n * rows {
                    assert_eq!(
                        got[i].to_bits(),
                        file[i].to_bits(),
                        "{} {ty} repacked {rows}x{cols}, {n} tokens, entry {i}: {} against {}",
                        ks.name(),
                        got[i],
                        file[i]
                    );
                }
                compared.push(ks.name());
            }
        }
    }
    // Three token counts for each of the four types, two for Q6_K: 11 products a set.
    for set in KernelSet::available() {
        if matches!(set.name(), "dotprod" | "i8mm") {
            let n = compared.iter().filter(|&&c| c == set.name()).count();
            assert_eq!(n, 11, "{} repacked products compared", set.name());
        }
    }
    println!("repacked products compared bit for bit: {compared:?}");
}

#[test]
fn repacked_matmul_matches_reference() {
    // Rows repacked into a set's interleaved layout (dotprod and i8mm on aarch64): decode and
    // panels, row counts of one group to many (split over threads), and q/k/v-like matrices
    // in one dispatch. A row count that is not a whole number of groups is not repacked.
    use tern_kernels::matmul::{matmul_many_with, Layout};
    let mut rng = Rng(8);
    let mut repacked = 0;
    let mut checked: Vec<(&'static str, GgmlType)> = Vec::new();
    for ks in sets() {
        for ty in TYPES {
            let Some(r) = ks.get(ty).repack else { continue };
            checked.push((ks.name(), ty));
            for cols in col_sizes(ty) {
                for rows in [r.rows, 2 * r.rows, 3 * r.rows, 52 * r.rows] {
                    let data = weights(ty, rows * cols, &mut rng);
                    let w = QMatrix::new(ty, rows, cols, &data).unwrap();
                    let packed = w.repack_with(&ks).expect("whole groups are repacked");
                    let pw = packed.view();
                    assert!(matches!(pw.layout(), Layout::Interleaved { .. }));
                    assert!(pw.repack_with(&ks).is_none(), "repacked twice");
                    for n in [1, 2, 4, 5, 9, 11] {
                        let x = rng.act(n * cols);
                        let (want, mag) = reference_matmul(&w, &x);
                        let mut got = vec![f32::NAN; n * rows];
                        matmul_with(&ks, &pw, &x, &mut got, &mut Vec::new());
                        for i in 0..n * rows {
                            let what = format!(
                                "{} {ty} repacked {rows}x{cols}, {n} tokens, token {} row {}",
                                ks.name(),
                                i / rows,
                                i % rows
                            );
                            check_close(&what, got[i], want[i], mag[i]);
                        }
                    }
                    repacked += 1;
                }
                let odd = weights(ty, (r.rows + 1) * cols, &mut rng);
                let odd = QMatrix::new(ty, r.rows + 1, cols, &odd).unwrap();
                assert!(odd.repack_with(&ks).is_none(), "a partial group");
            }
            // Three repacked matrices sharing one dispatch (split over threads).
            let cols = col_sizes(ty)[col_sizes(ty).len() - 1];
            let shapes = [9 * r.rows, 3 * r.rows, r.rows];
            let datas: Vec<Vec<u8>> = shapes
                .iter()
                .map(|&rows| weights(ty, rows * cols, &mut rng))
                .collect();
            let ws: Vec<QMatrix<'_>> = shapes
                .iter()
                .zip(&datas)
                .map(|(&rows, d)| QMatrix::new(ty, rows, cols, d).unwrap())
                .collect();
            let packed: Vec<_> = ws.iter().map(|w| w.repack_with(&ks).unwrap()).collect();
            let views: Vec<QMatrix<'_>> = packed.iter().map(|p| p.view()).collect();
            for n in [1, 9] {
                let x = rng.act(n * cols);
                let mut outs: Vec<Vec<f32>> =
                    ws.iter().map(|w| vec![f32::NAN; n * w.rows]).collect();
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
                matmul_many_with(&ks, &views, &x, &mut ys, &mut Vec::new());
                for (w, got) in ws.iter().zip(&outs) {
                    let (want, mag) = reference_matmul(w, &x);
                    for i in 0..got.len() {
                        let what =
                            format!("{} many repacked {ty}, {n} tokens, entry {i}", ks.name());
                        check_close(&what, got[i], want[i], mag[i]);
                    }
                }
            }
        }
    }
    // The dotprod and i8mm sets repack Q4_0, Q8_0, Q4_K and Q6_K: where they run, this test
    // must have run them.
    for set in KernelSet::available() {
        if matches!(set.name(), "dotprod" | "i8mm") {
            for ty in [Q4_0, Q8_0, Q4_K, Q6_K] {
                assert!(
                    checked.contains(&(set.name(), ty)),
                    "the {} set did not repack {ty}",
                    set.name()
                );
            }
        }
    }
    println!("repacked matrices checked: {repacked}");
}
