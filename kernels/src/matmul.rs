//! The matrix product the runtime calls: quantized weights (in place, from the map) times
//! f32 activations.
//!
//! This is the one entry point for every weight matrix of every model, so that faster
//! kernels replace its body without touching the models. The kernels come from the
//! [`KernelSet`] chosen at start-up ([`kernels`]): one token (decode) is a dot product per
//! row; several tokens (prefill) are packed into panels so that each tile of weight rows is
//! read once for a whole panel of tokens. Rows are split over the current rayon pool, unless
//! the product is too small to pay for the dispatch.

use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::Level;
use crate::table::{kernels, GemmKernels, KernelSet, TypeKernels};
use crate::GgmlType;
use crate::{ops, quant};

/// A weight matrix: `rows` rows of `cols` values of type `ty`, borrowed from wherever the
/// bytes live (usually the model's memory map), in the layout its [`Layout`] names.
#[derive(Copy, Clone, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    /// Private, so that only [`QMatrix::new`] (the file's layout) and
    /// [`PackedMatrix::view`] (a repacked one) make matrices: no other layout can be claimed.
    layout: Layout,
}

/// How a matrix's rows are laid out in its bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// ggml's: each row's blocks one after the other, rows one after the other.
    File,
    /// Repacked by the kernel set of `level` into groups of `rows` rows interleaved block by
    /// block ([`crate::kernel::RepackKernels`]); only that set's kernels read it.
    Interleaved { level: Level, rows: usize },
}

impl<'a> QMatrix<'a> {
    /// A matrix over `data` in the file's layout, or `None` when `cols` is not a whole
    /// number of blocks or the bytes do not match the shape.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Option<QMatrix<'a>> {
        let row_bytes = ty.bytes_for(cols as u64)? as usize;
        (row_bytes.checked_mul(rows)? == data.len()).then_some(QMatrix {
            ty,
            rows,
            cols,
            data,
            layout: Layout::File,
        })
    }

    /// The layout of the rows.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// This matrix in the interleaved layout of the process's kernel set (see
    /// [`QMatrix::repack_with`]).
    pub fn repack(&self) -> Option<PackedMatrix> {
        self.repack_with(kernels())
    }

    /// A copy of this matrix in `ks`'s interleaved layout for its type, or `None` where
    /// there is none: no such layout at `ks`'s level, a matrix already repacked, or a row
    /// count that is not a multiple of the interleave (such a matrix stays whole in the
    /// file's layout rather than split into groups and a tail).
    pub fn repack_with(&self, ks: &KernelSet) -> Option<PackedMatrix> {
        self.repack_with_progress(ks, |_| ())
    }

    /// [`QMatrix::repack_with`], calling `done(bytes)` each time the first `bytes` of this
    /// matrix's data have been repacked (every [`REPACK_CHUNK`] and at the end): a caller
    /// releases what it no longer needs as it goes, so a large matrix is never resident
    /// twice.
    pub fn repack_with_progress(
        &self,
        ks: &KernelSet,
        mut done: impl FnMut(usize),
    ) -> Option<PackedMatrix> {
        let r = ks.get(self.ty).repack?;
        if self.layout != Layout::File || !self.rows.is_multiple_of(r.rows) {
            return None;
        }
        assert!(
            ROW_BLOCK.is_multiple_of(r.rows) && DOT_ROWS.is_multiple_of(r.rows),
            "an interleave divides the row blocks"
        );
        let group = r.rows * self.row_bytes();
        let mut data = vec![0u8; self.data.len()];
        let per_chunk = (REPACK_CHUNK / group).max(1) * group;
        for (at, (src, dst)) in self
            .data
            .chunks(per_chunk)
            .zip(data.chunks_mut(per_chunk))
            .enumerate()
        {
            for (src, dst) in src.chunks_exact(group).zip(dst.chunks_exact_mut(group)) {
                (r.pack)(self.cols, src, dst);
            }
            done(at * per_chunk + src.len());
        }
        Some(PackedMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            layout: Layout::Interleaved {
                level: ks.level(),
                rows: r.rows,
            },
            data,
        })
    }

    /// Bytes taken by one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_len() * self.ty.block_bytes()
    }

    /// The bytes of row `r` (of a matrix in the file's layout).
    pub fn row(&self, r: usize) -> &'a [u8] {
        assert_eq!(
            self.layout,
            Layout::File,
            "the rows of a repacked matrix are interleaved"
        );
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The bytes of rows `r` (whole groups of an interleaved layout).
    fn rows(&self, r: Range<usize>) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r.start * rb..r.end * rb]
    }

    /// Writes row `r` as f32 into `out` (`cols` values): an embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        quant::dequantize(self.ty, self.row(r), &mut out[..self.cols]);
    }
}

