//! The key/value cache of a session: the StreamingLLM attention-sink cache (Xiao et al. 2023,
//! "Efficient Streaming Language Models with Attention Sinks", arXiv 2309.17453).
//!
//! The cache holds the first `sinks` tokens for ever, plus a rolling window of the most recent
//! `window` tokens. While the text fits, it is an ordinary cache. Positions are assigned inside
//! the cache (paper §3.2): a token's position is its rank among the tokens held, so a sink at
//! slot `j` has position `j`, and the query of a new token sits right after the tokens it sees.
//!
//! RoPE stays exact under eviction without re-rotating the window on every token. Keys are
//! stored rotated: sinks at their positions `0..sinks`, window tokens at an *epoch*, a counter
//! that advances by one per token. Window tokens are always consecutive in the text, so the
//! distance between two epochs is the distance between the two tokens' cache positions; since
//! a RoPE score depends only on that distance, the query is rotated twice: at its cache position
//! for the sinks, at its epoch for the window. Epochs stay below `2 × ring` (the ring being the
//! window's storage): when they would pass it, every held window key is rotated back by `ring`
//! positions at once (rotations compose) and the epochs drop by `ring`. Angles are therefore
//! always those of positions below a small bound, however long the stream runs.
//!
//! Eviction happens per token, or in chunks of `evict_chunk` tokens (the window then drops to
//! `window - evict_chunk + 1` tokens when it overflows); both are exact. Memory is allocated
//! once, when the cache is made, and never grows: `sinks + window + batch` rows per layer,
//! the `batch` extra rows letting every token of a batch see its whole window.

use std::ops::Range;

use tern_kernels::{ops, quant, GgmlType};

/// The element type of cached keys and values.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
    Q8_0,
}

impl KvType {
    fn ggml(self) -> GgmlType {
        match self {
            KvType::F32 => GgmlType::F32,
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// Bytes of one cached row of `kv_dim` values (a whole number of blocks for q8_0).
    pub fn row_bytes(self, kv_dim: usize) -> usize {
        let t = self.ggml();
        kv_dim.div_ceil(t.block_len()) * t.block_bytes()
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<KvType, String> {
        match s {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            _ => Err(format!("unknown KV type `{s}` (expected f32, f16 or q8_0)")),
        }
    }
}

/// How the cache is sized and behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// Tokens at the start of the text kept for ever (the attention sinks).
    pub sinks: usize,
    /// Most recent tokens kept after the sinks.
    pub window: usize,
    /// Element type of keys and values.
    pub kv_type: KvType,
    /// Tokens evicted at once when the window overflows (1: per token, as in the paper).
    pub evict_chunk: usize,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            sinks: 4,
            window: 1020,
            kv_type: KvType::F16,
            evict_chunk: 1,
        }
    }
}

impl CacheConfig {
    /// A cache that never evicts: `capacity` tokens, all kept (an ordinary, dense cache).
    pub fn dense(capacity: usize) -> CacheConfig {
        CacheConfig {
            sinks: 0,
            window: capacity,
            ..CacheConfig::default()
        }
    }

    /// Tokens held at most.
    pub fn capacity(&self) -> usize {
        self.sinks.saturating_add(self.window)
    }
}

/// The shape of the model a cache serves, and its RoPE.
#[derive(Clone, Debug)]
pub struct CacheShape {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rope_dims: usize,
    /// How RoPE pairs the values of a head.
    pub rope_style: RopeStyle,
    /// Scale of the attention scores (`1/√head_dim` for most models).
    pub attn_scale: f32,
    /// Layers restricted to a sliding window of recent tokens, if the model has any.
    pub sliding: Option<SlidingWindow>,
    /// Largest number of tokens appended at once.
    pub batch: usize,
}

/// Which values of a head RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])`: ggml's "normal" RoPE (llama).
    Norm,
    /// Halves `(x[i], x[i + d/2])`: ggml's "NeoX" RoPE (Qwen, Gemma, Phi).
    Neox,
}

/// Local attention (Gemma 3): on the marked layers a token sees only the keys less than
/// `window` positions behind it (llama.cpp's `LLAMA_SWA_TYPE_STANDARD` masks `p1 - p0 >=
/// n_swa`), and RoPE uses its own base.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingWindow {
    pub window: usize,
    pub rope_base: f32,
    /// One flag per layer: true where the window applies.
    pub layers: Vec<bool>,
}

