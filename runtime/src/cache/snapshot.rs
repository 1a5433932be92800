//! The cache as bytes, for session files: the tokens seen, each ring's counters, then the
//! keys and values of every layer as stored.

use super::ring::{Counters, Ring};
use super::KvCache;

impl KvCache {
    /// The cache's contents and counters as bytes, for session files.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.k.len() + self.v.len() + 80);
        let mut words = vec![self.seen, self.local.is_some() as u64];
        for r in self.rings() {
            words.extend([r.c.sinks_filled as u64, r.c.next_epoch, r.c.first_epoch]);
        }
        words.push(self.k.len() as u64);
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.k);
        out.extend_from_slice(&self.v);
        out
    }

    /// Restores contents saved by [`KvCache::snapshot`] from a cache of the same shape and
    /// configuration; anything inconsistent is an error and leaves the cache empty.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.clear();
        let mut at = 0;
        let mut word = || -> Result<u64, String> {
            let w = bytes
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| "cache data truncated".to_string())?;
            at += 8;
            Ok(w)
        };
        let seen = word()?;
        if word()? != self.local.is_some() as u64 {
            return Err("cache data of another layout".into());
        }
        let mut counters = |ring: &Ring| -> Result<Counters, String> {
            let c = Counters {
                sinks_filled: usize::try_from(word()?)
                    .map_err(|_| "cache counters out of range")?,
                next_epoch: word()?,
                first_epoch: word()?,
            };
            match ring.valid(&c) {
                true => Ok(c),
                false => Err("cache counters out of range".into()),
            }
        };
        let global = counters(&self.global)?;
        let local = match &self.local {
            Some(r) => Some(counters(r)?),
            None => None,
        };
        let klen = word()?;
        let body = &bytes[at.min(bytes.len())..];
        if klen != self.k.len() as u64 || body.len() != 2 * self.k.len() {
            return Err("cache data of another size".into());
        }
        let (k, v) = body.split_at(self.k.len());
        self.k.copy_from_slice(k);
        self.v.copy_from_slice(v);
        self.global.c = global;
        if let (Some(r), Some(c)) = (&mut self.local, local) {
            r.c = c;
        }
        self.seen = seen;
        Ok(())
    }
}
