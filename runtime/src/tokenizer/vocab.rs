//! Compact storage for a vocabulary: every token's text in one byte arena with `u32`
//! offsets, and a text → id index that is an open-addressing table of `u32` ids.
//!
//! A `Vec<String>` plus a `HashMap<String, u32>` (and a `Vec<Vec<u8>>` of pieces) cost about
//! 100 bytes per token in small allocations: 95 MiB more resident memory for Gemma 3's
//! 262 144 tokens than llama.cpp, and a large part of the start-up time. Here a token costs
//! its bytes, 4 bytes of offset and 8 bytes of index.

/// Byte strings stored back to back: string `i` is `bytes[offsets[i]..offsets[i + 1]]`.
#[derive(Default)]
pub(super) struct Arena {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl Arena {
    pub(super) fn with_capacity(n: usize, bytes: usize) -> Arena {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Arena {
            bytes: Vec::with_capacity(bytes),
            offsets,
        }
    }

    /// Appends one string; refused past 4 GiB in all.
    pub(super) fn push(&mut self, s: &[u8]) -> Result<(), VocabError> {
        let end = u32::try_from(self.bytes.len() + s.len()).map_err(|_| VocabError::TooLarge)?;
        self.bytes.extend_from_slice(s);
        self.offsets.push(end);
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.offsets.shrink_to_fit();
    }

    /// String `i` (empty past the end).
    pub(super) fn get(&self, i: u32) -> &[u8] {
        slice(&self.bytes, &self.offsets, i)
    }
}

/// `offsets[i]..offsets[i + 1]`, where string `i` lies, if there is such a string.
fn span(offsets: &[u32], i: u32) -> Option<std::ops::Range<usize>> {
    let i = i as usize;
    let start = *offsets.get(i)? as usize;
    let end = *offsets.get(i.checked_add(1)?)? as usize;
    Some(start..end)
}

/// String `i` of `bytes` as `offsets` cut it, empty where that is out of range.
fn slice<'a>(bytes: &'a [u8], offsets: &[u32], i: u32) -> &'a [u8] {
    span(offsets, i)
        .and_then(|r| bytes.get(r))
        .unwrap_or_default()
}

/// An index from strings stored elsewhere (string `i` is number `i`) to their numbers: open
/// addressing with linear probing, at most half full. A slot holds 32 bits of the string's
/// hash beside its number, so a probe that passes another string compares those bits, not
/// the two texts (which lie at random places: each was a cache miss, most of the start-up
/// time of a 150 000-token vocabulary).
pub(super) struct Index {
    /// `hash << 32 | number` (the hash's low 32 bits), or `EMPTY`.
    slots: Vec<u64>,
    /// `64 - log2(slots.len())`: the hash's top bits pick the first slot.
    shift: u32,
}

const EMPTY: u64 = u64::MAX;

/// Which number an index keeps for two equal strings.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    First,
    Last,
}

