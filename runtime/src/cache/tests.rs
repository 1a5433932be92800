//! The cache against plain re-implementations of what each layer kind should see: the
//! paper's positions for the global layers (sinks + window), the trained sliding window at
//! true positions for the local layers.

use super::*;
use std::collections::VecDeque;
use tern_kernels::ops;

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
        rope_factors: None,
        rope_style: RopeStyle::Norm,
        attn_scale: 1.0 / 32f32.sqrt(),
        sliding: None,
        batch,
        max_batch: batch,
    }
}

/// What one layer of the reference holds: every token so far, unrotated, with its index in
/// the text.
type Held = (usize, Vec<f32>, Vec<f32>);

/// The semantics of each layer kind written out plainly: the tokens a layer sees are listed
/// explicitly, keys are kept unrotated and rotated at their position on every use.
///
/// - A global layer (the paper): the first `sinks` tokens and the last `window` (evicting
///   `evict_chunk` at a time), at their rank in that list.
/// - A local layer: every token kept, and a query sees those less than `W_swa` behind it, at
///   their true positions in the text (no ring, no epochs).
struct Reference {
    local: Option<(usize, f32)>,
    sinks: Vec<Held>,
    window: VecDeque<Held>,
}

impl Reference {
    fn push(&mut self, cfg: &CacheConfig, t: Held) {
        if self.local.is_some() {
            self.window.push_back(t);
            return;
        }
        if self.sinks.len() < cfg.sinks {
            self.sinks.push(t);
            return;
        }
        self.window.push_back(t);
        if self.window.len() > cfg.window {
            let drop = cfg.evict_chunk.max(self.window.len() - cfg.window);
            self.window.drain(..drop);
        }
    }

    /// Attention of `q` (one token, all heads, unrotated), the last token pushed.
    fn attend(&self, sh: &CacheShape, q: &[f32]) -> Vec<f32> {
        let hd = sh.head_dim;
        // (position, key, value) of what the query sees, and the query's position.
        let (held, q_pos, base): (Vec<(usize, &Held)>, usize, f32) = match self.local {
            Some((w, base)) => {
                let now = self.window.back().unwrap().0;
                let seen = self.window.iter().filter(|t| now - t.0 < w);
                (seen.map(|t| (t.0, t)).collect(), now, base)
            }
            None => {
                let all: Vec<_> = self.sinks.iter().chain(self.window.iter()).collect();
                let n = all.len();
                (all.into_iter().enumerate().collect(), n - 1, sh.rope_base)
            }
        };
        let rot = |x: &[f32], pos: usize| {
            let mut x = x.to_vec();
            let mut cs = vec![(0.0, 0.0); sh.rope_dims / 2];
            ops::rope_angles(pos as u32, base, sh.rope_dims, &mut cs);
            ops::rope_norm(&mut x, hd, &cs);
            x
        };
        let qr = rot(q, q_pos);
        let keys: Vec<Vec<f32>> = held.iter().map(|(p, t)| rot(&t.1, *p)).collect();
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
            for (p, (_, t)) in s.iter().zip(&held) {
                for d in 0..hd {
                    out[h * hd + d] += p * t.2[off + d];
                }
            }
        }
        out
    }
}

/// Streams `total` tokens in batches of `batch` through a cache and the reference, and
/// compares every attention output; returns the largest difference.
fn stream(cfg: CacheConfig, batch: usize, total: usize) -> f32 {
    stream_shape(cfg, shape(batch), total, false)
}

