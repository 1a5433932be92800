//! Fitting Tern to a board: the kernel set within the board's ceiling, and a session's KV
//! cache (the board's defaults for whatever the caller left unset, then its memory guard).
//! The CLI and the C ABI both go through here.

use tern_boards::{fmt_bytes, Board, MemoryError, MemoryFit, MemoryNeed};

use crate::cache::{CacheConfig, KvType, SlidingWindow};
use crate::model::Model;
use crate::session::DEFAULT_BATCH;

/// Makes the board's kernels the process's: the best set this CPU runs within the board's
/// ceiling (a Pi 4 profile runs `neon` even on a CPU with dotprod; a Pi profile on an x86
/// machine runs the scalar reference). Returns the set in use and, when it is not the board's
/// pick (`TERN_KERNELS`, or an earlier model of this process chose first), why.
pub fn use_board_kernels(board: &Board) -> (&'static tern_kernels::KernelSet, Option<String>) {
    let sets = tern_kernels::KernelSet::available();
    let names: Vec<&str> = sets.iter().map(|s| s.name()).collect();
    let want = board.settings.kernel.value.pick(&names);
    let set = tern_kernels::choose_kernels(want).unwrap_or_else(|_| tern_kernels::kernels());
    let note = (set.name() != want).then(|| {
        format!(
            "kernels: {} rather than the board's {want} (TERN_KERNELS, or chosen earlier in \
             this process: a process runs one kernel set)",
            set.name()
        )
    });
    (set, note)
}

/// The cache a caller asks for; `None` takes the board's default.
#[derive(Clone, Debug, Default)]
pub struct CacheRequest {
    pub sinks: Option<usize>,
    pub window: Option<usize>,
    pub kv_type: Option<KvType>,
    pub evict_chunk: usize,
}

/// The cache to allocate, and the message to show when the guard shrank its window.
pub fn fit_cache(
    model: &Model,
    board: &Board,
    req: &CacheRequest,
) -> Result<(CacheConfig, Option<String>), MemoryError> {
    let kv = &board.settings.kv.value;
    let c = model.llama().config();
    let kv_type = req.kv_type.unwrap_or(match kv.kv_type {
        tern_boards::KvType::F32 => KvType::F32,
        tern_boards::KvType::F16 => KvType::F16,
        // q8_0 needs heads of a multiple of 32 values; else f16.
        tern_boards::KvType::Q8_0 if c.head_dim.is_multiple_of(32) => KvType::Q8_0,
        tern_boards::KvType::Q8_0 => KvType::F16,
    });
    let mut cfg = CacheConfig {
        sinks: req.sinks.unwrap_or(kv.sinks),
        window: req.window.unwrap_or(kv.window),
        kv_type,
        evict_chunk: req.evict_chunk,
    };
    match board.guard(&memory_need(model, &cfg))? {
        MemoryFit::Fits { .. } => Ok((cfg, None)),
        MemoryFit::Shrunk {
            window, message, ..
        } => {
            cfg.window = window;
            cfg.evict_chunk = cfg.evict_chunk.min(window);
            Ok((cfg, Some(message)))
        }
    }
}

/// What a session with the cache `cfg` holds in memory (saturating: no size overflows).
/// A sliding-window model's local layers keep a ring of their trained window whatever the
/// window asked for, so their bytes are fixed (counted with the other buffers); only the
/// global layers' bytes grow with the window the guard may shrink.
fn memory_need(model: &Model, cfg: &CacheConfig) -> MemoryNeed {
    let c = model.llama().config();
    let kv = kv_need(c.kv_dim(), c.n_layer, c.sliding.as_ref(), cfg.kv_type);
    MemoryNeed {
        model_bytes: model.llama().file().file_size(),
        other_bytes: kv.local_bytes,
        kv_bytes_per_token: kv.global_bytes_per_token,
        sinks: cfg.sinks,
        window: cfg.window,
        batch: DEFAULT_BATCH,
    }
}

/// The KV cache's bytes as [`crate::cache::KvCache::new`] allocates them for batches of
/// [`DEFAULT_BATCH`] tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KvNeed {
    /// All local layers' rings: `W_swa + batch` rows each, keys and values.
    local_bytes: u64,
    /// One token's keys and values over the global layers (they hold `sinks + window +
    /// batch` rows each).
    global_bytes_per_token: u64,
}

fn kv_need(
    kv_dim: usize,
    n_layer: usize,
    sliding: Option<&SlidingWindow>,
    kv_type: KvType,
) -> KvNeed {
    let row = (kv_type.row_bytes(kv_dim) as u64).saturating_mul(2);
    let local_layers = sliding.map_or(0, |s| s.layers.iter().take(n_layer).filter(|&&l| l).count());
    let local_rows = sliding.map_or(0, |s| s.window.saturating_add(DEFAULT_BATCH.max(1)));
    KvNeed {
        local_bytes: row
            .saturating_mul(local_rows as u64)
            .saturating_mul(local_layers as u64),
        global_bytes_per_token: row.saturating_mul((n_layer - local_layers) as u64),
    }
}

