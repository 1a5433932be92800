//! The heap one thread holds, for tests that bound what an operation allocates. A test
//! binary opts in with
//! `#[global_allocator] static HEAP: tern_testkit::heap::PerThread = tern_testkit::heap::PerThread;`
//! and brackets the operation with [`start`] and [`peak`]. The count is per thread because
//! the other tests of the binary allocate at the same time on threads of their own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A global allocator that forwards to the system's and counts, per thread, the bytes held
/// and their peak.
pub struct PerThread;

thread_local! {
    static NOW: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// Starts a new peak from what this thread holds now, and returns that.
pub fn start() -> usize {
    let now = NOW.with(Cell::get);
    PEAK.with(|p| p.set(now));
    now
}

/// The most this thread held since [`start`].
pub fn peak() -> usize {
    PEAK.with(Cell::get)
}

// SAFETY: every call goes to the system allocator unchanged; the thread-local counters are
// const-initialised cells, which neither allocate nor re-enter the allocator.
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = NOW.with(|n| {
                n.set(n.get() + layout.size());
                n.get()
            });
            PEAK.with(|p| p.set(p.get().max(now)));
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        NOW.with(|n| n.set(n.get().saturating_sub(layout.size())));
    }
}
