//! Attention over the cache: storing a batch's keys and values, and the tiled causal
//! attention of its queries over what each token sees in its layer's ring.

use std::ops::Range;

use tern_kernels::{ops, quant, GgmlType};

use super::ring::{Kind, NewToken, Ring};
use super::{CacheShape, KvCache};

/// Query vectors (tokens × heads of one KV group) that one attention task carries.
const TILE_QUERIES: usize = 48;
/// Keys scored at once by each query of a tile before the online-softmax update.
const TILE_KEYS: usize = 32;

impl KvCache {
    /// Stores the keys (before RoPE: the cache rotates them) and values of the batch's tokens
    /// for `layer`; `k` and `v` are `n × kv_dim`.
    pub fn store(&mut self, layer: usize, k: &mut [f32], v: &[f32]) {
        let kv_dim = self.shape.n_head_kv * self.shape.head_dim;
        let half = self.shape.rope_dims / 2;
        let (kind, first_row) = self.layers[layer];
        // Split borrows: the ring is read while the rows are written.
        let ring = match kind {
            Kind::Global => &self.global,
            Kind::Local => self.local.as_ref().expect("local layers have a ring"),
        };
        for (i, t) in ring.batch.iter().enumerate() {
            let key = &mut k[i * kv_dim..(i + 1) * kv_dim];
            self.shape
                .rotate(key, &ring.angles[i * 3 * half..i * 3 * half + half]);
            let r = ring.row_of_new(first_row, t);
            let span = r * self.row_bytes..(r + 1) * self.row_bytes;
            quant::quantize(self.ty, key, &mut self.k[span.clone()]);
            quant::quantize(self.ty, &v[i * kv_dim..(i + 1) * kv_dim], &mut self.v[span]);
        }
    }

    /// Causal attention of the batch's queries (`n × n_head × head_dim`, before RoPE: rotated
    /// here) over what each token sees in `layer`, written to `out` (same shape). `qbuf`
    /// needs `n × n_head × head_dim × 2` floats.
    pub fn attend(&mut self, layer: usize, q: &[f32], out: &mut [f32], qbuf: &mut [f32]) {
        self.attend_from(layer, 0, q, out, qbuf)
    }

    /// [`KvCache::attend`] for the batch's tokens from `from` on only: their rows of `q`
    /// are read and their rows of `out` written, the others are left as they are. The last
    /// layer of a pass that wants the last token's logits needs no more. Each token's
    /// output is bitwise the same as in a whole-batch call.
    ///
    /// One task per KV head and block of tokens (a flash-attention tile): each block of keys
    /// and values is widened to f32 once and serves all the query heads of the group for all
    /// the tokens of the block, with an online softmax. Nothing is allocated: each task works
    /// in its own part of the cache's scratch.
    pub fn attend_from(
        &mut self,
        layer: usize,
        from: usize,
        q: &[f32],
        out: &mut [f32],
        qbuf: &mut [f32],
    ) {
        use rayon::prelude::*;
        let sh = &self.shape;
        let hd = sh.head_dim;
        let half = sh.rope_dims / 2;
        let q_dim = sh.n_head * hd;
        let (kind, first_row) = self.layers[layer];
        let ring = self.ring(kind);
        let n = ring.batch.len();
        let scale = sh.attn_scale;

        // The two rotations of each query: at its cache position (for sinks) and at its
        // epoch; both scaled by 1/√d here rather than every score later. Against f16 keys
        // the query is rounded to f16 as ggml rounds it (its logits track llama.cpp's a
        // little closer: mean KL 0.0044 rather than 0.0046 in `logits_parity`).
        let f16 = self.ty == GgmlType::F16;
        let from = from.min(n);
        let qbuf = &mut qbuf[..n * 2 * q_dim];
        let (q_from, qbuf_from) = (&q[from * q_dim..n * q_dim], &mut qbuf[from * 2 * q_dim..]);
        ops::zip_rows(q_from, q_dim, qbuf_from, 2 * q_dim, |i, qi, both| {
            let i = from + i;
            let a = &ring.angles[i * 3 * half..(i + 1) * 3 * half];
            let (qs, qw) = both.split_at_mut(q_dim);
            for (x, angles) in [(qs, &a[half..2 * half]), (qw, &a[2 * half..])] {
                x.copy_from_slice(qi);
                sh.rotate(x, angles);
                x.iter_mut().for_each(|v| *v *= scale);
                if f16 {
                    quant::round_to_f16(x);
                }
            }
        });
        let qbuf: &[f32] = qbuf;

        let group = sh.n_head / sh.n_head_kv;
        let block = tile_block(sh);
        let blocks = (n - from).div_ceil(block);
        // Token range of block `b`.
        let tokens_of = |b: usize| from + b * block..(from + (b + 1) * block).min(n);
        let tasks = sh.n_head_kv * blocks;
        let per_task = tile_floats(sh);
        // Taken out (an empty Vec allocates nothing) so that the tasks can borrow the cache.
        let mut tiles = std::mem::take(&mut self.tiles);
        let cache = &*self;
        let ring = cache.ring(kind);
        tiles[..tasks * per_task]
            .par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(task, scratch)| {
                let (g, b) = (task / blocks, task % blocks);
                let tile = Tile {
                    cache,
                    ring,
                    first_row,
                    kv_head: g,
                    heads: g * group..(g + 1) * group,
                    qbuf,
                };
                tile.run(tokens_of(b), scratch);
            });
        // Each tile's outputs come first in its scratch: its group's heads for its block's
        // tokens, token after token.
        for (task, o) in tiles.chunks_exact(per_task).take(tasks).enumerate() {
            let (g, b) = (task / blocks, task % blocks);
            for (i, oi) in tokens_of(b).zip(o.chunks_exact(group * hd)) {
                let at = i * q_dim + g * group * hd;
                out[at..at + oi.len()].copy_from_slice(oi);
            }
        }
        self.tiles = tiles;
    }
}