impl CacheShape {
    /// Rotates each head of `x` by `angles` in this model's RoPE style.
    fn rotate(&self, x: &mut [f32], angles: &[(f32, f32)]) {
        match self.rope_style {
            RopeStyle::Norm => ops::rope_norm(x, self.head_dim, angles),
            RopeStyle::Neox => ops::rope_neox(x, self.head_dim, angles),
        }
    }
}

/// Why a cache cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache window must hold at least one token")]
    EmptyWindow,
    #[error("evict_chunk must be between 1 and the window ({window}), got {chunk}")]
    BadEvictChunk { chunk: usize, window: usize },
    #[error("KV type q8_0 needs heads of a multiple of 32 values (head size {0})")]
    Q8HeadSize(usize),
    #[error("heads of {0} values are larger than the cache supports (256)")]
    HeadTooLarge(usize),
    #[error("a cache of {sinks} sinks and a window of {window} tokens is too large to allocate")]
    TooLarge { sinks: usize, window: usize },
    #[error("{n} tokens at once exceed the cache's batch of {batch}")]
    BatchTooLarge { n: usize, batch: usize },
}

/// `n` zero bytes, or `None` when the allocator cannot give them (an error for the caller,
/// rather than the abort of `vec![0; n]`).
fn zeroed(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(v)
}

/// Largest head the attention loop handles (its key buffer lives on the stack).
const MAX_HEAD_DIM: usize = 256;

/// Where one token of the batch being processed stands.
#[derive(Clone, Copy, Debug, Default)]
struct NewToken {
    /// Its position in the cache: where its query is rotated for the sinks.
    pos: u32,
    /// Its epoch if it is a window token (where its key and its window query are rotated).
    epoch: Option<u64>,
    /// Sinks it sees.
    sinks_seen: usize,
    /// First epoch of the window it sees (up to its own).
    first_epoch: u64,
}

/// Counters of a cache before an append; see [`KvCache::checkpoint`].
#[derive(Clone, Copy, Debug)]
pub struct CacheCheckpoint {
    sinks_filled: usize,
    next_epoch: u64,
    first_epoch: u64,
    seen: u64,
}

/// The attention-sink KV cache.
pub struct KvCache {
    cfg: CacheConfig,
    shape: CacheShape,
    ty: GgmlType,
    /// Bytes of one token's keys (or values) in one layer.
    row_bytes: usize,
    /// Rows per layer: `sinks + ring`.
    rows: usize,
    /// Window storage: epoch `e` lives in ring slot `e % ring`.
    ring: usize,
    k: Vec<u8>,
    v: Vec<u8>,
    /// Sinks filled so far.
    sinks_filled: usize,
    /// Epoch of the next window token.
    next_epoch: u64,
    /// Epoch of the oldest window token held.
    first_epoch: u64,
    /// Tokens ever appended (after [`KvCache::clear`]).
    seen: u64,
    /// The batch being processed, set by [`KvCache::append`].
    batch: Vec<NewToken>,
    /// Rotation angles per token of the batch: key, query for sinks, query for the window.
    angles: Vec<(f32, f32)>,
    /// The same for the sliding-window layers' RoPE base (empty without such layers).
    angles_local: Vec<(f32, f32)>,
}

