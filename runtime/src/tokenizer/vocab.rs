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
}

/// Token texts with a text → id index. For duplicate texts the last id wins, as in
/// llama.cpp (whose `token_to_id` map is filled in id order).
pub(super) struct Vocab {
    /// Every token's text back to back, checked as UTF-8 once for all of them (a check per
    /// token, 150 000 at each load, was 3 % of Qwen2.5-Coder-0.5B's time to its first token).
    text: String,
    /// Token `i`'s text is `text[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    /// Open addressing, linear probing: `EMPTY` or an id whose text hashes here or earlier.
    index: Vec<u32>,
    /// `64 - log2(index.len())`: the hash's top bits pick the slot.
    shift: u32,
    /// Whether two tokens have the same text (then only the last is found by text).
    duplicates: bool,
}

const EMPTY: u32 = u32::MAX;

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
        // Load factor at most one half keeps probe runs short.
        let slots = (2 * n).next_power_of_two().max(8);
        let mut v = Vocab {
            text,
            offsets,
            index: vec![EMPTY; slots],
            shift: 64 - slots.trailing_zeros(),
            duplicates: false,
        };
        for id in 0..n as u32 {
            v.insert(id);
        }
        Ok(v)
    }

    fn insert(&mut self, id: u32) {
        let text = self.bytes(id);
        let mask = self.index.len() - 1;
        let mut slot = self.slot(text);
        loop {
            let at = self.index[slot];
            if at == EMPTY || self.bytes(at) == text {
                self.duplicates |= at != EMPTY;
                self.index[slot] = id;
                return;
            }
            slot = (slot + 1) & mask;
        }
    }

    fn slot(&self, text: &[u8]) -> usize {
        (hash(text) >> self.shift) as usize
    }

    /// Number of tokens.
    pub(super) fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Where token `id`'s text lies in `text`, if there is such a token.
    fn span(&self, id: u32) -> Option<std::ops::Range<usize>> {
        let i = id as usize;
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i.checked_add(1)?)? as usize;
        Some(start..end)
    }

    fn bytes(&self, id: u32) -> &[u8] {
        self.span(id)
            .and_then(|r| self.text.as_bytes().get(r))
            .unwrap_or_default()
    }

    /// Token `id`'s text as stored in the file (empty past the end).
    pub(super) fn text(&self, id: u32) -> &str {
        self.span(id)
            .and_then(|r| self.text.get(r))
            .unwrap_or_default()
    }

    /// The id of the token whose text is `text`.
    pub(super) fn id(&self, text: &str) -> Option<u32> {
        self.id_of_bytes(text.as_bytes())
    }

    /// [`Vocab::id_of_bytes`] where `guess` is likely the answer: a comparison with one
    /// token's text in place of a probe of the index at a random place. A byte-level BPE
    /// vocabulary was built by its merges in order, so the result of one merge is usually
    /// the token after that of the merge before (for Qwen2.5 151 387 merges, most of its
    /// tokenizer's build).
    pub(super) fn id_of_bytes_near(&self, text: &[u8], guess: u32) -> Option<u32> {
        let at_guess = self.span(guess).and_then(|r| self.text.as_bytes().get(r));
        if !self.duplicates && at_guess == Some(text) {
            return Some(guess);
        }
        self.id_of_bytes(text)
    }

    /// The id of the token whose text is `text`'s bytes.
    pub(super) fn id_of_bytes(&self, text: &[u8]) -> Option<u32> {
        let mask = self.index.len() - 1;
        let mut slot = self.slot(text);
        loop {
            let at = self.index[slot];
            if at == EMPTY {
                return None;
            }
            if self.bytes(at) == text {
                return Some(at);
            }
            slot = (slot + 1) & mask;
        }
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

    fn vocab(texts: &[&str]) -> Vocab {
        let mut arena = Arena::with_capacity(texts.len(), 0);
        for t in texts {
            arena.push(t.as_bytes()).unwrap();
        }
        Vocab::new(arena).unwrap()
    }

    #[test]
    fn a_guess_is_only_taken_when_it_is_the_answer() {
        let v = vocab(&["a", "b", "ab", "abb", "é"]);
        assert_eq!(v.id_of_bytes_near(b"ab", 2), Some(2)); // right guess
        assert_eq!(v.id_of_bytes_near(b"ab", 3), Some(2)); // wrong guess
        assert_eq!(v.id_of_bytes_near(b"ab", 99), Some(2)); // past the end
        assert_eq!(v.id_of_bytes_near(b"", 99), None); // past the end reads as empty
        assert_eq!(v.id_of_bytes_near(b"ba", 2), None);
        assert_eq!(v.text(4), "é");
        // With two tokens "ab", a text names the last one, even when the guess is the first.
        let d = vocab(&["a", "ab", "b", "ab"]);
        assert_eq!(d.id_of_bytes_near(b"ab", 1), Some(3));
        assert_eq!(d.id_of_bytes(b"ab"), Some(3));
    }

    #[test]
    fn texts_that_are_not_utf8_are_refused() {
        let mut arena = Arena::with_capacity(1, 0);
        arena.push(&[0xff]).unwrap();
        assert!(matches!(Vocab::new(arena), Err(VocabError::NotUtf8)));
    }
}