/// A cache of fixed size (restored from a file, or grown by a pinned system prompt) that the
/// board's memory budget cannot hold.
#[derive(Debug, thiserror::Error)]
#[error(
    "a KV cache of {sinks} sinks and a window of {window} tokens does not fit the memory \
     budget of {budget} with the model ({need} needed)"
)]
pub struct CacheTooLarge {
    pub sinks: usize,
    pub window: usize,
    pub need: String,
    pub budget: String,
}

/// Checks that the cache `cfg`, exactly as it is, fits the board's memory budget with the
/// model. Unlike [`fit_cache`] nothing shrinks: the cache of a restored session must be the
/// one saved, and the sinks of a pinned system prompt must all be kept.
pub fn check_cache(model: &Model, board: &Board, cfg: &CacheConfig) -> Result<(), CacheTooLarge> {
    check_cache_with(model, None, board, cfg)
}

/// [`check_cache`] for a session that may also hold a draft model for speculative
/// decoding: both files, and both caches (the draft's is configured as the model's).
pub fn check_cache_with(
    model: &Model,
    draft: Option<&Model>,
    board: &Board,
    cfg: &CacheConfig,
) -> Result<(), CacheTooLarge> {
    let mut need = memory_need(model, cfg);
    if let Some(draft) = draft {
        let d = memory_need(draft, cfg);
        need.model_bytes = need.model_bytes.saturating_add(d.model_bytes);
        need.other_bytes = need.other_bytes.saturating_add(d.other_bytes);
        need.kv_bytes_per_token = need.kv_bytes_per_token.saturating_add(d.kv_bytes_per_token);
    }
    match board.guard(&need) {
        Ok(MemoryFit::Fits { .. }) => Ok(()),
        _ => Err(CacheTooLarge {
            sinks: cfg.sinks,
            window: cfg.window,
            need: fmt_bytes(need.bytes_with(cfg.window)),
            budget: fmt_bytes(board.settings.memory_budget.value),
        }),
    }
}

