//! SentencePiece-style tokenization (`tokenizer.ggml.model = "llama"`) as llama.cpp's
//! `llm_tokenizer_spm` does it.
//!
//! Spaces become `▁` (and one is prepended where the vocabulary asks for it). The text
//! starts as one symbol per character; repeatedly, of all adjacent pairs whose concatenation
//! is a token, the one whose token has the highest score is merged (leftmost on ties). What
//! is left is emitted as tokens, and a character that is not a token as its UTF-8 bytes
//! through the `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use super::{attr, TokenizerError};

/// Per-vocabulary data of the SentencePiece encoder.
pub(super) struct Spm {
    scores: Vec<f32>,
    /// The token for each byte in byte fallback: `<0xXX>`, else the byte itself as text.
    byte_tokens: Vec<Option<u32>>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right` (adjacent when queued).
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text when queued; a mismatch later means it is stale.
    size: usize,
}

impl Ord for Bigram {
    /// Higher score first; on equal scores the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl Spm {
    pub(super) fn new(scores: Vec<f32>, vocab: &Vocab) -> Spm {
        debug_assert_eq!(vocab.len(), scores.len());
        let mut byte_tokens = vec![None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = vocab
                .id(&format!("<0x{b:02X}>"))
                .or_else(|| vocab.id_of_bytes(&[b as u8]));
        }
        Spm {
            scores,
            byte_tokens,
        }
    }

    /// Appends the ids of `text` (no special tokens inside) to `out`; `space_prefix`
    /// prepends the space SentencePiece adds at the start of a text.
    pub(super) fn encode(
        &self,
        text: &str,
        space_prefix: bool,
        vocab: &Vocab,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut s = String::with_capacity(text.len() + 4);
        if space_prefix {
            s.push(' ');
        }
        s.push_str(text);
        let s = s.replace(' ', "\u{2581}");
        if s.is_empty() {
            return Ok(());
        }

        let mut symbols: Vec<Symbol> = Vec::with_capacity(s.len());
        for (i, (start, c)) in s.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }

        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], l: usize, r: usize| {
            let size = symbols[l].len + symbols[r].len;
            let start = symbols[l].start;
            if let Some(id) = vocab.id(&s[start..start + size]) {
                queue.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    size,
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut queue, &symbols, i - 1, i);
        }

        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            if let Some(p) = l.prev {
                try_add(&mut queue, &symbols, p, bg.left);
            }
            if let Some(n) = r.next {
                try_add(&mut queue, &symbols, bg.left, n);
            }
        }

        // Every symbol left is a token, or a single character that is not one.
        let mut at = Some(0);
        while let Some(i) = at {
            let sym = symbols[i];
            let piece = &s[sym.start..sym.start + sym.len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        out.push(
                            self.byte_tokens[usize::from(b)]
                                .ok_or(TokenizerError::MissingByteToken(b))?,
                        );
                    }
                }
            }
            at = sym.next;
        }
        Ok(())
    }
}

/// A token's piece as llama.cpp's `token_to_piece` (special tokens rendered) gives it for a
/// SentencePiece vocabulary: special and user-defined tokens verbatim, normal tokens with
/// `▁` turned back into spaces, byte tokens as their byte, unused tokens empty. Appended
/// to `out`.
pub(super) fn piece(text: &str, a: u32, out: &mut Vec<u8>) {
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        out.extend_from_slice(text.as_bytes());
    } else if a & attr::NORMAL != 0 {
        for (i, part) in text.split('\u{2581}').enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(part.as_bytes());
        }
    } else if a & attr::BYTE != 0 {
        // llama.cpp reads the two hex digits of `<0xXX>`.
        if let Some(b) = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            out.push(b);
        }
    }
}
