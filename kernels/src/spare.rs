//! Per-thread spares of the panel kernels' unpacking buffers.
//!
//! A tile call covers 16 weight rows, so a short prompt's pass makes thousands of them
//! (Qwen2.5-Coder-0.5B, 16 tokens: about 18 000), and each allocated and zeroed its
//! buffers (10 KiB on x86-64). A tile reads only values it has unpacked first, so the
//! buffer of the thread's previous tile serves as well as a new one.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// Where a thread keeps its spare `T` between tiles: a `thread_local!` of the kernel module.
pub(crate) type Slot<T> = LocalKey<Cell<Option<Box<T>>>>;

/// A buffer taken from this thread's [`Slot`], given back when dropped.
pub(crate) struct Spare<T: 'static> {
    buf: Option<Box<T>>,
    slot: &'static Slot<T>,
}

impl<T> Spare<T> {
    /// The thread's spare, or `new()` if it has none (its first tile, or a tile within a tile).
    pub(crate) fn take(slot: &'static Slot<T>, new: fn() -> Box<T>) -> Spare<T> {
        Spare {
            buf: Some(slot.with(Cell::take).unwrap_or_else(new)),
            slot,
        }
    }
}

// Kernels dereference once, before their loops (`let u = &mut *spare;`).
impl<T> Deref for Spare<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.buf
            .as_deref()
            .expect("a spare holds its buffer until dropped")
    }
}

impl<T> DerefMut for Spare<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.buf
            .as_deref_mut()
            .expect("a spare holds its buffer until dropped")
    }
}

impl<T> Drop for Spare<T> {
    fn drop(&mut self) {
        let buf = self.buf.take();
        // A thread being torn down has no slot left: the buffer is then freed.
        let _ = self.slot.try_with(|s| s.set(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: Cell<Option<Box<[u8; 64]>>> = const { Cell::new(None) };
    }

    #[test]
    fn a_thread_gets_its_own_buffer_back_and_a_nested_take_a_new_one() {
        let first = {
            let mut a = Spare::take(&SLOT, || Box::new([0; 64]));
            a[0] = 7;
            // Taken while `a` is out: a new buffer.
            let b = Spare::take(&SLOT, || Box::new([1; 64]));
            assert_eq!(b[0], 1);
            drop(b);
            &*a as *const [u8; 64]
        };
        // `b` was given back first, then `a`, whose buffer the slot now holds.
        let again = Spare::take(&SLOT, || Box::new([0; 64]));
        assert_eq!(&*again as *const [u8; 64], first);
        assert_eq!(again[0], 7);
        // Another thread has its own.
        std::thread::spawn(|| assert_eq!(Spare::take(&SLOT, || Box::new([2; 64]))[0], 2))
            .join()
            .unwrap();
    }
}
