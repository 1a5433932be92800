//! The conversations the server holds: at most `max_in_ram` sessions in memory (those
//! generating included); the least recently used others are saved to session files and
//! restored, exactly, when their conversation returns (with the server's draft model, if
//! any: a session file holds the model's cache, and the draft is given the saved history).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tern::model::Model;
use tern::session::{Session, SessionError};
use tern::speculative::DraftSpec;

use super::conversation::Key;

enum Place {
    Ram(Box<Session>),
    Disk(PathBuf),
}

struct Entry {
    place: Place,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    /// Conversations at rest, by the key of the messages they have seen.
    held: HashMap<Key, Entry>,
    /// Sessions in memory at rest, and out generating.
    in_ram: usize,
    out: usize,
    clock: u64,
    next_file: u64,
}

/// Counters for `/health` and the tests.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StoreStats {
    pub conversations: usize,
    pub in_ram: usize,
    pub generating: usize,
    pub saved: u64,
    pub restored: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    max_in_ram: usize,
    dir: PathBuf,
    model: Arc<Model>,
    /// Restored sessions continue with this draft model, as new ones start with it.
    draft: Option<DraftSpec>,
    board: tern_boards::Board,
    counters: Mutex<(u64, u64)>,
}

/// A session taken out of the store for one request; [`Store::put_back`] or
/// [`Store::discard`] returns its place.
pub struct Lease {
    pub session: Session,
    /// How many of the request's turns the session has already seen.
    pub turns_seen: usize,
}

impl Store {
    pub fn new(
        model: Arc<Model>,
        draft: Option<DraftSpec>,
        board: tern_boards::Board,
        max_in_ram: usize,
        dir: PathBuf,
    ) -> Store {
        Store {
            inner: Mutex::new(Inner::default()),
            max_in_ram: max_in_ram.max(1),
            dir,
            model,
            draft,
            board,
            counters: Mutex::new((0, 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the conversation that has seen the longest prefix of `keys` (`keys[k]` is the
    /// key after `k` turns; only prefixes shorter than the request count, since the request
    /// must bring a new message), restoring it from its file if it was saved. `None`: no
    /// conversation matches; `fresh` then makes a session, once room is made for it.
    pub fn take(
        &self,
        keys: &[Key],
        fresh: impl FnOnce() -> Result<Session, SessionError>,
    ) -> Result<Lease, SessionError> {
        let found = {
            let mut g = self.lock();
            let hit = (1..keys.len())
                .rev()
                .find_map(|k| g.held.remove(&keys[k]).map(|e| (k, e)));
            g.out += 1;
            if let Some((
                _,
                Entry {
                    place: Place::Ram(_),
                    ..
                },
            )) = &hit
            {
                g.in_ram -= 1;
            }
            let evicted = self.evict(&mut g);
            drop(g);
            evicted?;
            hit
        };
        let made = match found {
            Some((
                k,
                Entry {
                    place: Place::Ram(s),
                    ..
                },
            )) => Ok(Lease {
                session: *s,
                turns_seen: k,
            }),
            Some((
                k,
                Entry {
                    place: Place::Disk(path),
                    ..
                },
            )) => {
                let r = Session::restore_with(
                    self.model.clone(),
                    &path,
                    self.draft.clone(),
                    Some(&self.board),
                );
                let _ = std::fs::remove_file(&path);
                self.counters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .1 += 1;
                r.map(|session| Lease {
                    session,
                    turns_seen: k,
                })
            }
            None => fresh().map(|session| Lease {
                session,
                turns_seen: 0,
            }),
        };
        if made.is_err() {
            self.lock().out -= 1;
        }
        made
    }

    /// Files a session under the key of every message it has now seen.
    pub fn put_back(&self, key: Key, session: Session) -> Result<(), SessionError> {
        let mut g = self.lock();
        g.out -= 1;
        g.clock += 1;
        let last_used = g.clock;
        if let Some(old) = g.held.insert(
            key,
            Entry {
                place: Place::Ram(Box::new(session)),
                last_used,
            },
        ) {
            // The same conversation twice (two identical requests at once): keep the newer.
            match old.place {
                Place::Ram(_) => g.in_ram -= 1,
                Place::Disk(p) => {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        g.in_ram += 1;
        self.evict(&mut g)
    }

    /// Forgets a session taken out (a failed or cancelled reply: its cache holds text the
    /// client never saw).
    pub fn discard(&self, _session: Session) {
        self.lock().out -= 1;
    }

    /// Saves least recently used sessions to files until the memory bound holds.
    fn evict(&self, g: &mut Inner) -> Result<(), SessionError> {
        while g.in_ram > 0 && g.in_ram + g.out > self.max_in_ram {
            let (key, _) = g
                .held
                .iter()
                .filter(|(_, e)| matches!(e.place, Place::Ram(_)))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, e)| (*k, e.last_used))
                .expect("in_ram counts held sessions");
            let entry = g.held.get_mut(&key).expect("just found");
            g.next_file += 1;
            let path = self.dir.join(format!("conversation-{}.tern", g.next_file));
            let Place::Ram(session) =
                std::mem::replace(&mut entry.place, Place::Disk(path.clone()))
            else {
                unreachable!("filtered on Ram")
            };
            g.in_ram -= 1;
            if let Err(e) = session.save(&path) {
                g.held.remove(&key);
                return Err(e);
            }
            self.counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0 += 1;
        }
        Ok(())
    }

    pub fn stats(&self) -> StoreStats {
        let g = self.lock();
        let (saved, restored) = *self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        StoreStats {
            conversations: g.held.len(),
            in_ram: g.in_ram,
            generating: g.out,
            saved,
            restored,
        }
    }
}
