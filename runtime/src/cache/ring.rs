//! Eviction bookkeeping, the same for both layer kinds: a [`Ring`] holds `sinks` first
//! tokens for ever and the last `window` tokens in `window + batch` slots, assigns positions
//! and epochs, and keeps epochs bounded by rebasing. The global layers have one ring (the
//! attention-sink cache), the local layers of a sliding-window model another (no sinks, a
//! window of the trained size); both advance together, one token at a time.

use tern_kernels::{ops, quant};

use super::config::CacheError;
use super::KvCache;

/// Where one token of the batch being processed stands in one ring.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct NewToken {
    /// Its position in the cache: where its query is rotated for the sinks.
    pub pos: u32,
    /// Its epoch if it is a window token (where its key and its window query are rotated).
    pub epoch: Option<u64>,
    /// Sinks it sees.
    pub sinks_seen: usize,
    /// First epoch of the window it sees (up to its own).
    pub first_epoch: u64,
}

/// The counters of a ring that an append moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counters {
    /// Sinks filled so far.
    pub sinks_filled: usize,
    /// Epoch of the next window token.
    pub next_epoch: u64,
    /// Epoch of the oldest window token held.
    pub first_epoch: u64,
}

/// Counters of a cache before an append; see [`KvCache::checkpoint`].
#[derive(Clone, Copy, Debug)]
pub struct CacheCheckpoint {
    global: Counters,
    local: Option<Counters>,
    seen: u64,
}

/// The bookkeeping of one layer kind.
pub(super) struct Ring {
    pub sinks: usize,
    pub window: usize,
    pub evict_chunk: usize,
    /// Window storage: epoch `e` lives in slot `e % slots`; `window + batch` slots, so that
    /// every token of a batch sees its whole window and an append only overwrites tokens
    /// evicted before it (what makes a rollback exact).
    pub slots: usize,
    /// RoPE base of this kind's layers.
    pub rope_base: f32,
    /// Per-frequency divisors of the angles ([`super::CacheShape::rope_factors`]).
    pub rope_factors: Option<Vec<f32>>,
    pub c: Counters,
    /// The batch being processed, set by [`Ring::advance`].
    pub batch: Vec<NewToken>,
    /// Rotation angles per token of the batch: key, query for sinks, query for the window.
    pub angles: Vec<(f32, f32)>,
}

impl Ring {
    /// A ring of `sinks` and `window` tokens, with rows for batches of `batch.0` tokens
    /// and scratch for batches of `batch.1` (see [`super::CacheShape::max_batch`]).
    pub fn new(
        sinks: usize,
        window: usize,
        evict_chunk: usize,
        batch: (usize, usize),
        rope_base: f32,
        rope_factors: Option<Vec<f32>>,
        rope_dims: usize,
    ) -> Result<Ring, CacheError> {
        if window == 0 {
            return Err(CacheError::EmptyWindow);
        }
        if evict_chunk == 0 || evict_chunk > window {
            return Err(CacheError::BadEvictChunk {
                chunk: evict_chunk,
                window,
            });
        }
        // Checked: sizes may come from a file, and a wrapped size would make a small ring
        // that claims a huge window. Epochs run up to `2 × slots` in a u64, positions in a u32.
        let (batch, max_batch) = batch;
        let slots = window
            .checked_add(batch.max(1))
            .filter(|&s| {
                sinks
                    .checked_add(s)
                    .is_some_and(|r| u32::try_from(r).is_ok())
            })
            .ok_or(CacheError::TooLarge { sinks, window })?;
        let half = rope_dims / 2;
        Ok(Ring {
            sinks,
            window,
            evict_chunk,
            slots,
            rope_base,
            rope_factors,
            c: Counters {
                sinks_filled: 0,
                next_epoch: sinks as u64,
                first_epoch: sinks as u64,
            },
            batch: Vec::with_capacity(max_batch),
            angles: vec![(0.0, 0.0); max_batch * 3 * half],
        })
    }

    /// Rows per layer: sinks, then the window's slots.
    pub fn rows(&self) -> usize {
        self.sinks + self.slots
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.c.sinks_filled + (self.c.next_epoch - self.c.first_epoch) as usize
    }

    pub fn clear(&mut self) {
        self.c = Counters {
            sinks_filled: 0,
            next_epoch: self.sinks as u64,
            first_epoch: self.sinks as u64,
        };
        self.batch.clear();
    }

    /// Tokens an append can take without overwriting a slot that a token of the batch
    /// needs and without a rebase: its free sinks and free window slots, and the epochs
    /// left before `2 × slots`.
    fn free(&self) -> usize {
        let held = (self.c.next_epoch - self.c.first_epoch) as usize;
        let rows = (self.sinks - self.c.sinks_filled) + (self.slots - held);
        rows.min(self.epochs_left())
    }