/// A weight matrix repacked at load into a kernel set's interleaved layout
/// ([`QMatrix::repack_with`]): it owns its bytes (the file's copy can then be released), and
/// its [`view`](PackedMatrix::view) carries the layout, so only that set's kernels read it.
pub struct PackedMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    layout: Layout,
    data: Vec<u8>,
}

impl std::fmt::Debug for PackedMatrix {
    /// The shape and layout; not the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("layout", &self.layout)
            .finish()
    }
}

impl PackedMatrix {
    /// The matrix, to multiply with [`matmul`] and its kin.
    pub fn view(&self) -> QMatrix<'_> {
        QMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &self.data,
            layout: self.layout,
        }
    }
}

/// Bytes repacked between two calls of [`QMatrix::repack_with_progress`]'s `done`.
pub const REPACK_CHUNK: usize = 16 << 20;

/// Below this many multiply-adds (rows × cols × tokens) a product runs on the calling
/// thread. A split costs ~0.3 µs from inside the pool while the workers are awake, but
/// ~25 µs from outside it or when they must be woken (the `dispatch` benches of
/// `benches/benches/kernels.rs`, 2 threads here), while one core multiplies a 576 × 192
/// Q4_1 matrix by a vector (110 K multiply-adds) in about 10 µs: such products stay on the
/// caller; 576 × 576 (330 K) and up are split. `matmul_many` sums its matrices' rows, so q,
/// k and v together are split.
pub const PAR_MIN_WORK: usize = 200_000;

/// Row tasks per pool thread: more than one lets a thread that was descheduled catch up.
const TASKS_PER_THREAD: usize = 2;

/// Weight rows per call of a decode kernel.
const DOT_ROWS: usize = 16;

/// Weight rows per tile call in prefill: their bytes stay in L1 while every panel passes.
const ROW_BLOCK: usize = 16;

/// Panels per tile call (bounds the stack buffer of results).
const PANEL_BLOCK: usize = 16;

/// The most tokens a kernel set's panel holds (AVX2: 8, NEON: 4).
const MAX_PANEL: usize = 8;

/// `y[t][r] = Σ_k w[r][k] · x[t][k]` for each of the `n` tokens in `x` (row-major,
/// `n × w.cols`), writing `y` (row-major, `n × w.rows`).
///
/// Activations are first quantized to the type the weights pair with, as ggml does, so the
/// result matches llama.cpp's to float rounding. `scratch` holds those quantized
/// activations; pass the same buffer every call to avoid allocating.
pub fn matmul(w: &QMatrix<'_>, x: &[f32], y: &mut [f32], scratch: &mut Vec<u8>) {
    matmul_with(kernels(), w, x, y, scratch);
}

/// [`matmul`] with the kernels of `ks` rather than the process's (tests, benchmarks).
pub fn matmul_with(
    ks: &KernelSet,
    w: &QMatrix<'_>,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut Vec<u8>,
) {
    matmul_many_with(ks, &[*w], x, &mut [y], scratch);
}

