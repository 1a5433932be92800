//! The key/value cache of a session: the StreamingLLM attention-sink cache (Xiao et al. 2023,
//! "Efficient Streaming Language Models with Attention Sinks", arXiv 2309.17453), and, for
//! models with sliding-window layers (Gemma 3), a ring of the trained window for those.
//!
//! The global layers' cache holds the first `sinks` tokens for ever, plus a rolling window of
//! the most recent `window` tokens. While the text fits, it is an ordinary cache. Positions
//! are assigned inside the cache (paper §3.2): a token's position is its rank among the
//! tokens held, so a sink at slot `j` has position `j`, and the query of a new token sits
//! right after the tokens it sees. Local (sliding-window) layers need exactly their last
//! `W_swa` tokens at the distances they were trained with: they get a ring of their own, no
//! sinks and a window of `W_swa`, whatever the global layers keep. Both rings advance
//! together, token by token, through the same bookkeeping ([`ring`]).
//!
//! RoPE stays exact under eviction without re-rotating the window on every token. Keys are
//! stored rotated: sinks at their positions `0..sinks`, window tokens at an *epoch*, a counter
//! that advances by one per token. Window tokens are always consecutive in the text, so the
//! distance between two epochs is the distance between the two tokens' cache positions; since
//! a RoPE score depends only on that distance, the query is rotated twice: at its cache position
//! for the sinks, at its epoch for the window. Epochs stay below `2 × slots` (the slots being
//! the window's storage): when they would pass it, every held window key is rotated back by
//! `slots` positions at once (rotations compose) and the epochs drop by `slots`. Angles are
//! therefore always those of positions below a small bound, however long the stream runs.
//!
//! Eviction happens per token, or in chunks of `evict_chunk` tokens on the global layers (the
//! window then drops to `window - evict_chunk + 1` tokens when it overflows); both are exact.
//! Memory is allocated once, when the cache is made, and never grows: `sinks + window + batch`
//! rows per global layer and `W_swa + batch` per local layer, the `batch` extra rows letting
//! every token of a batch see its whole window and keeping what an append evicts until the
//! next one (so a cancelled batch rolls back exactly).
//!
//! Files: [`config`] (configuration, shape, types, errors), [`ring`] (positions, eviction,
//! rebasing, checkpoints), [`attend`] (storing keys and the tiled attention), [`snapshot`]
//! (contents as bytes for session files).

mod attend;
mod config;
mod ring;
mod snapshot;
#[cfg(test)]
mod tests;

pub use config::{CacheConfig, CacheError, CacheShape, KvType, RopeStyle, SlidingWindow};
pub use ring::CacheCheckpoint;

use config::{zeroed, MAX_HEAD_DIM};
use ring::{Kind, Ring};
use tern_kernels::GgmlType;

/// The KV cache of every layer: the attention-sink cache on global layers, a ring of the
/// trained window on local ones.
pub struct KvCache {
    cfg: CacheConfig,
    shape: CacheShape,
    ty: GgmlType,
    /// Bytes of one token's keys (or values) in one layer.
    row_bytes: usize,
    /// The global layers' bookkeeping (sinks + window).
    global: Ring,
    /// The local layers' bookkeeping (a window of `W_swa`), if the model has such layers.
    local: Option<Ring>,
    /// Per layer: its kind and its first row in `k` and `v`.
    layers: Vec<(Kind, usize)>,
    k: Vec<u8>,
    v: Vec<u8>,
    /// Tokens ever appended (after [`KvCache::clear`]).
    seen: u64,
    /// Scratch of the attention tasks, [`attend::tile_floats`] each for as many tasks as a
    /// full batch makes: sized once, so that no forward pass allocates.
    tiles: Vec<f32>,
    /// Scratch of a rebase: one row of keys and its rotation.
    rebase_row: Vec<f32>,
    rebase_angles: Vec<(f32, f32)>,
}

/// Memory of a cache by layer kind, in bytes (keys and values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheMemory {
    pub global_layers: usize,
    /// Bytes of one global layer.
    pub global_bytes_per_layer: usize,
    pub local_layers: usize,
    /// Bytes of one local layer.
    pub local_bytes_per_layer: usize,
}