    /// Tokens that can be appended before epochs reach `2 × slots` and a rebase is due.
    fn epochs_left(&self) -> usize {
        let left = (2 * self.slots as u64).saturating_sub(self.c.next_epoch + 1);
        usize::try_from(left).unwrap_or(usize::MAX)
    }

    /// True when `n` more tokens would take epochs past `2 × slots`.
    pub fn needs_rebase(&self, n: usize) -> bool {
        self.c.next_epoch + n as u64 >= 2 * self.slots as u64
    }

    /// Takes `n` new tokens: assigns their positions and epochs, evicts what falls out of the
    /// window, and computes the batch's rotation angles.
    pub fn advance(&mut self, n: usize, rope_dims: usize) {
        self.batch.clear();
        let c = &mut self.c;
        for _ in 0..n {
            let t = if c.sinks_filled < self.sinks {
                c.sinks_filled += 1;
                NewToken {
                    pos: (c.sinks_filled - 1) as u32,
                    epoch: None,
                    sinks_seen: c.sinks_filled,
                    first_epoch: c.first_epoch,
                }
            } else {
                let e = c.next_epoch;
                c.next_epoch += 1;
                if (c.next_epoch - c.first_epoch) as usize > self.window {
                    let floor = c.next_epoch - self.window as u64;
                    c.first_epoch = (c.first_epoch + self.evict_chunk as u64).max(floor);
                }
                let held = (c.next_epoch - c.first_epoch) as usize;
                NewToken {
                    pos: (c.sinks_filled + held - 1) as u32,
                    epoch: Some(e),
                    sinks_seen: c.sinks_filled,
                    first_epoch: c.first_epoch,
                }
            };
            self.batch.push(t);
        }
        let half = rope_dims / 2;
        for (t, a) in self
            .batch
            .iter()
            .zip(self.angles.chunks_exact_mut(3 * half))
        {
            let (key, rest) = a.split_at_mut(half);
            let (q_sink, q_win) = rest.split_at_mut(half);
            let key_pos = t.epoch.unwrap_or(t.pos as u64) as u32;
            angles(self.rope_base, &self.rope_factors, key_pos, rope_dims, key);
            angles(self.rope_base, &self.rope_factors, t.pos, rope_dims, q_sink);
            q_win.copy_from_slice(key);
        }
    }

    /// Row of a layer (its rows starting at `first_row`) that holds window epoch `e`.
    pub fn row_of_epoch(&self, first_row: usize, e: u64) -> usize {
        first_row + self.sinks + (e % self.slots as u64) as usize
    }

    /// Row of a layer that holds token `t` of the current batch.
    pub fn row_of_new(&self, first_row: usize, t: &NewToken) -> usize {
        match t.epoch {
            Some(e) => self.row_of_epoch(first_row, e),
            None => first_row + t.pos as usize,
        }
    }

    /// Checks counters read from a file against this ring's sizes.
    pub fn valid(&self, c: &Counters) -> bool {
        c.next_epoch >= c.first_epoch
            && c.sinks_filled <= self.sinks
            && c.next_epoch - c.first_epoch <= self.window as u64
            && c.next_epoch < 2 * self.slots as u64
            && (c.next_epoch == c.first_epoch || c.sinks_filled == self.sinks)
    }
}

/// Which ring a layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Global,
    Local,
}

impl KvCache {
    /// Tokens that can be appended before [`KvCache::make_room`] rebases the epochs of
    /// either ring (which rounds the held keys once more). Speculative decoding keeps its
    /// batches within it, so that rebases happen at the same token as when decoding one
    /// token at a time.
    pub fn appends_before_rebase(&self) -> usize {
        self.rings().map(Ring::epochs_left).min().unwrap_or(0)
    }

    /// Tokens the next append can take: [`CacheShape::batch`](super::CacheShape::batch)
    /// always, and up to [`CacheShape::max_batch`](super::CacheShape::max_batch) while every
    /// ring has that many free rows and epochs (a batch larger than the rows kept for one
    /// must not overwrite a token that it, or a rollback, still needs).
    pub fn max_append(&self) -> usize {
        let free = self.rings().map(Ring::free).min().unwrap_or(0);
        free.clamp(self.shape.batch, self.shape.max_batch)
    }

    fn check_batch(&self, n: usize) -> Result<(), CacheError> {
        let batch = self.max_append();
        if n > batch {
            return Err(CacheError::BatchTooLarge { n, batch });
        }
        Ok(())
    }

