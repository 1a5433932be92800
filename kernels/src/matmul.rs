//! The matrix product the runtime calls: quantized weights (in place, from the map) times
//! f32 activations.
//!
//! This is the one entry point for every weight matrix of every model, so that faster
//! kernels replace its body without touching the models.

use rayon::prelude::*;

use crate::quant;
use crate::GgmlType;

/// A weight matrix as stored by ggml: `rows` rows of `cols` values of type `ty`, each row
/// contiguous, borrowed from wherever the bytes live (usually the model's memory map).
#[derive(Copy, Clone, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// A matrix over `data`, or `None` when `cols` is not a whole number of blocks or the
    /// bytes do not match the shape.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Option<QMatrix<'a>> {
        let row_bytes = ty.bytes_for(cols as u64)? as usize;
        (row_bytes.checked_mul(rows)? == data.len()).then_some(QMatrix {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Bytes taken by one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_len() * self.ty.block_bytes()
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Writes row `r` as f32 into `out` (`cols` values): an embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        quant::dequantize(self.ty, self.row(r), &mut out[..self.cols]);
    }
}

/// Rows handed to one rayon task: enough work to outweigh the cost of a task.
const ROWS_PER_TASK: usize = 16;

/// `y[t][r] = Σ_k w[r][k] · x[t][k]` for each of the `n` tokens in `x` (row-major,
/// `n × w.cols`), writing `y` (row-major, `n × w.rows`).
///
/// Activations are first quantized to the type the weights pair with, as ggml does, so the
/// result matches llama.cpp's to float rounding. `scratch` holds those quantized
/// activations; pass the same buffer every call to avoid allocating.
pub fn matmul(w: &QMatrix<'_>, x: &[f32], y: &mut [f32], scratch: &mut Vec<u8>) {
    let n = x.len() / w.cols;
    assert_eq!(x.len(), n * w.cols, "activations are not whole rows");
    assert_eq!(y.len(), n * w.rows, "output is not n × rows");

    let act_ty = w.ty.vec_dot_type();
    let act_row = act_ty
        .bytes_for(w.cols as u64)
        .expect("cols is a whole number of blocks") as usize;
    scratch.resize(n * act_row, 0);
    for (xt, qt) in x
        .chunks_exact(w.cols)
        .zip(scratch.chunks_exact_mut(act_row))
    {
        quant::quantize(act_ty, xt, qt);
    }

    let acts: &[u8] = scratch;
    for (t, yt) in y.chunks_exact_mut(w.rows).enumerate() {
        let a = &acts[t * act_row..(t + 1) * act_row];
        yt.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, out)| {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = quant::vec_dot(w.ty, w.cols, w.row(c * ROWS_PER_TASK + i), a);
                }
            });
    }
}