impl KvCache {
    /// Allocates the whole cache.
    pub fn new(cfg: CacheConfig, shape: CacheShape) -> Result<KvCache, CacheError> {
        if cfg.window == 0 {
            return Err(CacheError::EmptyWindow);
        }
        if cfg.evict_chunk == 0 || cfg.evict_chunk > cfg.window {
            return Err(CacheError::BadEvictChunk {
                chunk: cfg.evict_chunk,
                window: cfg.window,
            });
        }
        if shape.head_dim > MAX_HEAD_DIM {
            return Err(CacheError::HeadTooLarge(shape.head_dim));
        }
        let ty = cfg.kv_type.ggml();
        if ty == GgmlType::Q8_0 && !shape.head_dim.is_multiple_of(32) {
            return Err(CacheError::Q8HeadSize(shape.head_dim));
        }
        let kv_dim = shape.n_head_kv * shape.head_dim;
        let row_bytes = ty.bytes_for(kv_dim as u64).expect("whole blocks") as usize;
        // Checked: sizes may come from a file, and a wrapped size would make a small ring
        // that claims a huge window.
        let too_large = || CacheError::TooLarge {
            sinks: cfg.sinks,
            window: cfg.window,
        };
        let ring = cfg
            .window
            .checked_add(shape.batch.max(1))
            .ok_or_else(too_large)?;
        let rows = cfg.sinks.checked_add(ring).ok_or_else(too_large)?;
        let total = rows
            .checked_mul(row_bytes)
            .and_then(|b| b.checked_mul(shape.n_layer))
            .filter(|&b| b <= isize::MAX as usize / 2)
            .ok_or_else(too_large)?;
        // Epochs run up to `2 × ring` in a u64, and positions in a u32.
        if u32::try_from(rows).is_err() {
            return Err(too_large());
        }
        let half = shape.rope_dims / 2;
        Ok(KvCache {
            ty,
            row_bytes,
            rows,
            ring,
            k: zeroed(total).ok_or_else(too_large)?,
            v: zeroed(total).ok_or_else(too_large)?,
            sinks_filled: 0,
            next_epoch: cfg.sinks as u64,
            first_epoch: cfg.sinks as u64,
            seen: 0,
            batch: Vec::with_capacity(shape.batch),
            angles: vec![(0.0, 0.0); shape.batch * 3 * half],
            angles_local: match shape.sliding {
                Some(_) => vec![(0.0, 0.0); shape.batch * 3 * half],
                None => Vec::new(),
            },
            cfg,
            shape,
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.sinks_filled + (self.next_epoch - self.first_epoch) as usize
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens held at most.
    pub fn capacity(&self) -> usize {
        self.cfg.capacity()
    }

    /// Tokens appended since the cache was made or cleared, evicted ones included.
    pub fn tokens_seen(&self) -> u64 {
        self.seen
    }

    /// Bytes of memory the cache holds (allocated once).
    pub fn memory_bytes(&self) -> usize {
        self.k.len() + self.v.len()
    }

    /// Forgets every token; the memory stays allocated.
    pub fn clear(&mut self) {
        self.sinks_filled = 0;
        self.next_epoch = self.cfg.sinks as u64;
        self.first_epoch = self.next_epoch;
        self.seen = 0;
        self.batch.clear();
    }

    /// Keeps epochs small before `n` tokens arrive: rotates the window back by `ring`
    /// positions when needed. [`KvCache::append`] calls it; a caller that takes a
    /// [`KvCache::checkpoint`] calls it first, so a rollback never crosses a rebase.
    pub fn make_room(&mut self, n: usize) {
        while self.next_epoch + n as u64 >= 2 * self.ring as u64 {
            self.rebase();
        }
    }

    /// Takes `n` new tokens: assigns their positions, evicts what falls out of the window, and
    /// prepares the rotations that [`KvCache::store`] and [`KvCache::attend`] apply.
    pub fn append(&mut self, n: usize) -> Result<(), CacheError> {
        if n > self.shape.batch {
            return Err(CacheError::BatchTooLarge {
                n,
                batch: self.shape.batch,
            });
        }
        self.make_room(n);
        self.batch.clear();
        for _ in 0..n {
            let t = if self.sinks_filled < self.cfg.sinks {
                self.sinks_filled += 1;
                NewToken {
                    pos: (self.sinks_filled - 1) as u32,
                    epoch: None,
                    sinks_seen: self.sinks_filled,
                    first_epoch: self.first_epoch,
                }
            } else {
                let e = self.next_epoch;
                self.next_epoch += 1;
                if (self.next_epoch - self.first_epoch) as usize > self.cfg.window {
                    let floor = self.next_epoch - self.cfg.window as u64;
                    self.first_epoch = (self.first_epoch + self.cfg.evict_chunk as u64).max(floor);
                }
                let held = (self.next_epoch - self.first_epoch) as usize;
                NewToken {
                    pos: (self.sinks_filled + held - 1) as u32,
                    epoch: Some(e),
                    sinks_seen: self.sinks_filled,
                    first_epoch: self.first_epoch,
                }
            };
            self.batch.push(t);
        }
        self.seen += n as u64;

        let half = self.shape.rope_dims / 2;
        let dims = self.shape.rope_dims;
        let local_base = self.shape.sliding.as_ref().map(|s| s.rope_base);
        for (angles, base) in [
            (&mut self.angles, Some(self.shape.rope_base)),
            (&mut self.angles_local, local_base),
        ] {
            let Some(base) = base else { continue };
            for (i, t) in self.batch.iter().enumerate() {
                let a = &mut angles[i * 3 * half..(i + 1) * 3 * half];
                let (key, rest) = a.split_at_mut(half);
                let (q_sink, q_win) = rest.split_at_mut(half);
                let key_pos = t.epoch.unwrap_or(t.pos as u64) as u32;
                ops::rope_angles(key_pos, base, dims, key);
                ops::rope_angles(t.pos, base, dims, q_sink);
                q_win.copy_from_slice(key);
            }
        }
        Ok(())
    }

    /// The counters that [`KvCache::append`] moves: enough to undo an append whose forward
    /// pass was abandoned. (Ring slots an append reuses held only evicted tokens, so the
    /// previous contents stay intact.)
    pub fn checkpoint(&self) -> CacheCheckpoint {
        CacheCheckpoint {
            sinks_filled: self.sinks_filled,
            next_epoch: self.next_epoch,
            first_epoch: self.first_epoch,
            seen: self.seen,
        }
    }

    /// Tokens that can be appended before [`KvCache::make_room`] rebases the epochs (which
    /// rounds the held keys once more). Speculative decoding keeps its batches within it, so
    /// that rebases happen at the same token as when decoding one token at a time.
    pub fn appends_before_rebase(&self) -> usize {
        (2 * self.ring as u64).saturating_sub(self.next_epoch + 1) as usize
    }

    /// Returns to a checkpoint taken just before the last [`KvCache::append`].
    pub fn rollback(&mut self, cp: CacheCheckpoint) {
        self.sinks_filled = cp.sinks_filled;
        self.next_epoch = cp.next_epoch;
        self.first_epoch = cp.first_epoch;
        self.seen = cp.seen;
        self.batch.clear();
    }

    /// The cache's contents and counters as bytes, for session files.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.k.len() + self.v.len() + 64);
        for v in [
            self.sinks_filled as u64,
            self.next_epoch,
            self.first_epoch,
            self.seen,
            self.k.len() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.k);
        out.extend_from_slice(&self.v);
        out
    }

    /// Restores contents saved by [`KvCache::snapshot`] from a cache of the same shape and
    /// configuration; anything inconsistent is an error and leaves the cache empty.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.clear();
        let word = |i: usize| -> Result<u64, String> {
            bytes
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| "cache data truncated".to_string())
        };
        let (sinks_filled, next, first, seen, klen) =
            (word(0)?, word(1)?, word(2)?, word(3)?, word(4)?);
        let body = &bytes[40.min(bytes.len())..];
        if klen != self.k.len() as u64 || body.len() != 2 * self.k.len() {
            return Err("cache data of another size".into());
        }
        let window = next.checked_sub(first).ok_or("cache epochs out of order")?;
        if sinks_filled as usize > self.cfg.sinks
            || window as usize > self.cfg.window
            || next >= 2 * self.ring as u64
            || (window > 0 && sinks_filled as usize != self.cfg.sinks)
        {
            return Err("cache counters out of range".into());
        }
        let (k, v) = body.split_at(self.k.len());
        self.k.copy_from_slice(k);
        self.v.copy_from_slice(v);
        self.sinks_filled = sinks_filled as usize;
        self.next_epoch = next;
        self.first_epoch = first;
        self.seen = seen;
        Ok(())
    }