/// The CPUs this process may run on: the OS's count for this process (affinity and cgroup
/// quota included), else the board's online CPUs, else 1.
pub fn usable_cpus(board: &Board) -> usize {
    let online = board.facts.cpus.len();
    match (board.facts.parallelism, online) {
        (Some(p), 0) => p,
        (Some(p), n) => p.min(n),
        (None, 0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (None, n) => n,
    }
    .max(1)
}

/// The threads to run: those asked for, else the board's, lowered to the CPUs this process
/// may use (more threads than CPUs only slow the matrix products down, and thousands never
/// answer; a profile chosen by name may describe a board with more cores than this one).
/// Returns the count and, when it was lowered, the message to show.
pub fn fit_threads(asked: Option<usize>, board: &Board) -> (usize, Option<String>) {
    let cpus = usable_cpus(board);
    let (want, what) = match asked {
        Some(n) => (n.max(1), format!("{n} threads asked for")),
        None => {
            let n = board.settings.threads.value.max(1);
            (
                n,
                format!("the {} profile's {n} threads", board.profile.name),
            )
        }
    };
    if want > cpus {
        let note = format!("{what}: lowered to the {cpus} CPUs this process may use");
        (cpus, Some(note))
    } else {
        (want, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU count, read independently of `usable_cpus`: the OS's count for this process.
    fn os_cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Gemma 3 270M's attention: 18 layers, one KV head of 256 values, every sixth layer
    /// global, the others on a window of 512.
    fn gemma3_270m_sliding() -> SlidingWindow {
        SlidingWindow {
            window: 512,
            rope_base: 10_000.0,
            layers: (0..18).map(|l| l % 6 < 5).collect(),
        }
    }

    #[test]
    fn gemma3_local_layers_are_counted_at_their_ring() {
        let sliding = gemma3_270m_sliding();
        let need = kv_need(256, 18, Some(&sliding), KvType::F16);
        // By hand: an f16 row of 256 values is 512 bytes, keys and values 1 024. The 15 local
        // layers hold 512 + 64 rows each; the 3 global ones 1 024 bytes per token each.
        assert_eq!(need.local_bytes, 15 * 1_024 * 576);
        assert_eq!(need.local_bytes, 8_847_360);
        assert_eq!(need.global_bytes_per_token, 3_072);
        // At the default 4 + 1020: 11 904 KiB, where counting every layer as global gave
        // 18 × 1 024 × 1 088 bytes (19 584 KiB).
        let at_default = need.local_bytes + need.global_bytes_per_token * (4 + 1_020 + 64);
        assert_eq!(at_default, 11_904 * 1_024);

        // A model without local layers (SmolLM2: 30 layers, 3 KV heads of 64): all global.
        let smollm = kv_need(192, 30, None, KvType::F16);
        assert_eq!(smollm.local_bytes, 0);
        assert_eq!(smollm.global_bytes_per_token, 2 * 30 * 192 * 2);
    }

    #[test]
    fn the_count_is_what_the_cache_allocates() {
        use crate::cache::{CacheShape, KvCache, RopeStyle};
        let shape = CacheShape {
            n_layer: 18,
            n_head: 4,
            n_head_kv: 1,
            head_dim: 256,
            rope_base: 1_000_000.0,
            rope_dims: 256,
            rope_factors: None,
            rope_style: RopeStyle::Neox,
            attn_scale: 1.0 / 16.0,
            sliding: Some(gemma3_270m_sliding()),
            batch: DEFAULT_BATCH,
            max_batch: DEFAULT_BATCH,
        };
        for kv_type in [KvType::F32, KvType::F16, KvType::Q8_0] {
            for (sinks, window) in [(4, 1_020), (0, 100), (16, 4_092)] {
                let cfg = CacheConfig {
                    sinks,
                    window,
                    kv_type,
                    evict_chunk: 1,
                };
                let need = kv_need(256, 18, shape.sliding.as_ref(), kv_type);
                let counted =
                    need.local_bytes + need.global_bytes_per_token * (sinks + window + 64) as u64;
                let cache = KvCache::new(cfg, shape.clone()).unwrap();
                assert_eq!(
                    counted,
                    cache.memory_bytes() as u64,
                    "{kv_type:?} {sinks} + {window}"
                );
            }
        }
    }

    #[test]
    fn gemma3_270m_needs_what_its_session_cache_holds() {
        let model = Model::load(tern_testkit::model("gemma3-270m")).unwrap();
        let cfg = CacheConfig {
            sinks: 4,
            window: 1_020,
            kv_type: KvType::F16,
            evict_chunk: 1,
        };
        let need = memory_need(&model, &cfg);
        assert_eq!(need.other_bytes, 8_847_360);
        assert_eq!(need.kv_bytes_per_token, 3_072);
        let cache = model
            .llama()
            .new_cache(cfg, DEFAULT_BATCH, DEFAULT_BATCH)
            .unwrap();
        let kv = need.bytes_with(1_020) - need.model_bytes;
        assert_eq!(kv, cache.memory_bytes() as u64);
    }

    #[test]
    fn the_guard_shrinks_only_the_global_layers_window() {
        let need = |window| MemoryNeed {
            model_bytes: 100 << 20,
            other_bytes: 8_847_360,
            kv_bytes_per_token: 3_072,
            sinks: 4,
            window,
            batch: 64,
        };
        let model_and_local = (100 << 20) + 8_847_360;
        // Exactly the default cache fits (counting every layer as global needed 7.7 MiB more).
        let budget = model_and_local + 3_072 * 1_088;
        assert!(matches!(
            tern_boards::guard(&need(1_020), budget),
            Ok(MemoryFit::Fits { .. })
        ));
        // Room for a window of 500 on the global layers: the local rings are not shrunk.
        let budget = model_and_local + 3_072 * (4 + 500 + 64);
        match tern_boards::guard(&need(1_020), budget) {
            Ok(MemoryFit::Shrunk { window, .. }) => assert_eq!(window, 500),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn threads_beyond_the_cpus_are_lowered_with_a_note() {
        let board = tern_boards::select(Some("auto")).unwrap();
        let cpus = os_cpus();
        assert!(usable_cpus(&board) <= cpus);
        let usable = usable_cpus(&board);
        let (n, note) = fit_threads(Some(100_000), &board);
        assert_eq!(n, usable);
        let note = note.expect("a note when lowering");
        assert!(note.contains("100000 threads asked for"), "{note}");
        assert!(note.contains(&format!("{usable} CPUs")), "{note}");
        assert_eq!(fit_threads(Some(usable + 1), &board).0, usable);
    }

    #[test]
    fn threads_within_the_cpus_are_kept() {
        let board = tern_boards::select(Some("auto")).unwrap();
        assert_eq!(fit_threads(Some(1), &board), (1, None));
        assert_eq!(fit_threads(Some(0), &board), (1, None));
        let usable = usable_cpus(&board);
        assert_eq!(fit_threads(Some(usable), &board), (usable, None));
    }

    #[test]
    fn a_named_boards_default_threads_are_lowered_to_this_machines_cpus() {
        // The Raspberry Pi 5 profile asks for its four cores, whatever this machine has.
        let board = tern_boards::select(Some("rpi5")).unwrap();
        let usable = usable_cpus(&board);
        let profile = board.settings.threads.value;
        let (n, note) = fit_threads(None, &board);
        assert_eq!(n, profile.min(usable));
        assert_eq!(note.is_some(), profile > usable, "{note:?}");
        if let Some(note) = note {
            assert!(note.contains("profile's"), "{note}");
        }
    }
}