impl KvCache {
    /// Allocates the whole cache.
    pub fn new(cfg: CacheConfig, mut shape: CacheShape) -> Result<KvCache, CacheError> {
        shape.max_batch = shape.max_batch.max(shape.batch);
        if shape.head_dim > MAX_HEAD_DIM {
            return Err(CacheError::HeadTooLarge(shape.head_dim));
        }
        let ty = cfg.kv_type.ggml();
        if ty == GgmlType::Q8_0 && !shape.head_dim.is_multiple_of(32) {
            return Err(CacheError::Q8HeadSize(shape.head_dim));
        }
        let kv_dim = shape.n_head_kv * shape.head_dim;
        let row_bytes = ty.bytes_for(kv_dim as u64).expect("whole blocks") as usize;
        let dims = shape.rope_dims;
        let batch = (shape.batch, shape.max_batch);
        let global = Ring::new(
            cfg.sinks,
            cfg.window,
            cfg.evict_chunk,
            batch,
            shape.rope_base,
            shape.rope_factors.clone(),
            dims,
        )?;
        let local = match &shape.sliding {
            Some(s) if s.layers.iter().any(|&l| l) => {
                let factors = shape.rope_factors.clone();
                Some(Ring::new(
                    0,
                    s.window,
                    1,
                    batch,
                    s.rope_base,
                    factors,
                    dims,
                )?)
            }
            _ => None,
        };
        let too_large = || CacheError::TooLarge {
            sinks: cfg.sinks,
            window: cfg.window,
        };
        let mut layers = Vec::with_capacity(shape.n_layer);
        let mut rows = 0usize;
        for l in 0..shape.n_layer {
            let (kind, n) = match (&local, shape.is_local(l)) {
                (Some(r), true) => (Kind::Local, r.rows()),
                _ => (Kind::Global, global.rows()),
            };
            layers.push((kind, rows));
            rows = rows.checked_add(n).ok_or_else(too_large)?;
        }
        // Checked: sizes may come from a file.
        let total = rows
            .checked_mul(row_bytes)
            .filter(|&b| b <= isize::MAX as usize / 2)
            .ok_or_else(too_large)?;
        Ok(KvCache {
            ty,
            row_bytes,
            global,
            local,
            layers,
            k: zeroed(total).ok_or_else(too_large)?,
            v: zeroed(total).ok_or_else(too_large)?,
            seen: 0,
            tiles: vec![0.0; attend::tile_tasks(&shape) * attend::tile_floats(&shape)],
            rebase_row: vec![0.0; kv_dim],
            rebase_angles: vec![(0.0, 0.0); shape.rope_dims / 2],
            cfg,
            shape,
        })
    }

    /// The global layers' configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The local layers' window, if the model has local layers.
    pub fn local_window(&self) -> Option<usize> {
        self.local.as_ref().map(|r| r.window)
    }

    /// Tokens held now (by the global layers; local layers hold the last `W_swa` of them).
    pub fn len(&self) -> usize {
        self.global.len()
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

    /// The memory by layer kind.
    pub fn memory(&self) -> CacheMemory {
        let per = |r: &Ring| 2 * r.rows() * self.row_bytes;
        let local_layers = self.layers.iter().filter(|l| l.0 == Kind::Local).count();
        CacheMemory {
            global_layers: self.layers.len() - local_layers,
            global_bytes_per_layer: per(&self.global),
            local_layers,
            local_bytes_per_layer: self.local.as_ref().map_or(0, per),
        }
    }

    /// Forgets every token; the memory stays allocated.
    pub fn clear(&mut self) {
        self.global.clear();
        if let Some(r) = &mut self.local {
            r.clear();
        }
        self.seen = 0;
    }

    /// The ring of a layer kind.
    fn ring(&self, kind: Kind) -> &Ring {
        match kind {
            Kind::Global => &self.global,
            Kind::Local => self.local.as_ref().expect("local layers have a ring"),
        }
    }

    /// The global ring, then the local one if there is one.
    fn rings(&self) -> impl Iterator<Item = &Ring> {
        std::iter::once(&self.global).chain(self.local.as_ref())
    }

    /// The ring of a layer kind, if the cache has it.
    fn ring_opt(&self, kind: Kind) -> Option<&Ring> {
        match kind {
            Kind::Global => Some(&self.global),
            Kind::Local => self.local.as_ref(),
        }
    }
}