    /// Rotates every window key back by `ring` positions and lowers the epochs to match.
    fn rebase(&mut self) {
        let shift = self.ring as u64;
        let half = self.shape.rope_dims / 2;
        let kv_dim = self.shape.n_head_kv * self.shape.head_dim;
        let mut back = vec![(0.0f32, 0.0f32); half];
        let mut row = vec![0.0f32; kv_dim];
        for layer in 0..self.shape.n_layer {
            ops::rope_angles(
                shift as u32,
                self.rope_base(layer),
                self.shape.rope_dims,
                &mut back,
            );
            for cs in back.iter_mut() {
                cs.1 = -cs.1; // rotate by -shift
            }
            for e in self.first_epoch..self.next_epoch {
                let r = self.row_index(layer, e);
                let bytes = &mut self.k[r * self.row_bytes..(r + 1) * self.row_bytes];
                quant::dequantize(self.ty, bytes, &mut row);
                self.shape.rotate(&mut row, &back);
                quant::quantize(self.ty, &row, bytes);
            }
        }
        self.first_epoch -= shift;
        self.next_epoch -= shift;
    }

    /// The sliding window of `layer`, if it has one.
    fn local_window(&self, layer: usize) -> Option<usize> {
        let s = self.shape.sliding.as_ref()?;
        s.layers
            .get(layer)
            .copied()
            .unwrap_or(false)
            .then_some(s.window)
    }

