//! The shapes of kernels: what one weight type's entry of a [`KernelSet`] holds, and the
//! elementwise kernels beside them.
//!
//! This module only names function types; it imports nothing but [`GgmlType`], so the table
//! ([`crate::table`]) and the per-ISA modules (`x86/`, `arm/`) can both use it without
//! importing each other.
//!
//! [`KernelSet`]: crate::KernelSet

use crate::GgmlType;

/// Quantizes activations (whole blocks) to the activation type, in ggml's block layout,
/// bit-exact with [`crate::quant::quantize`] (ggml's `from_float`).
pub type QuantizeFn = fn(&[f32], &mut [u8]);

/// `quant::vec_dot` for one weight type: `(n, weights, activations) -> dot` (ggml's
/// `vec_dot`).
pub type DotFn = fn(usize, &[u8], &[u8]) -> f32;

/// Several rows times one activation row (decode): `out[r] = dot(row r of w, act)` for the
/// `out.len()` rows in `w`, `(cols, w, act, out)`. Rows are interleaved for parallelism in
/// the core and share the activation loads.
pub type DotRowsFn = fn(usize, &[u8], &[u8], &mut [f32]);

/// Prefill kernels: the activations of [`GemmKernels::panel`] tokens are packed together, and
/// each tile of weight rows is read once for all of them.
#[derive(Clone, Copy)]
pub struct GemmKernels {
    /// Tokens per panel.
    pub panel: usize,
    /// Bytes of one packed panel of `cols` columns.
    pub panel_bytes: fn(cols: usize) -> usize,
    /// Packs `panel` tokens of quantized activations (ggml blocks, `cols` values each, one
    /// token after the other) into one panel.
    pub pack: fn(cols: usize, acts: &[u8], panel: &mut [u8]),
    /// `out[(p * rows + r) * panel + t] = row r · token t of panel p`, for every row of `w`
    /// (`rows` whole rows of `cols` values) and every panel in `panels`.
    pub tile: fn(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]),
}

/// How one weight type is multiplied by one kernel set: ggml's `type_traits` and
/// `type_traits_cpu` entries for the type, as one row.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    /// Values per block of the weight type.
    pub block_len: usize,
    /// Bytes per block of the weight type.
    pub block_bytes: usize,
    /// The activation type (`ty.vec_dot_type()`).
    pub act: GgmlType,
    /// The activation type's quantizer.
    pub quantize: QuantizeFn,
    pub dot: DotFn,
    /// Faster than `dot` row by row, where there is one.
    pub dot_rows: Option<DotRowsFn>,
    pub gemm: Option<GemmKernels>,
    /// The level's interleaved layout for the type, where it has one (see [`RepackKernels`]).
    pub repack: Option<RepackKernels>,
}

/// A weight layout prepared once at load: groups of [`RepackKernels::rows`] rows interleaved
/// block by block, so that one indexed `sdot` feeds a lane per row, and two vectors zipped
/// are one `smmla` operand (llama.cpp's `repack.cpp` layouts). A group takes exactly the
/// bytes of its rows in the file. Only these kernels read it: a repacked matrix carries its
/// layout ([`crate::matmul::Layout`]) and the product picks them by it.
#[derive(Clone, Copy)]
pub struct RepackKernels {
    /// Rows interleaved together (divides the matrix product's row blocks, 16).
    pub rows: usize,
    /// Rewrites `rows` whole rows of `cols` values in the file's layout (`src`) as one
    /// interleaved group (`dst`, as many bytes).
    pub pack: fn(cols: usize, src: &[u8], dst: &mut [u8]),
    /// [`DotRowsFn`] over whole groups (`out.len()` a multiple of `rows`).
    pub dot_rows: DotRowsFn,
    /// Panel kernels whose `tile` reads whole groups.
    pub gemm: GemmKernels,
}

/// The vectorisable elementwise primitives, as one kernel set implements them (see
/// [`crate::ops`]).
#[derive(Clone, Copy)]
pub struct OpKernels {
    pub rms_norm: fn(&[f32], &[f32], f32, &mut [f32]),
    pub softmax: fn(&mut [f32]),
    pub swiglu: fn(&mut [f32], &[f32]),
    pub dot_rows: fn(&[f32], &[f32], usize, &mut [f32]),
    pub axpy_rows: fn(&[f32], &[f32], usize, &mut [f32]),
    pub exp_sum: fn(&mut [f32], f32) -> f32,
    pub geglu: fn(&mut [f32], &[f32]),
    pub rope_norm: RopeFn,
    pub rope_neox: RopeFn,
}

/// Rotates the heads of `x` by RoPE: `(x, head_dim, cos_sin)` (see [`crate::ops::rope_norm`]).
pub type RopeFn = fn(&mut [f32], usize, &[(f32, f32)]);
