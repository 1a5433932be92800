//! Handles: what C holds in place of pointers to Rust objects.
//!
//! A handle is a number dressed as a pointer, not an address: the library keeps every live
//! object in one table under its number, and every call looks the number up. A handle used
//! after it was freed, freed twice, or of the wrong kind is found missing and reported as
//! `TERN_ERR_INVALID_HANDLE`, never dereferenced; numbers are never reused, so a stale handle
//! cannot reach a newer object either. Objects are reference-counted: a call in progress keeps
//! its object alive even when another thread frees the handle meanwhile.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, TernStatus};

/// A Rust object that C refers to by handle, and the opaque C type of its handles.
pub(crate) trait Kind: Any + Send + Sync {
    /// The opaque type C sees (`TernSession` for sessions).
    type C;
    /// What the kind is called in messages.
    const NAME: &'static str;
}

struct Entry {
    kind: &'static str,
    obj: Arc<dyn Any + Send + Sync>,
}

struct Table {
    next: u64,
    live: BTreeMap<u64, Entry>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    next: 1,
    live: BTreeMap::new(),
});

/// Handles are multiples of 16, so they look like aligned pointers to tools and debuggers.
const SHIFT: u32 = 4;

fn table() -> std::sync::MutexGuard<'static, Table> {
    // Nothing panics while holding the lock; should it ever, the table itself is still whole.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stores `obj` and returns its new handle.
pub(crate) fn insert<T: Kind>(obj: T) -> Result<*mut T::C, Error> {
    let mut t = table();
    let id = t.next;
    let value = usize::try_from(id)
        .ok()
        .and_then(|v| v.checked_mul(1 << SHIFT))
        .ok_or_else(|| Error::new(TernStatus::TERN_ERR_INTERNAL, "out of handle numbers"))?;
    t.next += 1;
    t.live.insert(
        id,
        Entry {
            kind: T::NAME,
            obj: Arc::new(obj),
        },
    );
    Ok(value as *mut T::C)
}

/// Finds the table key of handle `h`, or says why it is none.
fn key(t: &Table, h: usize, arg: &str, want: &str) -> Result<u64, Error> {
    if h == 0 {
        return Err(Error::null(arg));
    }
    let id = (h >> SHIFT) as u64;
    let bad = |what: String| Error::new(TernStatus::TERN_ERR_INVALID_HANDLE, what);
    if !h.is_multiple_of(1 << SHIFT) || id >= t.next {
        return Err(bad(format!("`{arg}` is not a Tern {want} handle")));
    }
    match t.live.get(&id) {
        None => Err(bad(format!(
            "`{arg}` is a closed {want} handle (it was freed)"
        ))),
        Some(e) if e.kind != want => Err(bad(format!(
            "`{arg}` is a {} handle, not a {want} handle",
            e.kind
        ))),
        Some(_) => Ok(id),
    }
}

/// The object behind handle `h` (argument `arg` of the call).
pub(crate) fn get<T: Kind>(h: *const T::C, arg: &str) -> Result<Arc<T>, Error> {
    let t = table();
    let id = key(&t, h as usize, arg, T::NAME)?;
    let obj = t.live[&id].obj.clone();
    obj.downcast::<T>()
        .map_err(|_| Error::new(TernStatus::TERN_ERR_INTERNAL, "handle table kind mismatch"))
}

/// Removes handle `h` from the table and returns its object; `None` when `h` is NULL (freeing
/// NULL does nothing, as with `free`).
pub(crate) fn remove<T: Kind>(h: *const T::C, arg: &str) -> Result<Option<Arc<T>>, Error> {
    if h.is_null() {
        return Ok(None);
    }
    let mut t = table();
    let id = key(&t, h as usize, arg, T::NAME)?;
    let entry = t.live.remove(&id);
    drop(t);
    let obj = entry.map(|e| e.obj).ok_or_else(|| {
        Error::new(
            TernStatus::TERN_ERR_INTERNAL,
            "handle vanished from the table",
        )
    })?;
    obj.downcast::<T>()
        .map(Some)
        .map_err(|_| Error::new(TernStatus::TERN_ERR_INTERNAL, "handle table kind mismatch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Apple(u32);
    struct AppleC;
    impl Kind for Apple {
        type C = AppleC;
        const NAME: &'static str = "apple";
    }
    struct Pear;
    struct PearC;
    impl Kind for Pear {
        type C = PearC;
        const NAME: &'static str = "pear";
    }

    #[test]
    fn freed_and_foreign_handles_are_refused() {
        let a = insert(Apple(7)).unwrap();
        assert_eq!(a as usize % 16, 0);
        assert_eq!(get::<Apple>(a, "a").unwrap().0, 7);

        // The wrong kind.
        let as_pear = a as usize as *const PearC;
        let e = get::<Pear>(as_pear, "p").err().unwrap();
        assert_eq!(e.status, TernStatus::TERN_ERR_INVALID_HANDLE);
        assert!(
            e.message.contains("apple handle, not a pear"),
            "{}",
            e.message
        );

        // Freed, then freed again, then used.
        let held = get::<Apple>(a, "a").unwrap();
        assert!(remove::<Apple>(a, "a").unwrap().is_some());
        assert_eq!(held.0, 7, "a call in progress keeps its object alive");
        let e = remove::<Apple>(a, "a").err().unwrap();
        assert!(e.message.contains("closed"), "{}", e.message);
        let e = get::<Apple>(a, "a").err().unwrap();
        assert_eq!(e.status, TernStatus::TERN_ERR_INVALID_HANDLE);

        // A number never handed out, a misaligned one, NULL.
        let e = get::<Apple>(usize::MAX as *const AppleC, "a")
            .err()
            .unwrap();
        assert!(
            e.message.contains("not a Tern apple handle"),
            "{}",
            e.message
        );
        let e = get::<Apple>((a as usize + 1) as *const AppleC, "a")
            .err()
            .unwrap();
        assert_eq!(e.status, TernStatus::TERN_ERR_INVALID_HANDLE);
        let e = get::<Apple>(std::ptr::null(), "a").err().unwrap();
        assert_eq!(e.status, TernStatus::TERN_ERR_NULL_POINTER);
        assert!(remove::<Apple>(std::ptr::null(), "a").unwrap().is_none());

        // Numbers are not reused.
        let b = insert(Apple(8)).unwrap();
        assert_ne!(a as usize, b as usize);
        assert!(get::<Apple>(a, "a").is_err());
        remove::<Apple>(b, "b").unwrap();
    }
}