/// [`stream`] for any shape (local layers included); with `cancel`, every batch is first
/// fed with other keys and values and rolled back, as a cancelled forward pass is.
fn stream_shape(cfg: CacheConfig, sh: CacheShape, total: usize, cancel: bool) -> f32 {
    let mut cache = KvCache::new(cfg.clone(), sh.clone()).unwrap();
    let bytes = cache.memory_bytes();
    let mut refs: Vec<Reference> = (0..sh.n_layer)
        .map(|l| Reference {
            local: sh
                .sliding
                .as_ref()
                .filter(|_| sh.is_local(l))
                .map(|s| (s.window, s.rope_base)),
            sinks: vec![],
            window: Default::default(),
        })
        .collect();
    let (kv_dim, q_dim) = (sh.n_head_kv * sh.head_dim, sh.n_head * sh.head_dim);
    let mut rng = Lcg(7);
    let mut worst = 0.0f32;
    let mut done = 0;
    while done < total {
        // The largest batch the cache takes now: `sh.batch`, or more while it has room.
        let n = cache.max_append().min(total - done);
        assert!(n >= sh.batch.min(total - done) && n <= sh.max_batch.max(sh.batch));
        if cancel {
            let cp = cache.open(n).unwrap();
            for l in 0..sh.n_layer {
                let mut k = rng.vec(n * kv_dim);
                cache.store(l, &mut k, &rng.vec(n * kv_dim));
            }
            cache.rollback(cp);
        }
        cache.open(n).unwrap();
        for (l, r) in refs.iter_mut().enumerate() {
            let mut k = rng.vec(n * kv_dim);
            let v = rng.vec(n * kv_dim);
            let q = rng.vec(n * q_dim);
            let k_orig = k.clone();
            cache.store(l, &mut k, &v);
            let mut out = vec![0.0; n * q_dim];
            let mut qbuf = vec![0.0; n * 2 * q_dim];
            cache.attend(l, &q, &mut out, &mut qbuf);
            // The batch's later tokens alone: bitwise their rows of the whole batch's
            // output, and nothing written to the rows before them.
            let from = n - 1 - (done + l) % n;
            let mut part = vec![f32::NAN; n * q_dim];
            cache.attend_from(l, from, &q, &mut part, &mut qbuf);
            assert!(part[..from * q_dim].iter().all(|x| x.is_nan()));
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&part[from * q_dim..]), bits(&out[from * q_dim..]));
            for t in 0..n {
                let kt = k_orig[t * kv_dim..(t + 1) * kv_dim].to_vec();
                r.push(
                    &cfg,
                    (done + t, kt, v[t * kv_dim..(t + 1) * kv_dim].to_vec()),
                );
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

/// A model with two local layers (window `w_swa`, their own RoPE base) around a global one.
fn sliding_shape(batch: usize, w_swa: usize) -> CacheShape {
    CacheShape {
        n_layer: 3,
        sliding: Some(SlidingWindow {
            window: w_swa,
            rope_base: 50.0,
            layers: vec![true, false, true],
        }),
        ..shape(batch)
    }
}

#[test]
fn local_and_global_layers_match_plain_attention() {
    // Global windows shorter and longer than the local one, batches of one token, a few, and
    // longer than every window; 300 tokens pass many evictions and rebases of both rings.
    // Batches of 3 are each first fed with other data and rolled back (a cancel).
    for (sinks, window, w_swa) in [(3, 7, 5), (2, 4, 11), (0, 9, 9), (4, 40, 16)] {
        for batch in [1, 3, 20] {
            let cfg = CacheConfig {
                sinks,
                window,
                kv_type: KvType::F32,
                evict_chunk: 1,
            };
            let worst = stream_shape(cfg, sliding_shape(batch, w_swa), 300, batch == 3);
            assert!(
                worst < 1e-4,
                "{sinks} + {window}, W_swa {w_swa}, batch {batch}: max difference {worst}"
            );
        }
    }
    // Chunked eviction on the global layers leaves the local ring per token.
    let cfg = CacheConfig {
        sinks: 2,
        window: 9,
        kv_type: KvType::F32,
        evict_chunk: 4,
    };
    assert!(stream_shape(cfg, sliding_shape(5, 6), 200, true) < 1e-4);
    // f16 and q8_0 keys and values, through the same rings.
    for kv_type in [KvType::F16, KvType::Q8_0] {
        let cfg = CacheConfig {
            sinks: 2,
            window: 8,
            kv_type,
            evict_chunk: 1,
        };
        let worst = stream_shape(cfg, sliding_shape(4, 6), 120, false);
        assert!(worst < 0.05, "{kv_type:?}: max difference {worst}");
    }
}

#[test]
fn local_layers_hold_their_window_only() {
    let cfg = CacheConfig {
        sinks: 4,
        window: 100,
        kv_type: KvType::F16,
        evict_chunk: 1,
    };
    let cache = KvCache::new(cfg, sliding_shape(8, 16)).unwrap();
    let row = KvType::F16.row_bytes(2 * 32);
    let m = cache.memory();
    assert_eq!((m.global_layers, m.local_layers), (1, 2));
    assert_eq!(m.global_bytes_per_layer, 2 * (4 + 100 + 8) * row);
    assert_eq!(m.local_bytes_per_layer, 2 * (16 + 8) * row);
    assert_eq!(
        cache.memory_bytes(),
        m.global_bytes_per_layer + 2 * m.local_bytes_per_layer
    );
    assert_eq!(cache.local_window(), Some(16));
}

#[test]
fn rollback_and_snapshot_cover_both_rings() {
    let cfg = CacheConfig {
        sinks: 2,
        window: 5,
        kv_type: KvType::F32,
        evict_chunk: 1,
    };
    let sh = sliding_shape(6, 4);
    let mut cache = KvCache::new(cfg.clone(), sh.clone()).unwrap();
    let kv_dim = sh.n_head_kv * sh.head_dim;
    let mut rng = Lcg(3);
    let mut feed = |cache: &mut KvCache, n: usize| {
        let cp = cache.open(n).unwrap();
        for l in 0..sh.n_layer {
            let mut k = rng.vec(n * kv_dim);
            cache.store(l, &mut k, &rng.vec(n * kv_dim));
        }
        cp
    };
    for n in [1, 6, 3, 5, 2, 6, 4, 1, 6, 6, 6] {
        // A cancelled batch of any size up to the batch restores every counter of both rings
        // (as they are after the rebase that opening room may do).
        cache.make_room(n);
        let before = (cache.snapshot(), cache.len(), cache.tokens_seen());
        let cp = feed(&mut cache, n);
        cache.rollback(cp);
        let after = (cache.snapshot(), cache.len(), cache.tokens_seen());
        assert_eq!((before.1, before.2), (after.1, after.2));
        assert_eq!(before.0[..72], after.0[..72], "counters restored");
        feed(&mut cache, n);
    }
    // A restored copy attends exactly as the original.
    let mut copy = KvCache::new(cfg, sh.clone()).unwrap();
    copy.restore(&cache.snapshot()).unwrap();
    let q_dim = sh.n_head * sh.head_dim;
    for c in [&mut cache, &mut copy] {
        c.open(1).unwrap();
    }
    let mut outs = vec![];
    for c in [&mut cache, &mut copy] {
        let mut rng = Lcg(11);
        let mut out = vec![0.0; sh.n_layer * q_dim];
        for l in 0..sh.n_layer {
            let mut k = rng.vec(kv_dim);
            c.store(l, &mut k, &rng.vec(kv_dim));
            let mut qbuf = vec![0.0; 2 * q_dim];
            c.attend(
                l,
                &rng.vec(q_dim),
                &mut out[l * q_dim..(l + 1) * q_dim],
                &mut qbuf,
            );
        }
        outs.push(out);
    }
    assert_eq!(outs[0], outs[1]);
    // Corrupt counters and sizes are refused, and leave the cache empty.
    let good = cache.snapshot();
    for (at, value) in [(8, 0u64), (16, 99), (24, 1 << 40), (48, 1 << 40), (64, 7)] {
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
        assert!(copy.restore(&bad).is_err(), "word at {at} = {value}");
        assert!(copy.is_empty());
    }
    assert!(copy.restore(&good[..good.len() - 1]).is_err());
    assert!(copy.restore(&good[..20]).is_err());
}

#[test]
fn batches_larger_than_the_reserve_fill_a_young_cache_exactly() {
    // Rows for batches of 3, scratch for 40: the first appends take up to the free rows
    // (sinks, then window slots), later ones the reserved 3; each cancelled first.
    let cfg = CacheConfig {
        sinks: 2,
        window: 20,
        kv_type: KvType::F32,
        evict_chunk: 1,
    };
    for sh in [shape(3), sliding_shape(3, 8)] {
        let sh = CacheShape {
            max_batch: 40,
            ..sh
        };
        let worst = stream_shape(cfg.clone(), sh.clone(), 150, true);
        assert!(worst < 1e-4, "{:?}: max difference {worst}", sh.sliding);
    }
    // Free rows by hand: 2 sinks + 23 slots, then 8 + 3 local slots bound it.
    let mut cache = KvCache::new(
        cfg.clone(),
        CacheShape {
            max_batch: 40,
            ..shape(3)
        },
    )
    .unwrap();
    assert_eq!(cache.max_append(), 25);
    cache.append(10).unwrap();
    assert_eq!(cache.max_append(), 15);
    assert!(matches!(
        cache.append(16),
        Err(CacheError::BatchTooLarge { n: 16, batch: 15 })
    ));
    assert_eq!(cache.tokens_seen(), 10, "a refused batch changes nothing");
    cache.append(15).unwrap();
    assert_eq!(cache.max_append(), 3, "full: the reserve");
    let sliding = CacheShape {
        max_batch: 40,
        ..sliding_shape(3, 8)
    };
    let cache = KvCache::new(cfg, sliding).unwrap();
    assert_eq!(cache.max_append(), 11);
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
            cache.global.c.next_epoch,
            cache.global.c.first_epoch,
        );
        cache.append(3).unwrap();
        let positions: Vec<u32> = cache.global.batch.iter().map(|t| t.pos).collect();
        cache.rollback(cp);
        assert_eq!(
            (
                cache.len(),
                cache.tokens_seen(),
                cache.global.c.next_epoch,
                cache.global.c.first_epoch
            ),
            before
        );
        cache.append(3).unwrap();
        let again: Vec<u32> = cache.global.batch.iter().map(|t| t.pos).collect();
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
        n_layer: 2,
        ..sliding_shape(64, 24)
    };
    let mut cache = KvCache::new(cfg.clone(), sh).unwrap();
    let bound = 2 * (cfg.window + 64) as u64;
    for _ in 0..10_000_000 / 64 {
        cache.append(64).unwrap();
        assert!(cache.global.c.next_epoch < bound);
        let local = cache.local.as_ref().unwrap();
        assert!(local.c.next_epoch < 2 * (24 + 64) && local.len() <= 24);
        assert!(cache
            .global
            .batch
            .iter()
            .all(|t| t.pos < cfg.capacity() as u32));
    }
    assert_eq!(cache.len(), cfg.capacity());
    assert!(cache.tokens_seen() >= 9_999_000);
}
