//! Elementwise and normalisation primitives of a transformer forward pass, on f32 rows.
//!
//! Each follows ggml's arithmetic where the order of operations changes the result (sums of
//! squares in f64, RoPE angles by repeated multiplication), so Tern's logits track
//! llama.cpp's. Each runs the kernel set's vectorised version where it has one
//! ([`crate::kernel::OpKernels`]); [`scalar`] holds the plain versions they are tested
//! against, [`portable`] the versions written once with `wide`.

use crate::table::kernels;

/// Values from which a row-wise pass over a batch (a norm, an activation, a rotation, the
/// activations' quantizing) is spread over rayon's pool: a dispatch costs about what a few
/// thousand values of such work do.
pub const PAR_MIN_VALUES: usize = 32 * 1024;

/// `f(i, src_i, dst_i)` for each row `i` of `src` (rows of `src_row` values) and `dst` (rows
/// of `dst_row`): the work between a batch's matrix products. Spread over the current pool
/// from [`PAR_MIN_VALUES`] values of `dst`; on the calling thread alone it kept the others
/// waiting (a tenth of a SmolLM2 prefill at 2 threads).
pub fn zip_rows(
    src: &[f32],
    src_row: usize,
    dst: &mut [f32],
    dst_row: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let rows = src.chunks_exact(src_row).zip(dst.chunks_exact_mut(dst_row));
    if threads <= 1 || rows.len() * dst_row < PAR_MIN_VALUES {
        rows.enumerate().for_each(|(i, (s, d))| f(i, s, d));
        return;
    }
    let per_task = (dst.len() / dst_row).div_ceil(threads * 2);
    src.par_chunks_exact(src_row)
        .zip(dst.par_chunks_exact_mut(dst_row))
        .enumerate()
        .with_min_len(per_task)
        .for_each(|(i, (s, d))| f(i, s, d));
}

/// RMSNorm: `out = x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    (kernels().ops().rms_norm)(x, w, eps, out)
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    (kernels().ops().softmax)(x)
}

/// `gate = silu(gate) * up`: the SwiGLU gate of a llama feed-forward block.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    (kernels().ops().swiglu)(gate, up)
}

/// `out[j] = Σ_d q[d] · rows[j·stride + d]` for each `j < out.len()`: one query against a
/// block of keys laid out one after another (attention scores).
pub fn dot_rows(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    check_rows(q.len(), rows.len(), stride, out.len());
    (kernels().ops().dot_rows)(q, rows, stride, out)
}

/// `y[d] += Σ_j p[j] · rows[j·stride + d]`: the probabilities of a block of keys times their
/// values (attention's weighted sum).
pub fn axpy_rows(p: &[f32], rows: &[f32], stride: usize, y: &mut [f32]) {
    check_rows(y.len(), rows.len(), stride, p.len());
    (kernels().ops().axpy_rows)(p, rows, stride, y)
}

/// The bounds that [`dot_rows`] and [`axpy_rows`] kernels rely on: `n` rows of `dim` values,
/// `stride` apart, inside `len`.
fn check_rows(dim: usize, len: usize, stride: usize, n: usize) {
    assert!(
        n == 0 || (dim <= stride && (n - 1) * stride + dim <= len),
        "{n} rows of {dim} values, {stride} apart, need more than {len} values"
    );
}

/// `x[i] = e^(x[i] - max)`, returning `Σ x[i]`: one step of an online softmax (attention
/// over a block of keys). Masked entries (−∞) become 0.
pub fn exp_sum(x: &mut [f32], max: f32) -> f32 {
    (kernels().ops().exp_sum)(x, max)
}

/// The plain versions of the vectorised primitives: the reference for their tests and the
/// fallback on CPUs without a kernel set. (Its own file, which imports nothing: the table
/// takes its kernels from it while this module takes the table's.)
pub mod scalar;

/// The same primitives written once with `wide`'s portable SIMD types: aarch64's kernels
/// (and x86-64's GeGLU). Public so that the benchmarks can set them against the intrinsics.
pub mod portable;

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The rotation angles of RoPE for one position: `cos_sin[i] = (cos θᵢ, sin θᵢ)` with
/// `θᵢ = pos · base^(-2i/dims)`, computed as ggml does (the angle multiplied by the same f32
/// factor at each step) so the rotated keys match llama.cpp's bit for bit where possible.
pub fn rope_angles(pos: u32, base: f32, dims: usize, cos_sin: &mut [(f32, f32)]) {
    let theta_scale = base.powf(-2.0 / dims as f32);
    let mut theta = pos as f32;
    for cs in cos_sin.iter_mut().take(dims / 2) {
        *cs = (theta.cos(), theta.sin());
        theta *= theta_scale;
    }
}

/// Rotates each head of `x` (heads of `head_dim` values) by the angles, pairing adjacent
/// values `(x[2i], x[2i+1])`: ggml's "normal" RoPE, used by llama-family models. The first
/// `2 · cos_sin.len()` values of each head turn (`cos_sin.len() ≤ head_dim / 2`).
pub fn rope_norm(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    check_rope(x.len(), head_dim, cos_sin.len());
    (kernels().ops().rope_norm)(x, head_dim, cos_sin)
}

/// Rotates each head pairing `x[i]` with `x[i + n]`, `n = cos_sin.len() ≤ head_dim / 2`:
/// ggml's "NeoX" RoPE (Gemma, Qwen).
pub fn rope_neox(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    check_rope(x.len(), head_dim, cos_sin.len());
    (kernels().ops().rope_neox)(x, head_dim, cos_sin)
}

/// The shapes RoPE kernels rely on: whole heads, and at most one angle per pair of a head.
fn check_rope(len: usize, head_dim: usize, pairs: usize) {
    assert!(
        head_dim > 0 && len.is_multiple_of(head_dim) && 2 * pairs <= head_dim,
        "RoPE of {pairs} pairs over heads of {head_dim} values in {len} values"
    );
}

/// `gate = gelu(gate) · up`: the GeGLU gate of a Gemma feed-forward block, GELU by its tanh
/// approximation with ggml's f16 rounding (see [`scalar::geglu`]).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    (kernels().ops().geglu)(gate, up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_by_hand() {
        // mean of squares of (3, 4) is 12.5; 1/sqrt(12.5) = 0.28284271
        let mut out = [0.0; 2];
        rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut out);
        assert!((out[0] - 0.848_528_1).abs() < 1e-6);
        assert!((out[1] - 2.262_741_7).abs() < 1e-6);
    }

    #[test]
    fn softmax_by_hand() {
        let mut x = [0.0, (2.0f32).ln()];
        softmax(&mut x);
        assert!((x[0] - 1.0 / 3.0).abs() < 1e-6 && (x[1] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_by_position() {
        // dims 2: a single pair rotated by exactly `pos` radians.
        let mut cs = [(0.0, 0.0); 1];
        rope_angles(1, 10000.0, 2, &mut cs);
        let mut x = [1.0, 0.0];
        rope_norm(&mut x, 2, &cs);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        let mut y = [1.0, 0.0];
        rope_neox(&mut y, 2, &cs);
        assert_eq!(x, y);
    }
}