impl Index {
    /// The index of strings `0..n`, string `i` being `of(i)`; `keep` says which number stays
    /// for equal strings. `n` must stay below `u32::MAX`.
    ///
    /// The strings are hashed in order, then entered in the order of the slot each starts
    /// at: entered in number order, each went to a random place in a table of megabytes, a
    /// cache miss apiece (most of Qwen2.5's vocabulary's start-up); this way they fill it
    /// one 4 KiB stretch after another.
    pub(super) fn of<'a>(n: u32, of: impl Fn(u32) -> &'a [u8], keep: Keep) -> Index {
        let slots = (n as usize).saturating_mul(2).next_power_of_two().max(8);
        let mut index = Index {
            slots: vec![EMPTY; slots],
            shift: 64 - slots.trailing_zeros(),
        };
        // 512 slots (4 KiB) per bucket; a stable counting sort keeps equal strings, whose
        // hashes are equal, in number order within theirs.
        let bits = slots.trailing_zeros().saturating_sub(9);
        let bucket = |h: u64| h.checked_shr(64 - bits).unwrap_or(0) as usize;
        let hashed: Vec<(u64, u32)> = (0..n).map(|i| (hash(of(i)), i)).collect();
        let mut starts = vec![0usize; (1 << bits) + 1];
        for &(h, _) in &hashed {
            starts[bucket(h) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut sorted = vec![(0u64, 0u32); hashed.len()];
        for &(h, i) in &hashed {
            let at = &mut starts[bucket(h)];
            sorted[*at] = (h, i);
            *at += 1;
        }
        drop(hashed);
        for (h, i) in sorted {
            index.insert(h, i, &of, keep);
        }
        index
    }

    /// Enters number `id` for a string of hash `h`, whose equals among the strings entered
    /// so far `of` gives (`keep` says which stays).
    fn insert<'a>(&mut self, h: u64, id: u32, of: impl Fn(u32) -> &'a [u8], keep: Keep) {
        let entry = (h << 32) | u64::from(id);
        match self.probe(h, |at| of(at) == of(id)) {
            Ok(slot) if keep == Keep::Last => self.slots[slot] = entry,
            Ok(_) => {}
            Err(empty) => self.slots[empty] = entry,
        }
    }

    /// The number entered for `text`, whose strings `of` gives.
    pub(super) fn find<'a>(&self, text: &[u8], of: impl Fn(u32) -> &'a [u8]) -> Option<u32> {
        let slot = self.probe(hash(text), |at| of(at) == text).ok()?;
        Some(self.slots[slot] as u32)
    }

    /// The slot of the string of hash `h` for which `same` holds, or else the empty slot
    /// where it would go.
    fn probe(&self, h: u64, same: impl Fn(u32) -> bool) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut slot = (h >> self.shift) as usize;
        loop {
            let at = self.slots[slot];
            if at == EMPTY {
                return Err(slot);
            }
            if at >> 32 == h & 0xffff_ffff && same(at as u32) {
                return Ok(slot);
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// Token texts with a text → id index. For duplicate texts the last id wins, as in
/// llama.cpp (whose `token_to_id` map is filled in id order).
pub(super) struct Vocab {
    /// Every token's text back to back, checked as UTF-8 once for all of them (a check per
    /// token, 150 000 at each load, was 3 % of Qwen2.5-Coder-0.5B's time to its first token).
    text: String,
    /// Token `i`'s text is `text[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    index: Index,
}

/// Why a vocabulary could not be stored.
#[derive(Debug)]
pub(super) enum VocabError {
    /// More than `u32::MAX - 1` tokens, or more than 4 GiB of token text.
    TooLarge,
    /// A token's text is not UTF-8.
    NotUtf8,
}

impl Vocab {
    /// Indexes `texts` (token `i`'s text is string `i`), which must all be UTF-8.
    pub(super) fn new(mut texts: Arena) -> Result<Vocab, VocabError> {
        let n = texts.len();
        // Ids stay below `u32::MAX - 1`, which the BPE merge loop uses as markers.
        if n >= (u32::MAX - 1) as usize {
            return Err(VocabError::TooLarge);
        }
        texts.shrink_to_fit();
        let Arena { bytes, offsets } = texts;
        // Whole strings back to back are UTF-8 if each is; each is if the whole is and every
        // offset falls on a character boundary (which `text` checks as it slices).
        let text = String::from_utf8(bytes).map_err(|_| VocabError::NotUtf8)?;
        let index = Index::of(
            n as u32,
            |i| slice(text.as_bytes(), &offsets, i),
            Keep::Last,
        );
        Ok(Vocab {
            text,
            offsets,
            index,
        })
    }

    /// Number of tokens.
    pub(super) fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Token `id`'s text as bytes (empty past the end).
    pub(super) fn bytes(&self, id: u32) -> &[u8] {
        slice(self.text.as_bytes(), &self.offsets, id)
    }

    /// Token `id`'s text as stored in the file (empty past the end).
    pub(super) fn text(&self, id: u32) -> &str {
        span(&self.offsets, id)
            .and_then(|r| self.text.get(r))
            .unwrap_or_default()
    }

    /// The id of the token whose text is `text`.
    pub(super) fn id(&self, text: &str) -> Option<u32> {
        self.id_of_bytes(text.as_bytes())
    }

    /// The id of the token whose text is `text`'s bytes.
    pub(super) fn id_of_bytes(&self, text: &[u8]) -> Option<u32> {
        self.index.find(text, |i| self.bytes(i))
    }
}

/// A fast, non-cryptographic hash of a short byte string (token texts average a few bytes):
/// eight bytes at a time, each folded in with a rotate, xor and multiply (as rustc's
/// FxHash), then mixed so the top bits depend on all of them.
pub(super) fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    }
    // Fold the well-mixed high bits back down, then spread again: the index uses the top bits.
    (h ^ (h >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_is_found_and_the_last_duplicate_wins() {
        let texts: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
        let mut all: Vec<&str> = texts.iter().map(String::as_str).collect();
        all.extend(["", "dup", "x", "dup"]);
        let mut arena = Arena::with_capacity(all.len(), 0);
        for t in &all {
            arena.push(t.as_bytes()).unwrap();
        }
        let v = Vocab::new(arena).unwrap();
        assert_eq!(v.len(), all.len());
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(v.id(t), Some(i as u32));
            assert_eq!(v.text(i as u32), t);
        }
        assert_eq!(v.id("dup"), Some(all.len() as u32 - 1));
        assert_eq!(v.id(""), Some(5000));
        assert_eq!(v.id("t5000"), None);
        assert_eq!(v.id("nope, a longer text than eight bytes"), None);
        assert_eq!(v.text(all.len() as u32), "");
    }

    #[test]
    fn an_index_keeps_the_first_or_the_last_of_equal_strings() {
        // Enough strings for many buckets, and for probes to run past each other.
        let texts: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("s{}", i % 10_000).into_bytes())
            .collect();
        let of = |i: u32| texts[i as usize].as_slice();
        for keep in [Keep::First, Keep::Last] {
            // The second half repeats the first.
            let index = Index::of(texts.len() as u32, of, keep);
            for i in 0..10_000u32 {
                let want = if keep == Keep::First { i } else { i + 10_000 };
                assert_eq!(index.find(of(i), of), Some(want));
            }
            assert_eq!(index.find(b"s10000", of), None);
            assert_eq!(index.find(b"", of), None);
        }
        // Fewer strings than one bucket holds; none at all.
        let small = Index::of(3, of, Keep::First);
        assert_eq!(small.find(b"s2", of), Some(2));
        assert_eq!(small.find(b"s3", of), None);
        assert_eq!(Index::of(0, of, Keep::First).find(b"s0", of), None);
    }

    #[test]
    fn texts_that_are_not_utf8_are_refused() {
        let mut arena = Arena::with_capacity(1, 0);
        arena.push(&[0xff]).unwrap();
        assert!(matches!(Vocab::new(arena), Err(VocabError::NotUtf8)));
    }
}