/// Several products of the same activations, `ys[i] = ws[i] · x` (each as [`matmul`]): the
/// activations are quantized once and all the rows share one parallel dispatch, which
/// matters for the small matrices of a decode step (q, k, v; gate, up). Matrices of
/// different types or widths are multiplied one after the other.
pub fn matmul_many(ws: &[QMatrix<'_>], x: &[f32], ys: &mut [&mut [f32]], scratch: &mut Vec<u8>) {
    matmul_many_with(kernels(), ws, x, ys, scratch);
}

/// [`matmul_many`] with the kernels of `ks`.
pub fn matmul_many_with(
    ks: &KernelSet,
    ws: &[QMatrix<'_>],
    x: &[f32],
    ys: &mut [&mut [f32]],
    scratch: &mut Vec<u8>,
) {
    product(ks, ws, x, ys, scratch, true);
}

/// [`matmul_many`] with every token's results computed as a one-token product computes
/// them (the decode kernels, never the panel kernels), so they are bitwise those of the
/// tokens multiplied one at a time. Speculative decoding verifies its drafts this way when
/// its text must be exactly the model's alone. Weights are still read once per batch.
pub fn matmul_many_per_token(
    ws: &[QMatrix<'_>],
    x: &[f32],
    ys: &mut [&mut [f32]],
    scratch: &mut Vec<u8>,
) {
    product(kernels(), ws, x, ys, scratch, false);
}

/// [`matmul_many_with`], with or without the panel kernels for batches.
fn product(
    ks: &KernelSet,
    ws: &[QMatrix<'_>],
    x: &[f32],
    ys: &mut [&mut [f32]],
    scratch: &mut Vec<u8>,
    panels: bool,
) {
    assert_eq!(ws.len(), ys.len(), "one output per matrix");
    let Some(first) = ws.first() else { return };
    if ws.len() > MAX_SEGMENTS
        || ws
            .iter()
            .any(|w| w.ty != first.ty || w.cols != first.cols || w.layout != first.layout)
    {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            product(ks, &[*w], x, &mut [&mut **y], scratch, panels);
        }
        return;
    }
    let cols = first.cols;
    let n = x.len() / cols;
    assert_eq!(x.len(), n * cols, "activations are not whole rows");
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(y.len(), n * w.rows, "output is not n × rows");
        assert_eq!(
            w.data.len(),
            w.rows * w.row_bytes(),
            "weights are not rows × cols"
        );
    }
    if n == 0 {
        return;
    }
    let mut segs: Segments<'_, '_> = Default::default();
    for (slot, (w, y)) in segs.iter_mut().zip(ws.iter().zip(ys.iter_mut())) {
        *slot = Some(Segment {
            w: *w,
            out: SharedOut::new(y),
        });
    }
    let k = kernels_for(ks, first);
    let k = &k;
    match k.gemm {
        Some(g) if n >= 2 && panels => gemm(k, &g, &segs, x, n, scratch),
        _ => rows_dot(k, &segs, x, n, scratch),
    }
}

/// The kernels that read `w`'s layout: the type's, or for a repacked matrix the interleaved
/// ones of the set that repacked it (which alone are given, so no file-layout kernel reads
/// interleaved rows). A matrix repacked by another kernel set is a programming error.
fn kernels_for(ks: &KernelSet, w: &QMatrix<'_>) -> TypeKernels {
    let k = *ks.get(w.ty);
    match w.layout {
        Layout::File => k,
        Layout::Interleaved { level, rows } => {
            let r = k
                .repack
                .filter(|r| level == ks.level() && r.rows == rows)
                .unwrap_or_else(|| {
                    panic!(
                        "{} matrix repacked by the {} kernels, multiplied with {}",
                        w.ty,
                        level.name(),
                        ks.name()
                    )
                });
            TypeKernels {
                dot_rows: Some(r.dot_rows),
                gemm: Some(r.gemm),
                ..k
            }
        }
    }
}

/// One matrix of a product and where its results go.
struct Segment<'w, 'y> {
    w: QMatrix<'w>,
    out: SharedOut<'y>,
}

/// Most matrices one dispatch takes (q, k and v); more are multiplied one after the other.
const MAX_SEGMENTS: usize = 3;

/// The matrices of one dispatch, first ones filled: on the stack, so that a product
/// allocates nothing (a decode step makes hundreds).
type Segments<'w, 'y> = [Option<Segment<'w, 'y>>; MAX_SEGMENTS];

/// Calls `f(segment, local rows)` for the parts of the global row range `range` (the rows
/// of all segments, one after the other) that fall in each segment.
fn for_segments(
    segs: &Segments<'_, '_>,
    range: Range<usize>,
    mut f: impl FnMut(&Segment<'_, '_>, Range<usize>),
) {
    let mut base = 0;
    for s in segs.iter().flatten() {
        let (lo, hi) = (range.start.max(base), range.end.min(base + s.w.rows));
        if lo < hi {
            f(s, lo - base..hi - base);
        }
        base += s.w.rows;
    }
}

/// Decode (or a type without panel kernels): one dot product per row and token.
fn rows_dot(k: &TypeKernels, segs: &Segments<'_, '_>, x: &[f32], n: usize, scratch: &mut Vec<u8>) {
    let cols = x.len() / n;
    let act_row = k
        .act
        .bytes_for(cols as u64)
        .expect("cols is a whole number of blocks") as usize;
    scratch.resize(n * act_row, 0);
    for (xt, qt) in x.chunks_exact(cols).zip(scratch.chunks_exact_mut(act_row)) {
        (k.quantize)(xt, qt);
    }
    let acts: &[u8] = scratch;
    let total: usize = segs.iter().flatten().map(|s| s.w.rows).sum();
    par_rows(total, cols * n, DOT_ROWS, |range| {
        let mut buf = [0.0f32; DOT_ROWS];
        for_segments(segs, range, |s, range| {
            let (w, rows, rb) = (&s.w, s.w.rows, s.w.row_bytes());
            for r0 in range.clone().step_by(DOT_ROWS) {
                let r1 = (r0 + DOT_ROWS).min(range.end);
                let wr = w.rows(r0..r1);
                for (t, a) in acts.chunks_exact(act_row).enumerate() {
                    let res = &mut buf[..r1 - r0];
                    match k.dot_rows {
                        Some(f) => f(cols, wr, a, res),
                        None => {
                            for (o, row) in res.iter_mut().zip(wr.chunks_exact(rb)) {
                                *o = (k.dot)(cols, row, a);
                            }
                        }
                    }
                    for (i, &v) in res.iter().enumerate() {
                        s.out.write(t * rows + r0 + i, v);
                    }
                }
            }
        });
    });
}

/// Prefill: activations quantized and packed into panels of `g.panel` tokens (the last one
/// padded with zeros), then every block of weight rows multiplied with every panel.
fn gemm(
    k: &TypeKernels,
    g: &GemmKernels,
    segs: &Segments<'_, '_>,
    x: &[f32],
    n: usize,
    scratch: &mut Vec<u8>,
) {
    let cols = x.len() / n;
    let p = g.panel;
    assert!(p <= MAX_PANEL, "panels of at most {MAX_PANEL} tokens");
    let n_panels = n.div_ceil(p);
    let act_row = k
        .act
        .bytes_for(cols as u64)
        .expect("cols is a whole number of blocks") as usize;
    let panel_bytes = (g.panel_bytes)(cols);
    let staging = p * act_row;
    scratch.resize(n_panels * (panel_bytes + staging), 0);
    let (panels, stage) = scratch.split_at_mut(n_panels * panel_bytes);

    // Quantize and pack, a panel per task: for long prompts this is worth spreading too.
    let pack = |(i, (panel, st)): (usize, (&mut [u8], &mut [u8]))| {
        for (t, qt) in st.chunks_exact_mut(act_row).enumerate() {
            match x.get((i * p + t) * cols..(i * p + t + 1) * cols) {
                Some(xt) => (k.quantize)(xt, qt),
                // A zero activation quantizes to zero bytes in every Q8 format.
                None => qt.fill(0),
            }
        }
        (g.pack)(cols, st, panel);
    };
    if n * cols >= ops::PAR_MIN_VALUES && n_panels > 1 && rayon::current_num_threads() > 1 {
        panels
            .par_chunks_exact_mut(panel_bytes)
            .zip(stage.par_chunks_exact_mut(staging))
            .enumerate()
            .for_each(pack);
    } else {
        panels
            .chunks_exact_mut(panel_bytes)
            .zip(stage.chunks_exact_mut(staging))
            .enumerate()
            .for_each(pack);
    }

    let panels: &[u8] = panels;
    let total: usize = segs.iter().flatten().map(|s| s.w.rows).sum();
    par_rows(total, cols * n, ROW_BLOCK, |range| {
        let mut buf = [0.0f32; ROW_BLOCK * PANEL_BLOCK * MAX_PANEL];
        for_segments(segs, range, |s, range| {
            let rows = s.w.rows;
            let mut r0 = range.start;
            while r0 < range.end {
                let nr = ROW_BLOCK.min(range.end - r0);
                let wr = s.w.rows(r0..r0 + nr);
                for p0 in (0..n_panels).step_by(PANEL_BLOCK) {
                    let np = PANEL_BLOCK.min(n_panels - p0);
                    let res = &mut buf[..np * nr * p];
                    (g.tile)(
                        cols,
                        wr,
                        &panels[p0 * panel_bytes..(p0 + np) * panel_bytes],
                        res,
                    );
                    // A tile holds each row's tokens; the output, each token's rows.
                    let mut runs = [[0.0f32; ROW_BLOCK]; MAX_PANEL];
                    for (pi, tile) in res.chunks_exact(nr * p).enumerate() {
                        transpose(tile, p, &mut runs);
                        let first = (p0 + pi) * p;
                        for (t, run) in runs.iter().take(p.min(n - first)).enumerate() {
                            s.out.write_run((first + t) * rows + r0, &run[..nr]);
                        }
                    }
                }
                r0 += nr;
            }
        });
    });
}

/// One panel's tile (`rows × p` results, a row's tokens together) as `p` runs of the rows
/// (a token's rows together, as the output holds them).
fn transpose(tile: &[f32], p: usize, runs: &mut [[f32; ROW_BLOCK]; MAX_PANEL]) {
    for (r, vals) in tile.chunks_exact(p).enumerate() {
        for (run, &v) in runs.iter_mut().zip(vals) {
            run[r] = v;
        }
    }
}

/// Runs `f` over `0..rows`, split into row ranges (multiples of `align`, but the last) over
/// the current rayon pool, or on the calling thread when `rows × work_per_row` is too
/// little to pay for a dispatch.
fn par_rows(rows: usize, work_per_row: usize, align: usize, f: impl Fn(Range<usize>) + Sync) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || rows.saturating_mul(work_per_row) < PAR_MIN_WORK {
        f(0..rows);
        return;
    }
    let tasks = (threads * TASKS_PER_THREAD)
        .min(rows.div_ceil(align))
        .max(1);
    let chunk = rows.div_ceil(tasks).div_ceil(align) * align;
    let tasks = rows.div_ceil(chunk);
    (0..tasks)
        .into_par_iter()
        .for_each(|i| f(i * chunk..((i + 1) * chunk).min(rows)));
}

/// The output matrix, shared by row tasks that each write their own rows of every token
/// (strided in `y[token][row]`, so not expressible as disjoint sub-slices).
struct SharedOut<'y> {
    ptr: *mut f32,
    len: usize,
    _y: std::marker::PhantomData<&'y mut [f32]>,
}

