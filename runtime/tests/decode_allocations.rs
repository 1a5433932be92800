//! A decode step allocates nothing: after the first, 100 steps (sample a token, feed it) make
//! no heap allocation on any thread that runs the model, with greedy and with sampled
//! decoding, through evictions and a rebase of a small window, on SmolLM2 and Gemma 3
//! (sliding-window layers).
//!
//! A counting global allocator counts every allocation and reallocation made while a flag is
//! up on the threads of the rayon pool the session runs in: the thread that decodes and every
//! worker a matrix product or an attention tile is split to. The test harness's own threads
//! are left out: libtest's main thread prints "has been running for over 60 seconds" when a
//! test passes that mark, and the notice allocates three times (under qemu it fell inside
//! the counted steps: the 3 allocations once seen there). Work a pool thread handed to any
//! other thread would have allocated on the pool thread to get there.
//!
//! Under qemu (the aarch64 runs of `scripts/test-cross.sh`) one case runs: SmolLM2, sampled,
//! with an f16 cache, the path whose code differs by architecture (the NEON kernels and the
//! f16 widening); the sampler's and the q8_0 cache's code is the same on every target. Gemma
//! 3's 270M parameters would take minutes there.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tern::cache::{CacheConfig, KvType};
use tern::model::Model;
use tern::sampler::SamplerConfig;
use tern::session::{Session, SessionOptions, DEFAULT_BATCH};

/// The system allocator, counting while `COUNTING` is up on the threads of the pool.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the decoding pool's threads when they start.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Counts one allocation if it is made while counting, by a thread of the pool. (A
/// const-initialised `Cell` without a destructor neither allocates nor re-enters here.)
fn count() {
    if COUNTING.load(Ordering::Relaxed) && IN_POOL.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Steps counted after the first.
const STEPS: usize = 100;

/// Decodes one token: the sampler picks it from the current logits and the model feeds it.
fn step(s: &mut Session) {
    let id = s.sample();
    assert_eq!(s.feed(&[id]).unwrap(), 1);
}

/// Tokens kept after the sinks.
const WINDOW: usize = 8;

/// Allocations made by `STEPS` decode steps after a first one, inside a pool as every front
/// end runs the model (a call from outside a rayon pool queues a job, which allocates now
/// and then).
fn allocations_while_decoding(
    model: &Arc<Model>,
    sampler: SamplerConfig,
    kv_type: KvType,
) -> usize {
    let opts = SessionOptions {
        // A window far smaller than the steps: tokens are evicted and epochs rebased.
        cache: CacheConfig {
            sinks: 4,
            window: WINDOW,
            kv_type,
            evict_chunk: 1,
        },
        sampler,
        ..SessionOptions::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| IN_POOL.with(|p| p.set(true)))
        .build()
        .unwrap();
    // The counter sees what each of the pool's threads allocates.
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    pool.broadcast(|_| drop(std::hint::black_box(Vec::<u8>::with_capacity(1))));
    COUNTING.store(false, Ordering::SeqCst);
    let seen = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(
        seen >= 2,
        "the counter saw {seen} allocations on the pool's 2 threads"
    );
    pool.install(|| {
        let mut s = Session::new(model.clone(), opts).unwrap();
        // A prompt long enough that the epochs are rebased during the counted steps (at twice
        // the ring of window + batch = 72 slots), and no longer: prefill under qemu is slow.
        let prompt = "The quick brown fox jumps over the lazy dog, and then it ran. ".repeat(4);
        let fed = s.feed_text(&prompt).unwrap();
        let rebase = 2 * (WINDOW + DEFAULT_BATCH);
        assert!(
            fed + 1 < rebase && fed + 1 + STEPS > rebase,
            "{fed} tokens fed"
        );
        step(&mut s);
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for _ in 0..STEPS {
            step(&mut s);
        }
        COUNTING.store(false, Ordering::SeqCst);
        // The window filled and kept moving: tokens were evicted all along.
        let stats = s.stats();
        assert!(
            stats.tokens as usize > STEPS && stats.cache_used == 4 + WINDOW,
            "{stats:?}"
        );
        ALLOCATIONS.load(Ordering::SeqCst)
    })
}

#[test]
fn decode_steps_after_the_first_allocate_nothing() {
    let greedy = SamplerConfig::default();
    let sampled = SamplerConfig {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.9,
        min_p: 0.05,
        repeat_penalty: 1.1,
        repeat_last_n: 64,
        seed: 7,
    };
    let mut failures = Vec::new();
    // Gemma 3's sliding-window layers take other paths of the cache. Under qemu, the one case
    // whose code differs by architecture (see the module doc).
    let cases = if cfg!(target_arch = "x86_64") {
        vec![
            ("smollm2-135m", "greedy", greedy, KvType::F16),
            ("smollm2-135m", "sampled", sampled, KvType::Q8_0),
            ("gemma3-270m", "sampled", sampled, KvType::F16),
        ]
    } else {
        vec![("smollm2-135m", "sampled", sampled, KvType::F16)]
    };
    for (name, what, sampler, kv) in cases {
        let model = Arc::new(Model::load(common::model(name)).unwrap());
        let n = allocations_while_decoding(&model, sampler, kv);
        eprintln!("{name}, {what}, KV {kv:?}: {n} allocations in {STEPS} steps");
        if n != 0 {
            failures.push(format!("{name} {what} {kv:?}: {n}"));
        }
    }
    assert!(failures.is_empty(), "decode steps allocated: {failures:?}");
}