/// Tokens of the batch that one attention task takes.
fn tile_block(sh: &CacheShape) -> usize {
    (TILE_QUERIES / (sh.n_head / sh.n_head_kv).max(1)).max(1)
}

/// Attention tasks of the largest batch.
pub(super) fn tile_tasks(sh: &CacheShape) -> usize {
    sh.n_head_kv * sh.max_batch.max(1).div_ceil(tile_block(sh))
}

/// Floats of one attention task's scratch: outputs, running maxima and sums of its queries,
/// then one block of keys and values widened to f32.
pub(super) fn tile_floats(sh: &CacheShape) -> usize {
    let queries = tile_block(sh) * (sh.n_head / sh.n_head_kv).max(1);
    queries * (sh.head_dim + 2) + 2 * TILE_KEYS * sh.head_dim
}

/// One attention task: the query heads `heads`, which share KV head `kv_head`, for a block
/// of the batch's tokens, in one layer (whose rows start at `first_row`).
struct Tile<'a> {
    cache: &'a KvCache,
    ring: &'a Ring,
    first_row: usize,
    kv_head: usize,
    heads: Range<usize>,
    /// The rotated, scaled queries (see [`KvCache::attend`]).
    qbuf: &'a [f32],
}

impl Tile<'_> {
    /// Attention outputs of `tokens` (token-major, then head), over blocks of [`TILE_KEYS`]
    /// keys with a running maximum and sum per query (online softmax), written to the start
    /// of `scratch` ([`tile_floats`] long).
    fn run(&self, tokens: Range<usize>, scratch: &mut [f32]) {
        let c = self.cache;
        let hd = c.shape.head_dim;
        let q_dim = c.shape.n_head * hd;
        let batch = &self.ring.batch[tokens.clone()];
        let nq = batch.len() * self.heads.len();
        let queries = tile_block(&c.shape) * self.heads.len();
        let (o, rest) = scratch.split_at_mut(queries * hd);
        let (max, rest) = rest.split_at_mut(queries);
        let (sum, rest) = rest.split_at_mut(queries);
        let (kt, vt) = rest.split_at_mut(TILE_KEYS * hd);
        let o = &mut o[..nq * hd];
        let (max, sum) = (&mut max[..nq], &mut sum[..nq]);
        o.fill(0.0);
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);

        // The block's keys in order: sinks (rows 0..sinks of the layer), then the window's
        // epochs. What each token sees is a range of them for its sinks and one for its
        // window.
        let sinks = batch.iter().map(|t| t.sinks_seen).max().unwrap_or(0);
        let epochs = epochs_seen(batch);
        let total = sinks + (epochs.end - epochs.start) as usize;
        let seen = |t: &NewToken| -> (Range<usize>, Range<usize>) {
            let window = t.epoch.map_or(0..0, |e| {
                sinks + (t.first_epoch - epochs.start) as usize
                    ..sinks + (e + 1 - epochs.start) as usize
            });
            (0..t.sinks_seen, window)
        };
        // Slice of this KV head in a cached row: whole blocks (q8_0 needs 32 | head_dim).
        let head_bytes = c.row_bytes / c.shape.n_head_kv;
        let bytes_of = |j: usize| -> Range<usize> {
            let row = if j < sinks {
                self.first_row + j
            } else {
                self.ring
                    .row_of_epoch(self.first_row, epochs.start + (j - sinks) as u64)
            };
            let at = row * c.row_bytes + self.kv_head * head_bytes;
            at..at + head_bytes
        };

        let mut sc = [0.0f32; TILE_KEYS];
        // Chunks sit on a grid of the keys' own indices (sink slots; epochs), not of the
        // batch, so a token's keys are summed in the same blocks whatever batch it is in:
        // its attention is bitwise that of feeding it alone (speculative decoding needs it).
        let sink_chunks = (0..sinks)
            .step_by(TILE_KEYS)
            .map(|a| a..(a + TILE_KEYS).min(sinks));
        let window_chunks =
            std::iter::successors((epochs.start < epochs.end).then_some(epochs.start), |&e| {
                let next = (e / TILE_KEYS as u64 + 1) * TILE_KEYS as u64;
                (next < epochs.end).then_some(next)
            })
            .map(|e| {
                let end = ((e / TILE_KEYS as u64 + 1) * TILE_KEYS as u64).min(epochs.end);
                sinks + (e - epochs.start) as usize..sinks + (end - epochs.start) as usize
            });
        debug_assert!(total == sinks + (epochs.end - epochs.start) as usize);
        for chunk in sink_chunks.chain(window_chunks) {
            let start = chunk.start;
            for (j, (kr, vr)) in chunk
                .clone()
                .zip(kt.chunks_exact_mut(hd).zip(vt.chunks_exact_mut(hd)))
            {
                widen(c.ty, &c.k[bytes_of(j)], kr);
                widen(c.ty, &c.v[bytes_of(j)], vr);
            }
            for (ti, (t, i)) in batch.iter().zip(tokens.clone()).enumerate() {
                let (s_seen, w_seen) = seen(t);
                let s_part = intersect(&s_seen, &chunk);
                let w_part = intersect(&w_seen, &chunk);
                // The keys of the chunk this token sees lie in lo..hi; between the two parts
                // (never more than a gap) scores are masked.
                let (lo, hi) = match (s_part.is_empty(), w_part.is_empty()) {
                    (true, true) => continue,
                    (false, true) => (s_part.start, s_part.end),
                    (true, false) => (w_part.start, w_part.end),
                    (false, false) => (s_part.start, w_part.end),
                };
                for (hi_, h) in self.heads.clone().enumerate() {
                    let qs = &self.qbuf[i * 2 * q_dim + h * hd..][..hd];
                    let qw = &self.qbuf[i * 2 * q_dim + q_dim + h * hd..][..hd];
                    sc[lo - start..hi - start].fill(f32::NEG_INFINITY);
                    for (part, qh) in [(&s_part, qs), (&w_part, qw)] {
                        if !part.is_empty() {
                            let out = &mut sc[part.start - start..part.end - start];
                            ops::dot_rows(qh, &kt[(part.start - start) * hd..], hd, out);
                        }
                    }
                    let s = &mut sc[lo - start..hi - start];
                    let qv = ti * self.heads.len() + hi_;
                    let block_max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let m = max[qv].max(block_max);
                    let correction = (max[qv] - m).exp(); // 0 for the first block seen
                    let ov = &mut o[qv * hd..(qv + 1) * hd];
                    if correction != 1.0 {
                        ov.iter_mut().for_each(|x| *x *= correction);
                    }
                    sum[qv] = sum[qv] * correction + ops::exp_sum(s, m);
                    max[qv] = m;
                    ops::axpy_rows(s, &vt[(lo - start) * hd..], hd, ov);
                }
            }
        }
        for (ov, &s) in o.chunks_exact_mut(hd).zip(&*sum) {
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            ov.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// The window epochs that some token of `batch` sees.
fn epochs_seen(batch: &[NewToken]) -> Range<u64> {
    batch
        .iter()
        .filter_map(|t| t.epoch.map(|e| (t.first_epoch, e + 1)))
        .fold(None, |acc: Option<(u64, u64)>, (a, b)| {
            Some(acc.map_or((a, b), |(x, y)| (x.min(a), y.max(b))))
        })
        .map_or(0..0, |(a, b)| a..b)
}

/// The common part of two ranges (empty if none).
fn intersect(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
    let (start, end) = (a.start.max(b.start), a.end.min(b.end));
    start..end.max(start)
}

/// Widens one cached row to f32. f16 is the default: a whole row at once (F16C or NEON where
/// the CPU has it, through `half`).
fn widen(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    if ty == GgmlType::F16 {
        if let Ok(h) = bytemuck::try_cast_slice::<u8, half::f16>(bytes) {
            use half::slice::HalfFloatSliceExt;
            h.convert_to_f32_slice(out);
            return;
        }
    }
    quant::dequantize(ty, bytes, out);
}