// SAFETY: the tasks sharing a `SharedOut` write disjoint indices (their own rows), and the
// slice it was made from stays mutably borrowed (`'y`) while it exists.
unsafe impl Sync for SharedOut<'_> {}

impl<'y> SharedOut<'y> {
    fn new(y: &'y mut [f32]) -> SharedOut<'y> {
        SharedOut {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            _y: std::marker::PhantomData,
        }
    }

    /// Writes `y[i]`. Each index is written by at most one task (rows are split, not shared).
    #[inline]
    fn write(&self, i: usize, v: f32) {
        assert!(i < self.len);
        // SAFETY: in bounds (checked above); no other task writes this index (see the type),
        // and nothing reads `y` until every task is done.
        unsafe { self.ptr.add(i).write(v) }
    }

    /// Writes `y[start..start + vals.len()]`, indices that are all this task's (as
    /// [`Self::write`]'s).
    #[inline]
    fn write_run(&self, start: usize, vals: &[f32]) {
        assert!(start <= self.len && vals.len() <= self.len - start);
        // SAFETY: in bounds (checked above); no other task writes these indices, nothing
        // reads `y` meanwhile, and `vals` (the task's own buffer) does not overlap `y`. A
        // whole row block is one fixed-size copy: a `copy_nonoverlapping` of a run-time
        // length became a call to `memmove` per token, 14 % of a prefill.
        unsafe {
            let dst = self.ptr.add(start);
            match <&[f32; ROW_BLOCK]>::try_from(vals) {
                Ok(block) => dst.cast::<[f32; ROW_BLOCK]>().write_unaligned(*block),
                Err(_) => std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, vals.len()),
            }
        }
    }
}