    /// RoPE base of `layer`.
    fn rope_base(&self, layer: usize) -> f32 {
        match (self.local_window(layer), &self.shape.sliding) {
            (Some(_), Some(s)) => s.rope_base,
            _ => self.shape.rope_base,
        }
    }

    /// The batch's rotation angles for `layer` (see `angles`).
    fn angles_of(&self, layer: usize) -> &[(f32, f32)] {
        match self.local_window(layer) {
            Some(_) => &self.angles_local,
            None => &self.angles,
        }
    }

    /// Row of the whole buffer that holds window epoch `e` of `layer`.
    fn row_index(&self, layer: usize, e: u64) -> usize {
        layer * self.rows + self.cfg.sinks + (e % self.ring as u64) as usize
    }

    /// Row of the whole buffer that holds the token `t` of the current batch.
    fn batch_row(&self, layer: usize, t: &NewToken) -> usize {
        match t.epoch {
            Some(e) => self.row_index(layer, e),
            None => layer * self.rows + t.pos as usize,
        }
    }

    /// Stores the keys (before RoPE: the cache rotates them) and values of the batch's tokens
    /// for `layer`; `k` and `v` are `n × kv_dim`.
    pub fn store(&mut self, layer: usize, k: &mut [f32], v: &[f32]) {
        let kv_dim = self.shape.n_head_kv * self.shape.head_dim;
        let half = self.shape.rope_dims / 2;
        for (i, t) in self.batch.iter().enumerate() {
            let key = &mut k[i * kv_dim..(i + 1) * kv_dim];
            let angles = &self.angles_of(layer)[i * 3 * half..i * 3 * half + half];
            self.shape.rotate(key, angles);
            let r = self.batch_row(layer, t);
            let span = r * self.row_bytes..(r + 1) * self.row_bytes;
            quant::quantize(self.ty, key, &mut self.k[span.clone()]);
            quant::quantize(self.ty, &v[i * kv_dim..(i + 1) * kv_dim], &mut self.v[span]);
        }
    }

    /// Tokens that token `i` of the batch attends to (sinks, then window), for sizing scores.
    pub fn seen_by(&self, i: usize) -> usize {
        let t = &self.batch[i];
        t.sinks_seen + t.epoch.map_or(0, |e| (e + 1 - t.first_epoch) as usize)
    }

    /// Causal attention of the batch's queries (`n × n_head × head_dim`, before RoPE: rotated
    /// here) over what each token sees, written to `out` (same shape). `qbuf` needs
    /// `n × n_head × head_dim × 2` floats.
    ///
    /// One task per KV head and block of tokens (a flash-attention tile): each block of keys
    /// and values is widened to f32 once and serves all the query heads of the group for all
    /// the tokens of the block, with an online softmax; nothing of size `capacity` is
    /// allocated per query.
    pub fn attend(&self, layer: usize, q: &[f32], out: &mut [f32], qbuf: &mut [f32]) {
        use rayon::prelude::*;
        let sh = &self.shape;
        let hd = sh.head_dim;
        let half = sh.rope_dims / 2;
        let q_dim = sh.n_head * hd;
        let n = self.batch.len();
        let scale = sh.attn_scale;
        let angles = self.angles_of(layer);

        // The two rotations of each query: at its cache position (for sinks) and at its
        // epoch; both scaled by 1/√d here rather than every score later. Against f16 keys
        // the query is rounded to f16 as ggml rounds it (its logits track llama.cpp's a
        // little closer: mean KL 0.0044 rather than 0.0046 in `logits_parity`).
        let round = |v: f32| match self.ty {
            GgmlType::F16 => half::f16::from_f32(v).to_f32(),
            _ => v,
        };
        for i in 0..n {
            let a = &angles[i * 3 * half..(i + 1) * 3 * half];
            let qi = &q[i * q_dim..(i + 1) * q_dim];
            let (qs, qw) = qbuf[i * 2 * q_dim..(i + 1) * 2 * q_dim].split_at_mut(q_dim);
            for (x, angles) in [(qs, &a[half..2 * half]), (qw, &a[2 * half..])] {
                x.copy_from_slice(qi);
                sh.rotate(x, angles);
                x.iter_mut().for_each(|v| *v = round(*v * scale));
            }
        }
        let qbuf: &[f32] = qbuf;

        let group = sh.n_head / sh.n_head_kv;
        let block = (TILE_QUERIES / group).max(1);
        let blocks = n.div_ceil(block);
        let tiles: Vec<Vec<f32>> = (0..sh.n_head_kv * blocks)
            .into_par_iter()
            .map(|task| {
                let (g, b) = (task / blocks, task % blocks);
                let tile = Tile {
                    cache: self,
                    layer,
                    kv_head: g,
                    heads: g * group..(g + 1) * group,
                    qbuf,
                };
                tile.run(b * block..((b + 1) * block).min(n))
            })
            .collect();
        // Each tile holds its group's heads for its block's tokens, token after token.
        for (task, o) in tiles.iter().enumerate() {
            let (g, b) = (task / blocks, task % blocks);
            for (i, oi) in (b * block..).zip(o.chunks_exact(group * hd)) {
                let at = i * q_dim + g * group * hd;
                out[at..at + oi.len()].copy_from_slice(oi);
            }
        }
    }
}