    /// Keeps epochs small before `n` tokens arrive: rotates a ring's window back by its
    /// slot count when needed. [`KvCache::open`] calls it; a caller that takes a
    /// [`KvCache::checkpoint`] itself calls it first, so a rollback never crosses a rebase.
    pub fn make_room(&mut self, n: usize) {
        for kind in [Kind::Global, Kind::Local] {
            while self.ring_opt(kind).is_some_and(|r| r.needs_rebase(n)) {
                self.rebase(kind);
            }
        }
    }

    /// Takes `n` new tokens in every ring: assigns their positions, evicts what falls out of
    /// the windows, and prepares the rotations that [`KvCache::store`] and
    /// [`KvCache::attend`] apply.
    pub fn append(&mut self, n: usize) -> Result<(), CacheError> {
        self.check_batch(n)?;
        self.make_room(n);
        self.advance(n);
        Ok(())
    }

    /// [`KvCache::append`] once checked and with room made.
    fn advance(&mut self, n: usize) {
        let dims = self.shape.rope_dims;
        self.global.advance(n, dims);
        if let Some(local) = &mut self.local {
            local.advance(n, dims);
        }
        self.seen += n as u64;
    }

    /// Opens room for a batch of `n` tokens and appends them, in one call: what a forward
    /// pass needs. Returns the checkpoint that undoes the append.
    pub fn open(&mut self, n: usize) -> Result<CacheCheckpoint, CacheError> {
        self.check_batch(n)?;
        self.make_room(n);
        let cp = self.checkpoint();
        self.advance(n);
        Ok(cp)
    }

    /// The counters that [`KvCache::append`] moves: enough to undo an append (of any
    /// number of tokens up to the batch) whose forward pass was abandoned. Slots an append
    /// reuses held only tokens evicted before it, so the previous contents stay intact.
    pub fn checkpoint(&self) -> CacheCheckpoint {
        CacheCheckpoint {
            global: self.global.c,
            local: self.local.as_ref().map(|r| r.c),
            seen: self.seen,
        }
    }

    /// Returns to a checkpoint taken just before the last [`KvCache::append`].
    pub fn rollback(&mut self, cp: CacheCheckpoint) {
        self.global.c = cp.global;
        self.global.batch.clear();
        if let (Some(r), Some(c)) = (&mut self.local, cp.local) {
            r.c = c;
            r.batch.clear();
        }
        self.seen = cp.seen;
    }

    /// Rotates every window key of the layers of `kind` back by the ring's slot count and
    /// lowers its epochs to match. Rotations compose, so this is exact.
    fn rebase(&mut self, kind: Kind) {
        let ring = match kind {
            Kind::Global => &self.global,
            Kind::Local => self.local.as_ref().expect("a local ring"),
        };
        let shift = ring.slots as u64;
        // The cache's scratch, taken out (an empty Vec allocates nothing) and put back.
        let mut back = std::mem::take(&mut self.rebase_angles);
        let mut row = std::mem::take(&mut self.rebase_row);
        angles(
            ring.rope_base,
            &ring.rope_factors,
            shift as u32,
            self.shape.rope_dims,
            &mut back,
        );
        for cs in back.iter_mut() {
            cs.1 = -cs.1; // rotate by -shift
        }
        for &(k, first_row) in &self.layers {
            if k != kind {
                continue;
            }
            for e in ring.c.first_epoch..ring.c.next_epoch {
                let r = ring.row_of_epoch(first_row, e);
                let bytes = &mut self.k[r * self.row_bytes..(r + 1) * self.row_bytes];
                quant::dequantize(self.ty, bytes, &mut row);
                self.shape.rotate(&mut row, &back);
                quant::quantize(self.ty, &row, bytes);
            }
        }
        let ring = match kind {
            Kind::Global => &mut self.global,
            Kind::Local => self.local.as_mut().expect("a local ring"),
        };
        ring.c.first_epoch -= shift;
        ring.c.next_epoch -= shift;
        self.rebase_angles = back;
        self.rebase_row = row;
    }
}

/// The RoPE angles of position `pos`: [`ops::rope_angles`], or with per-frequency `factors`
/// each angle divided by its factor, computed as ggml's `rope_ext` does (θᵢ = pos ·
/// base^(-2i/dims) / factorᵢ, the base power taken by repeated f32 products).
pub(super) fn angles(
    base: f32,
    factors: &Option<Vec<f32>>,
    pos: u32,
    dims: usize,
    out: &mut [(f32, f32)],
) {
    let Some(factors) = factors else {
        return ops::rope_angles(pos, base, dims, out);
    };
    let theta_scale = base.powf(-2.0 / dims as f32);
    let mut theta = pos as f32;
    for (cs, &f) in out.iter_mut().take(dims / 2).zip(factors) {
        let t = theta / f;
        *cs = (t.cos(), t.sin());
        theta *= theta_scale;
    }
}