/// Query vectors (tokens × heads of one KV group) that one attention task carries.
const TILE_QUERIES: usize = 48;
/// Keys scored at once by each query of a tile before the online-softmax update.
const TILE_KEYS: usize = 32;

/// One attention task: the query heads `heads`, which share KV head `kv_head`, for a block
/// of the batch's tokens, in one layer.
struct Tile<'a> {
    cache: &'a KvCache,
    layer: usize,
    kv_head: usize,
    heads: Range<usize>,
    /// The rotated, scaled queries (see [`KvCache::attend`]).
    qbuf: &'a [f32],
}

impl Tile<'_> {
    /// Attention outputs of `tokens` (token-major, then head), over blocks of [`TILE_KEYS`]
    /// keys with a running maximum and sum per query (online softmax).
    fn run(&self, tokens: Range<usize>) -> Vec<f32> {
        let c = self.cache;
        let hd = c.shape.head_dim;
        let q_dim = c.shape.n_head * hd;
        let batch = &c.batch[tokens.clone()];
        let nq = batch.len() * self.heads.len();
        let mut o = vec![0.0f32; nq * hd];
        let mut max = vec![f32::NEG_INFINITY; nq];
        let mut sum = vec![0.0f32; nq];

        // The block's keys in order: sinks (cache rows 0..sinks), then the window's epochs.
        // What each token sees is a range of them for its sinks and one for its window.
        let sinks = batch.iter().map(|t| t.sinks_seen).max().unwrap_or(0);
        let epochs = epochs_seen(batch);
        let total = sinks + (epochs.end - epochs.start) as usize;
        // A sliding window hides keys `local` or more positions behind the query: sink `j`
        // sits at position `j`, the query at `t.pos`; window distances are epoch distances.
        let local = c.local_window(self.layer);
        let seen = |t: &NewToken| -> (Range<usize>, Range<usize>) {
            let (first_sink, first_epoch) = match local {
                Some(w) => (
                    (t.pos as usize + 1).saturating_sub(w).min(t.sinks_seen),
                    t.epoch.map_or(t.first_epoch, |e| {
                        t.first_epoch.max((e + 1).saturating_sub(w as u64))
                    }),
                ),
                None => (0, t.first_epoch),
            };
            let window = t.epoch.map_or(0..0, |e| {
                sinks + (first_epoch - epochs.start) as usize
                    ..sinks + (e + 1 - epochs.start) as usize
            });
            (first_sink..t.sinks_seen, window)
        };
        // Slice of this KV head in a cached row: whole blocks (q8_0 needs 32 | head_dim).
        let head_bytes = c.row_bytes / c.shape.n_head_kv;
        let bytes_of = |j: usize| -> Range<usize> {
            let row = if j < sinks {
                self.layer * c.rows + j
            } else {
                c.row_index(self.layer, epochs.start + (j - sinks) as u64)
            };
            let at = row * c.row_bytes + self.kv_head * head_bytes;
            at..at + head_bytes
        };

        let mut kt = vec![0.0f32; TILE_KEYS * hd];
        let mut vt = vec![0.0f32; TILE_KEYS * hd];
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
        for (ov, &s) in o.chunks_exact_mut(hd).zip(&sum) {
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            ov.iter_mut().for_each(|x| *x *= inv);
        }
        o
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for test data.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    fn shape(batch: usize) -> CacheShape {
        CacheShape {
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 32,
            rope_base: 10_000.0,
            rope_dims: 32,
            rope_style: RopeStyle::Norm,
            attn_scale: 1.0 / 32f32.sqrt(),
            sliding: None,
            batch,
        }
    }

    /// The paper's semantics written out plainly: the tokens held are listed explicitly, keys
    /// are kept unrotated and rotated at their rank in the list on every use.
    struct Reference {
        sinks: Vec<(Vec<f32>, Vec<f32>)>,
        window: std::collections::VecDeque<(Vec<f32>, Vec<f32>)>,
    }

    impl Reference {
        fn push(&mut self, cfg: &CacheConfig, k: Vec<f32>, v: Vec<f32>) {
            if self.sinks.len() < cfg.sinks {
                self.sinks.push((k, v));
                return;
            }
            self.window.push_back((k, v));
            if self.window.len() > cfg.window {
                let drop = cfg.evict_chunk.max(self.window.len() - cfg.window);
                self.window.drain(..drop);
            }
        }

        /// Attention of `q` (one token, all heads, unrotated) placed after everything held.
        fn attend(&self, sh: &CacheShape, q: &[f32]) -> Vec<f32> {
            let hd = sh.head_dim;
            let held: Vec<_> = self.sinks.iter().chain(self.window.iter()).collect();
            let rot = |x: &[f32], pos: usize| {
                let mut x = x.to_vec();
                let mut cs = vec![(0.0, 0.0); sh.rope_dims / 2];
                ops::rope_angles(pos as u32, sh.rope_base, sh.rope_dims, &mut cs);
                ops::rope_norm(&mut x, hd, &cs);
                x
            };
            let qr = rot(q, held.len() - 1);
            let keys: Vec<Vec<f32>> = held
                .iter()
                .enumerate()
                .map(|(p, (k, _))| rot(k, p))
                .collect();
            let group = sh.n_head / sh.n_head_kv;
            let mut out = vec![0.0; sh.n_head * hd];
            for h in 0..sh.n_head {
                let off = (h / group) * hd;
                let qh = &qr[h * hd..(h + 1) * hd];
                let mut s: Vec<f32> = keys
                    .iter()
                    .map(|k| {
                        let d: f32 = qh.iter().zip(&k[off..off + hd]).map(|(a, b)| a * b).sum();
                        d / (hd as f32).sqrt()
                    })
                    .collect();
                ops::softmax(&mut s);
                for (p, (_, v)) in s.iter().zip(&held) {
                    for d in 0..hd {
                        out[h * hd + d] += p * v[off + d];
                    }
                }
            }
            out
        }
    }

    /// Streams `total` tokens in batches of `batch` through a cache and the reference, and
    /// compares every attention output; returns the largest difference.
    fn stream(cfg: CacheConfig, batch: usize, total: usize) -> f32 {
        let sh = shape(batch);
        let mut cache = KvCache::new(cfg.clone(), sh.clone()).unwrap();
        let bytes = cache.memory_bytes();
        let mut refs: Vec<Reference> = (0..sh.n_layer)
            .map(|_| Reference {
                sinks: vec![],
                window: Default::default(),
            })
            .collect();
        let (kv_dim, q_dim) = (sh.n_head_kv * sh.head_dim, sh.n_head * sh.head_dim);
        let mut rng = Lcg(7);
        let mut worst = 0.0f32;
        let mut done = 0;
        while done < total {
            let n = batch.min(total - done);
            cache.append(n).unwrap();
            for (l, r) in refs.iter_mut().enumerate() {
                let mut k = rng.vec(n * kv_dim);
                let v = rng.vec(n * kv_dim);
                let q = rng.vec(n * q_dim);
                let k_orig = k.clone();
                cache.store(l, &mut k, &v);
                let mut out = vec![0.0; n * q_dim];
                let mut qbuf = vec![0.0; n * 2 * q_dim];
                cache.attend(l, &q, &mut out, &mut qbuf);
                for t in 0..n {
                    let kt = k_orig[t * kv_dim..(t + 1) * kv_dim].to_vec();
                    r.push(&cfg, kt, v[t * kv_dim..(t + 1) * kv_dim].to_vec());
                    let want = r.attend(&sh, &q[t * q_dim..(t + 1) * q_dim]);
                    for (a, b) in out[t * q_dim..(t + 1) * q_dim].iter().zip(&want) {
                        worst = worst.max((a - b).abs());
                    }
                }
            }
            done += n;
            assert!(cache.len() <= cfg.capacity());
            assert_eq!(cache.memory_bytes(), bytes, "the cache never grows");
        }
        assert_eq!(cache.tokens_seen(), total as u64);
        worst
    }

    #[test]
    fn sinks_and_window_match_the_papers_positions() {
        let cfg = CacheConfig {
            sinks: 3,
            window: 7,
            kv_type: KvType::F32,
            evict_chunk: 1,
        };
        // 200 tokens pass many evictions and several epoch rebases (ring = 7 + 4).
        for batch in [1, 4] {
            let worst = stream(cfg.clone(), batch, 200);
            assert!(worst < 1e-4, "batch {batch}: max difference {worst}");
        }
    }

    #[test]
    fn blocks_of_tokens_and_keys_are_exact() {
        // Batches longer than one task's block of tokens (24 here) and windows longer than
        // one block of keys (32), so tiles split tokens, keys, sinks and window.
        let cfg = CacheConfig {
            sinks: 4,
            window: 70,
            kv_type: KvType::F32,
            evict_chunk: 1,
        };
        let worst = stream(cfg, 30, 250);
        assert!(worst < 1e-4, "max difference {worst}");
        let dense = CacheConfig {
            kv_type: KvType::F32,
            ..CacheConfig::dense(120)
        };
        assert!(stream(dense, 50, 120) < 1e-4);
    }

    #[test]
    fn rollback_undoes_an_append() {
        let cfg = CacheConfig {
            sinks: 2,
            window: 5,
            kv_type: KvType::F32,
            evict_chunk: 1,
        };
        let mut cache = KvCache::new(cfg, shape(3)).unwrap();
        for _ in 0..40 {
            cache.make_room(3);
            let cp = cache.checkpoint();
            let before = (
                cache.len(),
                cache.tokens_seen(),
                cache.next_epoch,
                cache.first_epoch,
            );
            cache.append(3).unwrap();
            let positions: Vec<u32> = cache.batch.iter().map(|t| t.pos).collect();
            cache.rollback(cp);
            assert_eq!(
                (
                    cache.len(),
                    cache.tokens_seen(),
                    cache.next_epoch,
                    cache.first_epoch
                ),
                before
            );
            cache.append(3).unwrap();
            let again: Vec<u32> = cache.batch.iter().map(|t| t.pos).collect();
            assert_eq!(positions, again);
        }
    }

    #[test]
    fn chunked_eviction_is_exact() {
        let cfg = CacheConfig {
            sinks: 2,
            window: 9,
            kv_type: KvType::F32,
            evict_chunk: 4,
        };
        let worst = stream(cfg, 3, 150);
        assert!(worst < 1e-4, "max difference {worst}");
    }

    #[test]
    fn window_without_sinks_and_dense() {
        let window = CacheConfig {
            sinks: 0,
            window: 6,
            kv_type: KvType::F32,
            evict_chunk: 1,
        };
        assert!(stream(window, 2, 60) < 1e-4);
        let dense = CacheConfig {
            kv_type: KvType::F32,
            ..CacheConfig::dense(40)
        };
        assert!(stream(dense, 5, 40) < 1e-4);
    }

    #[test]
    fn f16_and_q8_0_stay_close() {
        for kv_type in [KvType::F16, KvType::Q8_0] {
            let cfg = CacheConfig {
                sinks: 2,
                window: 8,
                kv_type,
                evict_chunk: 1,
            };
            let worst = stream(cfg, 3, 80);
            assert!(worst < 0.05, "{kv_type:?}: max difference {worst}");
        }
    }

    #[test]
    fn positions_stay_bounded_over_ten_million_tokens() {
        let cfg = CacheConfig {
            sinks: 4,
            window: 60,
            kv_type: KvType::F32,
            evict_chunk: 1,
        };
        let sh = CacheShape {
            n_layer: 1,
            batch: 64,
            ..shape(64)
        };
        let mut cache = KvCache::new(cfg.clone(), sh).unwrap();
        let bound = 2 * (cfg.window + 64) as u64;
        for _ in 0..10_000_000 / 64 {
            cache.append(64).unwrap();
            assert!(cache.next_epoch < bound);
            assert!(cache.batch.iter().all(|t| t.pos < cfg.capacity() as u32));
        }
        assert_eq!(cache.len(), cfg.capacity());
        assert!(cache.tokens_seen() >= 9_999_000);
    }
}
